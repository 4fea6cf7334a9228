"""``python -m bankweb.console``: the operator console as its own process; stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import signal

from bankweb.console.app import start_console
from bankweb.console.settings import ConsoleSettings
from meshlib.logs import configure_logging


async def main() -> None:
    """Serve until SIGTERM / SIGINT."""
    settings = ConsoleSettings()
    configure_logging("console", settings.log_level, settings.log_format)
    running = await start_console(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop()


if __name__ == "__main__":
    asyncio.run(main())
