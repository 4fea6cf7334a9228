"""Channels to the mesh's gateway: insecure for a local mesh, TLS, or mutual TLS.

channel = insecure_channel("127.0.0.1:8443")                     # local `make up`
channel = secure_channel("api.bank.example:443", ca_file="ca.pem")  # TLS
channel = secure_channel("api.bank.example:443", ca_file="ca.pem",
                         client_cert_file="wallet.crt", client_key_file="wallet.key")  # mTLS
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

# Keepalive keeps long WatchPayments streams healthy through idle NATs and load balancers.
DEFAULT_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
)


def _read(path: str | Path | None) -> bytes | None:
    return Path(path).read_bytes() if path is not None else None


def insecure_channel(target: str, options: Sequence[tuple[str, Any]] = DEFAULT_OPTIONS) -> grpc.aio.Channel:
    """A plaintext channel: only for a local mesh on the loopback interface."""
    return grpc.aio.insecure_channel(target, options=list(options))


def tls_credentials(
    *,
    ca_file: str | Path | None = None,
    client_cert_file: str | Path | None = None,
    client_key_file: str | Path | None = None,
) -> grpc.ChannelCredentials:
    """TLS credentials: the CA that signed the gateway's certificate (None: system roots)
    and, for mutual TLS, the partner's client certificate chain and private key (PEM)."""
    if (client_cert_file is None) != (client_key_file is None):
        raise ValueError("mutual TLS needs both client_cert_file and client_key_file")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file),
        private_key=_read(client_key_file),
        certificate_chain=_read(client_cert_file),
    )


def secure_channel(
    target: str,
    *,
    ca_file: str | Path | None = None,
    client_cert_file: str | Path | None = None,
    client_key_file: str | Path | None = None,
    server_name_override: str | None = None,
    options: Sequence[tuple[str, Any]] = DEFAULT_OPTIONS,
) -> grpc.aio.Channel:
    """A TLS channel (mTLS when a client certificate and key are given).

    ``server_name_override`` checks the gateway's certificate against another host name, for
    test set-ups that reach the gateway by IP address.
    """
    extra = list(options)
    if server_name_override:
        extra.append(("grpc.ssl_target_name_override", server_name_override))
    credentials = tls_credentials(ca_file=ca_file, client_cert_file=client_cert_file, client_key_file=client_key_file)
    return grpc.aio.secure_channel(target, credentials, options=extra)


def open_channel(
    target: str,
    *,
    insecure: bool = False,
    ca_file: str | Path | None = None,
    client_cert_file: str | Path | None = None,
    client_key_file: str | Path | None = None,
) -> grpc.aio.Channel:
    """Insecure when asked, TLS otherwise (mTLS with a client certificate)."""
    if insecure:
        return insecure_channel(target)
    return secure_channel(target, ca_file=ca_file, client_cert_file=client_cert_file, client_key_file=client_key_file)
