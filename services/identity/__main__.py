"""``python -m services.identity``: run the identity service."""

from meshlib.app import run_service
from services.identity.bootstrap import SPEC

if __name__ == "__main__":
    run_service(SPEC)
