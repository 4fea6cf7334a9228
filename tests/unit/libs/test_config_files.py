"""Secrets as files: any setting's variable may be given as ``<VARIABLE>_FILE`` naming a file
(a mounted Secret), read once when the settings are built."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bankweb.settings import BankWebSettings
from meshlib.app import ServiceSettings


def secret(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_database_url_and_client_secret_come_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBM_DATABASE_URL_FILE", secret(tmp_path, "db", "postgresql+asyncpg://u:p@db/identity\n"))
    monkeypatch.setenv("OBM_SERVICE_CLIENT_SECRET_FILE", secret(tmp_path, "client", "s3cret"))
    monkeypatch.setenv("REDIS_URL_FILE", secret(tmp_path, "redis", "rediss://:pw@redis:6380/0\n"))
    settings = ServiceSettings()
    assert settings.database_url == "postgresql+asyncpg://u:p@db/identity"  # the newline dropped
    assert settings.service_client_secret == "s3cret"
    assert settings.redis_url == "rediss://:pw@redis:6380/0"
    # Read once: a rotated file is seen by the next process, not by these settings.
    Path(tmp_path / "client").write_text("rotated")
    assert settings.service_client_secret == "s3cret"
    assert ServiceSettings().service_client_secret == "rotated"


def test_numbers_and_the_bank_web_app_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBM_DB_POOL_SIZE_FILE", secret(tmp_path, "pool", "7\n"))
    assert ServiceSettings().db_pool_size == 7
    monkeypatch.setenv("OBM_SERVICE_CLIENT_SECRET_FILE", secret(tmp_path, "bankweb", "web-secret\n"))
    settings = BankWebSettings()
    assert settings.service_client_secret is not None
    assert settings.service_client_secret.get_secret_value() == "web-secret"


def test_a_variable_and_its_file_together_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBM_SERVICE_CLIENT_SECRET", "inline")
    monkeypatch.setenv("OBM_SERVICE_CLIENT_SECRET_FILE", secret(tmp_path, "client", "file"))
    with pytest.raises(ValueError, match="OBM_SERVICE_CLIENT_SECRET and OBM_SERVICE_CLIENT_SECRET_FILE"):
        ServiceSettings()


def test_a_missing_file_fails_naming_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBM_DATABASE_URL_FILE", str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="OBM_DATABASE_URL_FILE: cannot read"):
        ServiceSettings()


def test_a_bad_value_in_a_file_is_a_validation_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBM_DB_POOL_SIZE_FILE", secret(tmp_path, "pool", "many"))
    with pytest.raises(ValidationError):
        ServiceSettings()


def test_a_setting_with_a_file_setting_of_its_own_keeps_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from services.identity.settings import IdentitySettings

    clients = secret(tmp_path, "clients.yaml", "clients:\n  - {client_id: gateway, secret: x, scopes: []}\n")
    monkeypatch.setenv("OBM_INTERNAL_CLIENTS_FILE", clients)
    monkeypatch.setenv("OBM_SIGNING_KEY_PASSPHRASE_FILE", secret(tmp_path, "passphrase", "a-long-enough-passphrase\n"))
    settings = IdentitySettings()
    assert settings.internal_clients_file == Path(clients) and settings.internal_clients is None
    assert settings.passphrase() == b"a-long-enough-passphrase"
