"""Certificates for the webhook server: a self-signed CA, and a serving certificate it signs for
the names and addresses the API server dials. Made with ``cryptography``; EC P-256 keys.

The API server trusts the server through the CA given as ``caBundle`` in each webhook's client
configuration, and checks the serving certificate's subject alternative names (never its common
name) against the host of the URL: every name and IP address it may dial must be listed.

Per process (``make``: in memory, a new CA at every start; opd writes the new ``caBundle`` into
the configurations it manages), or kept in a folder (``keep``) under the names cert-manager
gives a Secret's keys: ``ca.crt``, ``ca.key``, ``tls.crt``, ``tls.key``. A folder with
``tls.crt`` and ``tls.key`` but no ``ca.key`` holds certificates made elsewhere (a mounted
cert-manager Secret): used as they are, never replaced.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import secrets
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from opd.errors import ConfigError

CA_DAYS = 3650
SERVING_DAYS = 365
RENEW_BEFORE = datetime.timedelta(days=30)  # a kept certificate this close to its end is made anew
CLOCK_SKEW = datetime.timedelta(minutes=5)  # valid from a little before now: clocks differ

CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE = "ca.crt", "ca.key", "tls.crt", "tls.key"
MAX_FILE = 1024 * 1024  # bytes: a PEM certificate chain or key is a few KiB


@dataclass(frozen=True)
class Certificates:
    """PEM bytes. ``ca`` is what clients trust (the ``caBundle``; empty when the serving
    certificate chains to a CA the cluster already trusts); ``ca_key`` is None unless opd made it."""

    ca: bytes
    cert: bytes
    key: bytes
    ca_key: bytes | None = None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def split_host(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | str:
    """An IP address (IPv6 with or without brackets), or a DNS name as given (lower-cased)."""
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        return host.lower()


def _names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(h for h in hosts if h):
        found = split_host(host)
        names.append(x509.DNSName(found) if isinstance(found, str) else x509.IPAddress(found))
    return names


def new_ca(name: str = "opd webhooks CA", *, days: int = CA_DAYS) -> tuple[bytes, bytes]:
    """A self-signed CA: (certificate, key) as PEM."""
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def new_serving(ca_cert: bytes, ca_key: bytes, hosts: Sequence[str], *, days: int = SERVING_DAYS
                ) -> tuple[bytes, bytes]:
    """A serving certificate for ``hosts`` (names and IP addresses), signed by the CA: (cert, key) as PEM."""
    names = _names(hosts)
    if not names:
        raise ConfigError("a webhook serving certificate needs at least one host name or address")
    ca = x509.load_pem_x509_certificate(ca_cert)
    signer = serialization.load_pem_private_key(ca_key, password=None)
    if not isinstance(signer, ec.EllipticCurvePrivateKey):
        raise ConfigError("the webhook CA's key is not an EC key made by opd")
    key = _key()
    now = _now()
    first = names[0].value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(first)[:64])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                     crl_sign=False, content_commitment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
        .sign(signer, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def make(hosts: Sequence[str]) -> Certificates:
    """A fresh CA and a serving certificate for ``hosts``, in memory."""
    ca_cert, ca_key = new_ca()
    cert, key = new_serving(ca_cert, ca_key, hosts)
    return Certificates(ca=ca_cert, cert=cert, key=key, ca_key=ca_key)


def subject_names(cert: bytes) -> tuple[set[str], set[str]]:
    """The (DNS names, IP addresses) a PEM certificate is valid for."""
    parsed = x509.load_pem_x509_certificate(cert)
    try:
        sans = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return ({n.lower() for n in sans.get_values_for_type(x509.DNSName)},
            {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)})


def covers(cert: bytes, hosts: Iterable[str]) -> bool:
    """Whether the certificate names every host (exact names; no wildcard matching)."""
    dns, ips = subject_names(cert)
    for host in hosts:
        found = split_host(host)
        if (found not in dns) if isinstance(found, str) else (str(found) not in ips):
            return False
    return True


def lasts(cert: bytes, margin: datetime.timedelta = RENEW_BEFORE) -> bool:
    """Valid now, and still for ``margin``."""
    parsed = x509.load_pem_x509_certificate(cert)
    now = _now()
    return parsed.not_valid_before_utc <= now and parsed.not_valid_after_utc - margin > now


def signed_by(cert: bytes, ca: bytes) -> bool:
    try:
        x509.load_pem_x509_certificate(cert).verify_directly_issued_by(x509.load_pem_x509_certificate(ca))
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, readable by its owner only, never half-written: a fresh
    name made here (O_EXCL: never a file or link someone put there), then renamed over ``path``
    (which replaces a link there, never what it points to)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(data)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def _trusted(st: os.stat_result, read_only: bool) -> str | None:
    """Why a file or folder with this status cannot be trusted (None: it can): someone other than
    opd's user or root owns it, or others may write it (on a writable file system)."""
    if st.st_uid not in (os.geteuid(), 0):
        return f"owned by uid {st.st_uid}, not by opd's user ({os.geteuid()}) or root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not read_only:
        return f"writable by {'others' if st.st_mode & stat.S_IWOTH else 'its group'} ({stat.S_IMODE(st.st_mode):o})"
    return None


