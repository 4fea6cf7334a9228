"""Customers and strong customer authentication (password + TOTP) with lock-out."""

from __future__ import annotations

import datetime as dt
import enum
import re
import uuid
from dataclasses import dataclass, replace

from meshlib.errors import FailedPrecondition, FieldCollector, PermissionDenied

LOCKOUT_THRESHOLD = 5
MIN_PASSWORD_LENGTH = 12
_USERNAME = re.compile(r"^[a-z0-9._-]{3,64}$")


class CustomerStatus(enum.Enum):
    """Whether the customer can authenticate."""

    ACTIVE = "ACTIVE"
    LOCKED = "LOCKED"


@dataclass(frozen=True)
class Customer:
    """A bank customer; credentials are a password hash and an encrypted TOTP seed."""

    customer_id: str
    username: str
    display_name: str
    status: CustomerStatus
    password_hash: str
    sealed_totp_seed: bytes
    failed_attempts: int
    last_totp_step: int | None
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def new(
        cls,
        customer_id: str,
        username: str,
        display_name: str,
        password_hash: str,
        sealed_totp_seed: bytes,
        now: dt.datetime,
    ) -> Customer:
        """A new ACTIVE customer with no failed attempts."""
        return cls(
            customer_id=customer_id,
            username=username,
            display_name=display_name.strip(),
            status=CustomerStatus.ACTIVE,
            password_hash=password_hash,
            sealed_totp_seed=sealed_totp_seed,
            failed_attempts=0,
            last_totp_step=None,
            created_at=now,
            updated_at=now,
        )

    def require_unlocked(self) -> None:
        """PERMISSION_DENIED CUSTOMER_LOCKED while locked (even with the right credentials)."""
        if self.status is CustomerStatus.LOCKED:
            raise PermissionDenied(
                "the customer is locked after too many failed authentications", reason="CUSTOMER_LOCKED"
            )

    def failed(self, now: dt.datetime) -> Customer:
        """One more failed attempt; the fifth in a row locks the customer."""
        attempts = self.failed_attempts + 1
        status = CustomerStatus.LOCKED if attempts >= LOCKOUT_THRESHOLD else self.status
        return replace(self, failed_attempts=attempts, status=status, updated_at=now)

    def succeeded(self, totp_step: int, now: dt.datetime) -> Customer:
        """A successful SCA: reset the counter and burn the code's time step."""
        return replace(self, failed_attempts=0, last_totp_step=totp_step, updated_at=now)

    def unlock(self, now: dt.datetime) -> Customer:
        """Operator unlock: ACTIVE again, counter reset."""
        if self.status is not CustomerStatus.LOCKED:
            raise FailedPrecondition(
                "the customer is not locked", reason="INVALID_STATE_TRANSITION", metadata={"state": self.status.value}
            )
        return replace(self, status=CustomerStatus.ACTIVE, failed_attempts=0, updated_at=now)


def sca_failed() -> PermissionDenied:
    """The one answer for any wrong username, password or code (which one is never said)."""
    return PermissionDenied(
        "strong customer authentication failed: check username, password and one-time code", reason="SCA_FAILED"
    )


def new_customer_id() -> str:
    """A fresh customer id."""
    return uuid.uuid4().hex


def check_new_customer(username: str, password: str, display_name: str) -> None:
    """Validate a creation request (raises InvalidArgument naming every bad field)."""
    errors = FieldCollector()
    errors.check(bool(_USERNAME.match(username)), "username", "must be 3..64 characters of a-z 0-9 . _ -")
    errors.check(len(password) >= MIN_PASSWORD_LENGTH, "password", f"must be at least {MIN_PASSWORD_LENGTH} characters")
    errors.check(0 < len(display_name.strip()) <= 200, "display_name", "must be 1..200 characters")
    errors.raise_if_any()


def check_credentials_shape(username: str, password: str, one_time_code: str) -> None:
    """All three SCA inputs are present (their correctness is checked against the store)."""
    errors = FieldCollector()
    errors.check(bool(username), "username", "required")
    errors.check(bool(password), "password", "required")
    errors.check(bool(one_time_code), "one_time_code", "required: the current 6-digit code")
    errors.raise_if_any()
