"""``python -m schemesim``: run the scheme simulator (settings from ``OBM_*``).

As ``meshlib.app.run_service`` does for the services: logs, tracing, start (migrations
included), serve until SIGTERM, drain, exit 0. Its default port is 50060.
"""

from meshlib.app import start_service
from meshlib.logs import configure_logging
from meshlib.server import run_process
from meshlib.telemetry import configure_tracing
from schemesim.bootstrap import NAME, SPEC
from schemesim.settings import DEFAULT_PORT, SchemeSettings


async def main() -> None:
    """Start the simulator and serve until stopped."""
    settings = SchemeSettings()
    if not settings.port:
        settings = settings.model_copy(update={"port": DEFAULT_PORT})
    if settings.service_name == "openbank":
        settings = settings.model_copy(update={"service_name": NAME})
    configure_logging(NAME, settings.log_level, settings.log_format)
    configure_tracing(NAME, settings.otlp_endpoint)
    server = await start_service(SPEC, settings)
    await server.serve_until_stopped()


if __name__ == "__main__":
    run_process(main)
