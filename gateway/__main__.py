"""``python -m gateway``: run the partner-facing gateway."""

from __future__ import annotations

from gateway.server import start_gateway
from gateway.settings import GatewaySettings
from meshlib.app import DEFAULT_PORTS
from meshlib.logs import configure_logging
from meshlib.server import run_process
from meshlib.telemetry import configure_tracing


def main() -> None:
    """Start the gateway and serve until SIGTERM."""

    async def serve() -> None:
        settings = GatewaySettings()
        if not settings.port:
            settings = settings.model_copy(update={"port": DEFAULT_PORTS["gateway"]})
        if settings.service_name == "openbank":
            settings = settings.model_copy(update={"service_name": "gateway"})
        configure_logging("gateway", settings.log_level, settings.log_format)
        configure_tracing("gateway", settings.otlp_endpoint)
        server = await start_gateway(settings)
        await server.serve_until_stopped()

    run_process(serve)


if __name__ == "__main__":
    main()
