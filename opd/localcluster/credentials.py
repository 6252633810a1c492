"""The local cluster's secrets: its CA and serving certificate, the service-account key and
an admin token made at random for each cluster.

The admin token is ``system:masters``: whoever reads it owns the cluster. Everything a
cluster writes is therefore the user's alone (files 0600, folders 0700), whatever the umask.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

from opd.errors import ControlPlaneError

ADMIN_USER = "opd-admin"


def private_dir(path: Path) -> Path:
    """``path`` (and missing parents) as a folder only its owner can enter."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)  # mkdir's mode passes through the umask, and the folder may be older
    return path


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` into a file only its owner can read; never readable by others, not even briefly."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)  # an existing file keeps its mode through O_CREAT
        out.write(text)
    return path


def new_admin_token() -> str:
    return secrets.token_urlsafe(32)


def write_token_file(path: Path, token: str) -> Path:
    """kube-apiserver's ``--token-auth-file``: the one admin, in ``system:masters``."""
    return write_private(path, f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')


def _openssl(*args: str, cwd: Path) -> None:
    try:
        subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise ControlPlaneError("openssl is not installed: apt-get install openssl") from exc
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr or "").strip().splitlines()[-1:] or ["?"]
        raise ControlPlaneError(f"openssl {args[0]} failed: {last[0]}") from exc


def make_certificates(pki: Path) -> None:
    """A CA, a serving certificate for 127.0.0.1/localhost, a service-account key."""
    private_dir(pki)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
             "-subj", "/CN=opd-local-ca", cwd=pki)
    _openssl("req", *ec, "-keyout", "apiserver.key", "-out", "apiserver.csr",
             "-subj", "/CN=kube-apiserver", cwd=pki)
    write_private(
        pki / "san.cnf",
        "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc\n"
        "extendedKeyUsage=serverAuth\n",
    )
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "apiserver.crt", "-days", "3650", "-extfile", "san.cnf",
             cwd=pki)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    # openssl writes with the umask's modes; the folder is closed already, the files follow.
    for item in pki.iterdir():
        if item.is_file():
            item.chmod(0o600)
