"""``python -m services.account``: run the account service."""

from meshlib.app import run_service
from services.account.bootstrap import SPEC

if __name__ == "__main__":
    run_service(SPEC)
