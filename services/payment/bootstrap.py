"""Payment's wiring: the one place that builds its adapters and service layer."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from meshlib.app import Runtime, ServiceSpec, Wiring
from meshlib.server import ServiceRegistration
from openbank.payment.v1 import payment_admin_pb2_grpc, payment_pb2_grpc
from services.payment.payments_service import PaymentQueries
from services.payment.servicer import PaymentAdminServicer, PaymentServicer
from services.payment.settings import PaymentSettings
from services.payment.unit_of_work import PaymentUnitOfWork

VERSIONS_DIR = Path(__file__).parent / "migrations" / "versions"


async def wire(runtime: Runtime) -> Wiring:
    """Build payment's layers on the runtime's database."""
    queries = PaymentQueries(partial(PaymentUnitOfWork, runtime.database))
    return Wiring(
        registrations=[
            ServiceRegistration(
                "openbank.payment.v1.PaymentService",
                PaymentServicer(queries),
                payment_pb2_grpc.add_PaymentServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.payment.v1.PaymentAdminService",
                PaymentAdminServicer(queries),
                payment_admin_pb2_grpc.add_PaymentAdminServiceServicer_to_server,
            ),
        ]
    )


SPEC = ServiceSpec(name="payment", versions_dir=VERSIONS_DIR, settings_class=PaymentSettings, wire=wire)
