"""``python -m services.payment``: run the payment service."""

from meshlib.app import run_service
from services.payment.bootstrap import SPEC

if __name__ == "__main__":
    run_service(SPEC)
