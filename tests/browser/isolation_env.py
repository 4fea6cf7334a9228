"""The browser world's payment service on a fast dynamic-isolation policy that pauses only bill
payments, which no other browser test makes (test_isolation.py)."""

from pathlib import Path

ISOLATION_ENV = {
    "OBM_ISOLATION_POLICY_FILE": str(Path(__file__).parent / "isolation_policy_fast.yaml"),
    "OBM_ISOLATION_INTERVAL_SECONDS": "0.5",
    "OBM_ISOLATION_SWEEP_SECONDS": "0.5",
}
