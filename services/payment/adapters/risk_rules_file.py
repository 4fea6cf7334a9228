"""The risk rules file, reloaded without a restart.

The file is read again on SIGHUP and when its modification time or size changes (checked
every few seconds); the new rules replace the old in one assignment, so a payment is decided
by one version or the other, never a mix. A file that does not parse or check keeps the
rules in force and says why in the log (and in ``last_error``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshlib.periodic import Periodic
from services.payment.domain.risk import RiskRules, load_risk_rules

log = logging.getLogger("services.payment.risk_rules")


class ReloadableRiskRules:
    """The rules in force (call it), read from ``path`` by ``loader`` (the risk rules by default;
    the isolation policy is read the same way)."""

    def __init__(
        self,
        path: Path,
        check_every_seconds: float = 2.0,
        loader: Callable[[Path], Any] = load_risk_rules,
        *,
        on_sighup: bool = True,
    ) -> None:
        self._path = path
        self._loader = loader
        self._on_sighup = on_sighup  # one SIGHUP handler per process: the risk rules' own
        self._rules = loader(path)  # a bad file at start-up fails the start
        self._stamp = self._stat()
        self.last_error = ""
        self._periodic = Periodic("risk-rules-watch", check_every_seconds, self._check)

    def __call__(self) -> RiskRules:
        return self._rules

    def _stat(self) -> tuple[int, int]:
        try:
            stat = self._path.stat()
        except OSError:
            return (0, 0)
        return (stat.st_mtime_ns, stat.st_size)

    def reload(self) -> bool:
        """Read the file again; False (the old rules kept) when it is bad."""
        self._stamp = self._stat()
        try:
            rules = self._loader(self._path)
        except (OSError, ValueError, TypeError) as error:
            self.last_error = f"{type(error).__name__}: {error}"
            log.error(
                "risk rules file rejected, the rules in force are kept",
                extra={"path": str(self._path), "error": self.last_error, "version": self._rules.version},
            )
            return False
        except Exception as error:  # a YAML error
            self.last_error = f"{type(error).__name__}: {error}"
            log.error("risk rules file rejected, the rules in force are kept", extra={"error": self.last_error})
            return False
        previous, self._rules, self.last_error = self._rules.version, rules, ""
        log.info("risk rules reloaded", extra={"from_version": previous, "version": rules.version})
        return True

    async def _check(self) -> None:
        if self._stat() != self._stamp:
            self.reload()

    async def start(self) -> None:
        """Watch the file, and reload on SIGHUP (where the platform has it)."""
        if self._on_sighup:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)
        await self._periodic.start()

    async def stop(self) -> None:
        """Stop watching."""
        if self._on_sighup:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await self._periodic.stop()
