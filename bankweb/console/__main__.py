"""``python -m bankweb.console``: the operator console as its own process; stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio

from bankweb.console.app import start_console
from bankweb.console.settings import ConsoleSettings
from bankweb.serving import run_until_signalled
from meshlib.logs import configure_logging


async def main() -> None:
    """Serve until SIGTERM / SIGINT."""
    settings = ConsoleSettings()
    configure_logging("console", settings.log_level, settings.log_format)
    await run_until_signalled(lambda: start_console(settings))


if __name__ == "__main__":
    asyncio.run(main())
