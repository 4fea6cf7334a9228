"""``python -m bankweb``: the bank's web app as its own process; stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio

from bankweb.app import start_bankweb
from bankweb.serving import run_until_signalled
from bankweb.settings import BankWebSettings
from meshlib.logs import configure_logging


async def main() -> None:
    """Serve until SIGTERM / SIGINT."""
    settings = BankWebSettings()
    configure_logging("bankweb", settings.log_level, settings.log_format)
    await run_until_signalled(lambda: start_bankweb(settings))


if __name__ == "__main__":
    asyncio.run(main())
