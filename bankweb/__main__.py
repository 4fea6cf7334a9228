"""``python -m bankweb``: the bank's web app as its own process; stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import signal

from bankweb.app import start_bankweb
from bankweb.settings import BankWebSettings
from meshlib.logs import configure_logging


async def main() -> None:
    """Serve until SIGTERM / SIGINT."""
    settings = BankWebSettings()
    configure_logging("bankweb", settings.log_level, settings.log_format)
    running = await start_bankweb(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop()


if __name__ == "__main__":
    asyncio.run(main())
