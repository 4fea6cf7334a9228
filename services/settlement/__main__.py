"""``python -m services.settlement``: run the settlement service."""

from meshlib.app import run_service
from services.settlement.bootstrap import SPEC

if __name__ == "__main__":
    run_service(SPEC)
