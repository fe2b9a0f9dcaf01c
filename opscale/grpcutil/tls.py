"""TLS and mTLS for every opscale gRPC server and client, from three files.

- A server with ``cert_file`` and ``key_file`` serves TLS; with ``ca_file`` too it requires a client
  certificate signed by that CA (mTLS), whose subject is then the caller's identity
  (``opscale.grpcutil.auth``).
- A client uses TLS when it has a CA to verify the server against or a certificate of its own to
  present; without ``ca_file`` it trusts the system's roots.
- A server with no certificate may listen only on a loopback address, unless ``allow_insecure`` is set
  explicitly (and then it warns at start): anything beyond loopback does TLS.

``opscale certs init`` makes a development CA and the certificates for all of this.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from opscale.errors import ConfigError


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    #: The name clients expect in the server's certificate, when the address does not carry it.
    server_name: str = ""

    @classmethod
    def of(cls, settings: Any) -> TlsFiles:
        """From a ``Settings`` (its ``tls_*`` fields)."""
        return cls(
            settings.tls_cert_file, settings.tls_key_file, settings.tls_ca_file, settings.tls_server_name
        )

    @property
    def serves_tls(self) -> bool:
        return self.cert_file is not None and self.key_file is not None

    @property
    def requires_client_certs(self) -> bool:
        return self.serves_tls and self.ca_file is not None

    @property
    def client_uses_tls(self) -> bool:
        return self.ca_file is not None or self.cert_file is not None


def _read(path: Path | None, setting: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting} {path}: cannot read it ({exc.strerror or exc})") from None


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    key = _read(tls.key_file, "tls_key_file")
    cert = _read(tls.cert_file, "tls_cert_file")
    ca = _read(tls.ca_file, "tls_ca_file")
    assert key is not None and cert is not None, "serves_tls checked by the caller"
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


def channel_credentials(tls: TlsFiles) -> grpc.ChannelCredentials | None:
    """None: plaintext (no CA and no client certificate configured)."""
    if not tls.client_uses_tls:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file, "tls_ca_file"),
        private_key=_read(tls.key_file, "tls_key_file"),
        certificate_chain=_read(tls.cert_file, "tls_cert_file"),
    )


def channel_options(tls: TlsFiles) -> list[tuple[str, Any]]:
    if tls.client_uses_tls and tls.server_name:
        return [("grpc.ssl_target_name_override", tls.server_name)]
    return []


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` listens on loopback only (``0.0.0.0``, ``::`` and names other than
    ``localhost`` are not)."""
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
