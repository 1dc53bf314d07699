"""``ca-service init``: database, offline root, issuing CA, log and EAR keys, sim TEE (dev only)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ca_service.ca.profile import build_issuing, build_root
from ca_service.config import Settings
from ca_service.services import policies
from ca_service.services.container import Services
from ca_service.services.keys import ensure_fernet_keys


def upgrade_database(settings: Settings) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_migrations_dir()))
    cfg.attributes["url"] = settings.database_url
    command.upgrade(cfg, "head")


def _migrations_dir() -> Path:
    """migrations/ beside the package (a checkout), or ``CA_SERVICE_MIGRATIONS_DIR``, or ./migrations
    (the docker image's working directory)."""
    candidates = [Path(os.environ["CA_SERVICE_MIGRATIONS_DIR"])] if os.environ.get("CA_SERVICE_MIGRATIONS_DIR") else []
    candidates += [Path(__file__).resolve().parents[2] / "migrations", Path.cwd() / "migrations"]
    for cand in candidates:
        if (cand / "env.py").exists():
            return cand
    raise FileNotFoundError("migrations/ not found: set CA_SERVICE_MIGRATIONS_DIR")


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _private_sqlite(settings: Settings) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        for suffix in ("", "-wal", "-shm"):
            f = Path(url.database + suffix)
            if f.exists():
                os.chmod(f, 0o600)


def sim_tee_dir(settings: Settings) -> Path:
    return settings.home / "sim-tee"


def load_sim_tee(settings: Settings) -> object:
    """The InsecureSimTee of this home (created by init in the insecure-dev profile)."""
    from ca_service.evidence.sim.attester import InsecureSimTee

    seed_file = sim_tee_dir(settings) / "seed"
    if not seed_file.exists():
        raise FileNotFoundError(f"no sim TEE in {seed_file.parent}: run `ca-service init` in the insecure-dev profile")
    return InsecureSimTee.from_seed(bytes.fromhex(seed_file.read_text().strip()))


@dataclass(frozen=True)
class InitResult:
    created: bool
    root_key_file: Path | None
    root_passphrase_file: Path | None
    notes: tuple[str, ...]
    # the generated root key passphrase, for the caller to show once (never stored by default)
    root_passphrase: str | None = None


def init_ca(settings: Settings, *, write_passphrase: bool = False) -> InitResult:
    """Idempotent: creates only what is missing.

    The home is private (0700) and so is a SQLite file in it (0600). The root key's passphrase
    is ``CA_SERVICE_ROOT_PASSPHRASE``, or generated and returned for the caller to show once; it is
    written beside the key only with ``write_passphrase`` (dev convenience).
    """
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(settings.home, 0o700)
    ensure_fernet_keys(settings)
    upgrade_database(settings)
    _private_sqlite(settings)
    svc = Services.create(settings)
    notes: list[str] = []
    try:
        now = svc.clock.now()
        if svc.keys.has("issuing"):
            return InitResult(False, None, None, ("CA already initialised",))
        root_key = ec.generate_private_key(ec.SECP384R1())
        root = build_root(root_key, now=now, insecure=settings.insecure)
        issuing_key = ec.generate_private_key(ec.SECP256R1())
        issuing = build_issuing(issuing_key, root_key, root, now=now, insecure=settings.insecure,
                                public_url=settings.public_url)
        passphrase = os.environ.get("CA_SERVICE_ROOT_PASSPHRASE") or secrets.token_urlsafe(32)
        offline = settings.home / "offline"
        key_file = offline / "root-key.pem"
        pass_file = offline / "root-key.passphrase"
        _write_private(key_file, root_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase.encode())))
        generated = not os.environ.get("CA_SERVICE_ROOT_PASSPHRASE")
        if generated and write_passphrase:
            _write_private(pass_file, passphrase.encode() + b"\n")
        (settings.home / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
        notes.append(f"offline root key written encrypted to {key_file}: move it (and its passphrase) off this host")
        with svc.db.transaction() as session:
            svc.keys.store(session, "root", root_key, root, now)
            svc.keys.store(session, "issuing", issuing_key, issuing, now)
            svc.keys.store(session, "log", ed25519.Ed25519PrivateKey.generate(), None, now)
            svc.keys.store(session, "ear", ec.generate_private_key(ec.SECP256R1()), None, now)
            # the root's first ARL (empty, long-lived): the issuing CA's CDP names it
            from ca_service.services.root_arl import sign_arl_in

            sign_arl_in(session, root_key=root_key, root=root, now=now)
            if settings.insecure:
                from ca_service.evidence.sim.attester import InsecureSimTee

                seed = secrets.token_bytes(32)
                _write_private(sim_tee_dir(settings) / "seed", seed.hex().encode() + b"\n")
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    tee = InsecureSimTee.from_seed(seed)
                svc.keys.store(session, "sim-root", tee.root_key, tee.root_cert, now)
                # exported so a relying party can pin it for `ca-service verify-ca` (dev only)
                (settings.home / "sim-root.pem").write_bytes(tee.root_cert.public_bytes(serialization.Encoding.PEM))
                source = resources.files("ca_service.data").joinpath("sim.yaml").read_text()
                ref, _ = policies.apply_policy_in(session, source, actor="init", now=now)
                session.flush()
                policies.activate_in(session, ref.policy.name, ref.version, actor="init", now=now)
                notes.append("insecure-dev: sim TEE created and policy 'sim' activated")
        return InitResult(True, key_file, pass_file if generated and write_passphrase else None,
                          tuple(notes), root_passphrase=passphrase if generated else None)
    finally:
        svc.close()
