"""A development certificate authority: ``opscale certs init`` (with the ``cryptography`` package).

One CA signs every certificate opscale needs for TLS and mTLS:

- ``server``: the services' certificate (serverAuth and clientAuth: services call each other with it),
  CN ``opscale-services``, OU ``admin`` (the decision service sets placement's desired counts), with the
  host names and addresses clients dial as subject alternative names;
- ``agent-<node>``: one per node agent, CN = the node name (placement lets it register only as that
  node), OU ``agent``; it also serves the worker control port on its host;
- ``client-<name>``: people and programs, CN = name, OU = their role (viewer, operator, admin, ingest).

The organizational unit carries the role (``opscale.grpcutil.auth``): only the CA can vouch for it.
Keys are ECDSA P-256. These are for development, compose, tests and a first cluster; a production
deployment brings certificates from its own CA (cert-manager, Vault) in the same shape.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from opscale.errors import ConfigError

#: Names the services are dialled by: loopback, compose service names, Kubernetes service names.
DEFAULT_SERVER_NAMES = (
    "localhost",
    "127.0.0.1",
    "::1",
    "ingest",
    "decision",
    "placement",
    "keda",
    "opscale-ingest",
    "opscale-decision",
    "opscale-placement",
    "opscale-keda",
    "*.opscale.svc",
    "*.opscale.svc.cluster.local",
)
ROLES = ("viewer", "operator", "admin", "ingest", "agent")


@dataclass(frozen=True, slots=True)
class Issued:
    name: str  # file stem: ca, server, agent-<node>, client-<name>
    cert_pem: bytes
    key_pem: bytes | None  # the CA's key is written too (it signs more later), as every other key


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str, unit: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "opscale")]
    if unit:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    parts.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(parts)


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _dates(days: int) -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    return now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)


def make_ca(days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    start, end = _dates(days)
    name = _name("opscale development CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    common_name: str,
    unit: str | None,
    names: Sequence[str],
    server: bool,
    days: int,
) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) signed by the CA; ``server`` adds serverAuth (every one is a client)."""
    key = _key()
    start, end = _dates(days)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH, *([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, unit))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(_san(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _check_name(what: str, value: str) -> str:
    if not value or len(value) > 63 or not all(c.isalnum() or c in "-._" for c in value):
        raise ConfigError(f"{what} {value!r}: must be 1 to 63 letters, digits, '-', '.' or '_'")
    return value


def parse_client(spec: str) -> tuple[str, str]:
    """``name=role`` (``--client alice=viewer``)."""
    name, sep, role = spec.partition("=")
    if not sep or role not in ROLES:
        raise ConfigError(f"--client {spec!r}: must be name=role with a role among {', '.join(ROLES)}")
    return _check_name("--client name", name), role


def init(
    *,
    server_names: Sequence[str],
    agents: Sequence[str],
    clients: Sequence[tuple[str, str]],
    days: int,
) -> list[Issued]:
    """A new CA and every certificate it signs, in memory."""
    if not 1 <= days <= 3650:
        raise ConfigError(f"--days {days}: must be in [1, 3650]")
    ca_key, ca_cert = make_ca(days)
    out = [Issued("ca", ca_cert.public_bytes(serialization.Encoding.PEM), _key_pem(ca_key))]
    cert, key = issue(
        ca_key,
        ca_cert,
        common_name="opscale-services",
        unit="admin",
        names=server_names,
        server=True,
        days=days,
    )
    out.append(Issued("server", cert, key))
    for node in agents:
        _check_name("--agent", node)
        names = [node, "localhost", "127.0.0.1", "::1"]
        cert, key = issue(
            ca_key, ca_cert, common_name=node, unit="agent", names=names, server=True, days=days
        )
        out.append(Issued(f"agent-{node}", cert, key))
    for name, role in clients:
        cert, key = issue(ca_key, ca_cert, common_name=name, unit=role, names=[], server=False, days=days)
        out.append(Issued(f"client-{name}", cert, key))
    return out


def write(issued: Sequence[Issued], out: Path, *, force: bool) -> list[Path]:
    """Write ``<name>.crt`` and ``<name>.key`` (0600) under ``out``; refuses to overwrite unless
    ``force``, so a second run never silently replaces a CA whose certificates are in use."""
    paths = [out / f"{i.name}.{ext}" for i in issued for ext in ("crt", "key")]
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} exists; use --force to replace the CA and every certificate")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for item in issued:
            (out / f"{item.name}.crt").write_bytes(item.cert_pem)
            key_path = out / f"{item.name}.key"
            key_path.touch(mode=0o600)
            key_path.chmod(0o600)
            key_path.write_bytes(item.key_pem or b"")
    except OSError as exc:
        raise ConfigError(f"cannot write certificates under {out}: {exc.strerror or exc}") from None
    return paths


def k8s_secrets(issued: Sequence[Issued], namespace: str = "opscale") -> str:
    """The Kubernetes Secrets deploy/k8s/base mounts, as one YAML stream (``kubectl apply -f``):
    ``opscale-tls-server`` and ``opscale-tls-client-<name>`` (``kubernetes.io/tls`` with ``ca.crt``),
    and ``opscale-tls-agents`` (``ca.crt`` and ``<node>.crt``/``<node>.key`` for every agent: the
    DaemonSet picks its node's pair by name)."""
    import base64

    import yaml

    def b64(data: bytes | None) -> str:
        return base64.b64encode(data or b"").decode()

    def secret(name: str, kind: str, data: dict[str, str]) -> dict[str, object]:
        meta = {"name": name, "namespace": namespace}
        return {"apiVersion": "v1", "kind": "Secret", "type": kind, "metadata": meta, "data": data}

    ca = next(i for i in issued if i.name == "ca")
    docs = []
    agents: dict[str, str] = {"ca.crt": b64(ca.cert_pem)}
    for item in issued:
        if item.name.startswith("agent-"):
            node = item.name.removeprefix("agent-")
            agents |= {f"{node}.crt": b64(item.cert_pem), f"{node}.key": b64(item.key_pem)}
        elif item.name != "ca":
            tls = {"ca.crt": b64(ca.cert_pem), "tls.crt": b64(item.cert_pem), "tls.key": b64(item.key_pem)}
            docs.append(secret(f"opscale-tls-{item.name}", "kubernetes.io/tls", tls))
    docs.append(secret("opscale-tls-agents", "Opaque", agents))
    return yaml.safe_dump_all(docs, sort_keys=False)
