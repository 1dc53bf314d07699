"""Keys at rest: private keys in the ``ca_keys`` table, encrypted with MultiFernet.

The Fernet keys come from ``CA_SERVICE_KEY_ENCRYPTION_KEYS`` (comma separated, first encrypts, all
decrypt, so rotation is: prepend a new key, re-encrypt, drop the old) or, when unset, from
``$CA_SERVICE_HOME/secrets/fernet.keys`` created by ``ca-service init`` (mode 0600). In a TEE the
file key is where sealing plugs in.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from ca_service.config import Settings
from ca_service.db.models import CAKey
from ca_service.db.session import Database
from ca_service.errors import ConfigurationError, KeyDecryptionFailed, NotInitialised

ROLES = ("root", "issuing", "log", "ear", "sim-root")


def fernet_keys_path(settings: Settings) -> Path:
    return settings.home / "secrets" / "fernet.keys"


def ensure_fernet_keys(settings: Settings) -> None:
    """Create the Fernet key file when no keys are configured."""
    if settings.key_encryption_keys:
        return
    path = fernet_keys_path(settings)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(Fernet.generate_key().decode() + "\n")


class KeyStore:
    def __init__(self, settings: Settings, db: Database) -> None:
        self._settings = settings
        self._db = db
        self._fernet: MultiFernet | None = None
        self._cache: dict[str, tuple[Any, x509.Certificate | None]] = {}
        self._lock = threading.Lock()

    def fernet(self) -> MultiFernet:
        if self._fernet is None:
            keys = list(self._settings.key_encryption_keys)
            if not keys:
                path = fernet_keys_path(self._settings)
                if not path.exists():
                    raise NotInitialised("no key-encryption keys: run `ca-service init`")
                keys = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            try:
                self._fernet = MultiFernet([Fernet(k) for k in keys])
            except (ValueError, TypeError) as exc:
                raise ConfigurationError("CA_SERVICE_KEY_ENCRYPTION_KEYS holds an invalid Fernet key") from exc
        return self._fernet

    def encrypt(self, key: Any) -> bytes:
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return self.fernet().encrypt(pem)

    def store(self, session: Any, role: str, key: Any, cert: x509.Certificate | None, now: Any) -> CAKey:
        """Add a key (and its certificate) for ``role`` inside the caller's transaction."""
        if role not in ROLES:
            raise ValueError(f"unknown key role {role}")
        for old in session.scalars(select(CAKey).where(CAKey.role == role, CAKey.active.is_(True))):
            old.active = False
        row = CAKey(
            role=role,
            created_at=now,
            active=True,
            certificate_der=cert.public_bytes(serialization.Encoding.DER) if cert is not None else None,
            public_key_der=key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            encrypted_private_key=self.encrypt(key) if role not in ("root", "sim-root") else None,
        )
        session.add(row)
        with self._lock:
            self._cache.pop(role, None)
        return row

    def _load(self, role: str) -> tuple[Any, x509.Certificate | None]:
        with self._lock:
            hit = self._cache.get(role)
        if hit is not None:
            return hit
        with self._db.read() as session:
            row = session.scalars(
                select(CAKey).where(CAKey.role == role, CAKey.active.is_(True)).order_by(CAKey.id.desc())
            ).first()
            if row is None:
                raise NotInitialised(f"no active {role} key: run `ca-service init`")
            cert = x509.load_der_x509_certificate(row.certificate_der) if row.certificate_der else None
            key: Any = None
            if row.encrypted_private_key is not None:
                try:
                    pem = self.fernet().decrypt(row.encrypted_private_key)
                except InvalidToken as exc:
                    raise KeyDecryptionFailed(f"the {role} key cannot be decrypted with the configured keys") from exc
                key = serialization.load_pem_private_key(pem, password=None)
            else:
                key = serialization.load_der_public_key(row.public_key_der)
        with self._lock:
            self._cache[role] = (key, cert)
        return key, cert

    def private_key(self, role: str) -> Any:
        key, _ = self._load(role)
        if role in ("root", "sim-root"):
            raise ValueError(f"the {role} private key is not held by the service")
        return key

    def certificate(self, role: str) -> x509.Certificate:
        _, cert = self._load(role)
        if cert is None:
            raise NotInitialised(f"the {role} key has no certificate")
        return cert

    def public_key(self, role: str) -> Any:
        key, cert = self._load(role)
        if cert is not None:
            return cert.public_key()
        return key.public_key() if hasattr(key, "public_key") else key

    def has(self, role: str) -> bool:
        try:
            self._load(role)
        except NotInitialised:
            return False
        return True