def _read_only(path: Path) -> bool:
    """Whether ``path`` is on a read-only mount (a Secret volume: nobody writes there)."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_folder(directory: Path) -> None:
    """ConfigError (one line) unless the folder is opd's (or root's) and only its owner may write it."""
    try:
        st = os.stat(directory)
    except OSError as exc:
        raise ConfigError(f"webhook certificates: cannot use {directory}: {exc.strerror or exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"webhook certificates: {directory} is not a folder")
    why = _trusted(st, _read_only(directory))
    if why:
        raise ConfigError(f"webhook certificates: refusing the folder {directory}: {why}; "
                          f"make it opd's own with mode 0700")


def _read(path: Path) -> bytes | None:
    """A file of a checked folder: a link is followed only to a file inside that folder (a mounted
    Secret's ``..data/`` links), the file opened without following links, owner and mode checked."""
    if not os.path.lexists(path):
        return None
    try:
        real = Path(os.path.realpath(path))
        home = Path(os.path.realpath(path.parent))
        if home not in real.parents:
            raise ConfigError(f"webhook certificates: refusing {path}: a link out of its folder (to {real})")
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as opened:
            st = os.fstat(opened.fileno())
            why = "not a regular file" if not stat.S_ISREG(st.st_mode) else _trusted(st, _read_only(real))
            if why:
                raise ConfigError(f"webhook certificates: refusing {path}: {why}")
            if st.st_size > MAX_FILE:
                raise ConfigError(f"webhook certificates: refusing {path}: larger than {MAX_FILE} bytes")
            return opened.read(MAX_FILE)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"webhook certificates: cannot read {path}: {exc.strerror or exc}") from exc


def keep(directory: Path, hosts: Sequence[str]) -> tuple[Certificates, str]:
    """The certificates kept in ``directory``, made or renewed there as needed; and what was done
    (for the log): "provided", "kept", "renewed" (a new serving certificate, same CA) or "made"."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"webhook certificates: cannot make {directory}: {exc.strerror or exc}") from exc
    check_folder(directory)  # a planted ca.key would sign what the API server trusts
    ca, ca_key = _read(directory / CA_FILE), _read(directory / CA_KEY_FILE)
    cert, key = _read(directory / CERT_FILE), _read(directory / KEY_FILE)
    try:
        if ca_key is None and cert is not None and key is not None:
            return Certificates(ca=ca or b"", cert=cert, key=key), "provided"
        done = "renewed"
        if ca is None or ca_key is None or not lasts(ca, datetime.timedelta(days=SERVING_DAYS)):
            ca, ca_key = new_ca()
            cert = key = None
            done = "made"
        if (cert is not None and key is not None and covers(cert, hosts) and lasts(cert)
                and signed_by(cert, ca)):
            return Certificates(ca=ca, cert=cert, key=key, ca_key=ca_key), "kept"
        cert, key = new_serving(ca, ca_key, hosts)
    except ValueError as exc:  # a file that is not PEM, or not a certificate
        raise ConfigError(f"webhook certificates in {directory}: cannot use them: {exc}") from exc
    try:
        if done == "made":
            _write(directory / CA_KEY_FILE, ca_key)
            _write(directory / CA_FILE, ca)
        _write(directory / KEY_FILE, key)
        _write(directory / CERT_FILE, cert)
    except OSError as exc:
        raise ConfigError(f"webhook certificates: cannot write in {directory}: {exc.strerror or exc}") from exc
    return Certificates(ca=ca, cert=cert, key=key, ca_key=ca_key), done
