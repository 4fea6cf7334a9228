"""No known step-up secret outside the local mesh: the customers' device keys derive from it, so
with the one that ships in this repository anyone could compute their one-time codes. Payment
refuses to start with it, or with a short one, unless it is told it runs a development mesh
(OBM_ALLOW_DEV_SECRETS, which meshcli's local mesh and the dev overlay set); a mounted secret
of a real length starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshcli.mesh import mesh_environment
from meshlib.app import InsecureSettings, start_service
from services.payment.bootstrap import payment_spec
from services.payment.settings import PaymentSettings

MOUNTED = "a-step-up-secret-from-the-vault-0123456789abcdef"


def _settings(tmp_path: Path, **values: Any) -> PaymentSettings:
    base = {"port": 0, "database_url": f"sqlite+aiosqlite:///{tmp_path / 'payment.db'}", "recovery_interval_seconds": 0}
    return PaymentSettings(**(base | values))


async def _refused(settings: PaymentSettings) -> str:
    with pytest.raises(InsecureSettings) as raised:
        server = await start_service(payment_spec(), settings)
        await server.stop(0)
    return str(raised.value)


async def test_the_local_step_up_secret_and_a_short_one_are_refused(tmp_path: Path) -> None:
    assert "local mesh's step-up secret" in await _refused(_settings(tmp_path))
    assert "at least 32 bytes" in await _refused(_settings(tmp_path, step_up_secret="short-secret"))


async def test_a_mounted_secret_starts_and_the_local_mesh_may_use_its_own(tmp_path: Path) -> None:
    mounted = tmp_path / "step-up"
    mounted.write_text(MOUNTED + "\n")
    environment = {"OBM_STEP_UP_SECRET_FILE": str(mounted)}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        settings = _settings(tmp_path)
    assert settings.step_up_secret == MOUNTED
    server = await start_service(payment_spec(), settings)
    await server.stop(0)
    local = mesh_environment(tmp_path, "127.0.0.1", {n: 1 for n in ("identity", "account", "payment", "settlement")})
    assert local["OBM_ALLOW_DEV_SECRETS"] == "true"
    server = await start_service(payment_spec(), _settings(tmp_path, allow_dev_secrets=True))
    await server.stop(0)
