"""Group commit of issuances (services/group_commit.py), on SQLite and PostgreSQL.

Each test holds the batch leader inside its transaction until the other requests have queued, so
the batches are known: no timing is asserted.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select

from ca_service.agent.client import make_csr
from ca_service.crypto.keys import spki_der
from ca_service.db.models import Certificate
from ca_service.db.models.tlog import TlogEntry
from ca_service.errors import BindingMismatch, ChallengeConsumed, LeafInvalid
from ca_service.evidence.binding import binding_value
from ca_service.services import group_commit
from ca_service.services.challenges import consume_challenge_in, consume_challenges_in, create_challenge
from ca_service.services.issuance import CertificateRequest, EvidenceItem, IssuedCertificate, issue_certificate
from tests.conftest import make_settings


@pytest.fixture
def ca(tmp_path: Any, db_url_factory: Callable[[], str]) -> Iterator[dict[str, Any]]:
    """A CA of its own, so counts and indexes are this test's."""
    from ca_service.services.bootstrap import init_ca, load_sim_tee
    from ca_service.services.container import Services

    settings = make_settings(tmp_path / "home", db_url_factory())
    init_ca(settings)
    svc = Services.create(settings)
    yield {"svc": svc, "tee": load_sim_tee(settings)}
    svc.close()


def _request(svc: Any, tee: Any) -> CertificateRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    ch = create_challenge(svc)
    report = tee.report(binding_value(ch.nonce, spki_der(key.public_key())))
    return CertificateRequest(ch.id, make_csr(key, ()).public_bytes(Encoding.PEM).decode(), "sim",
                              (EvidenceItem("sim", report),))


class _HeldDb:
    """The leader's database: its transaction starts only when released, so the others queue
    meanwhile (holding no database lock: SQLite would make them wait for their challenge)."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.entered = threading.Event()
        self.release = threading.Event()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        self.entered.set()
        assert self.release.wait(30)
        with self.db.transaction() as session:
            yield session


def _refused(index: int) -> group_commit.Built:
    raise LeafInvalid("this item is refused")


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    return t, out


def _wait_queued(committer: group_commit.GroupCommitter, n: int) -> None:
    deadline = time.monotonic() + 30
    while len(committer._queue) < n:
        assert time.monotonic() < deadline, "requests did not queue"
        time.sleep(0.01)


def _check_dense_one_leaf_each(svc: Any) -> list[Any]:
    with svc.db.read() as s:
        idx = list(s.scalars(select(TlogEntry.idx).order_by(TlogEntry.idx)))
        leaves = {e.idx: e.leaf for e in s.scalars(select(TlogEntry))}
        certs = list(s.scalars(select(Certificate)))
    assert idx == list(range(len(idx)))
    assert len({c.log_index for c in certs}) == len(certs)
    for c in certs:
        assert f'"certificate_sha256":"{hashlib.sha256(c.der).hexdigest()}"'.encode() in leaves[c.log_index]
    return certs


def test_queued_requests_commit_as_one_batch_with_consecutive_indexes(ca):
    svc, tee = ca["svc"], ca["tee"]
    committer = svc.group_commit
    requests = [_request(svc, tee) for _ in range(5)]
    held = _HeldDb(svc.db)
    leader, leader_out = _in_thread(lambda: committer.submit(held, _refused))
    assert held.entered.wait(30)
    batches = committer.batches
    workers = [_in_thread(lambda r=r: issue_certificate(svc, r)) for r in requests]
    _wait_queued(committer, 5)
    held.release.set()
    leader.join(30)
    for t, _ in workers:
        t.join(30)
    # the leader's own bad item failed alone; the five queued behind it went in one batch
    assert isinstance(leader_out.get("error"), LeafInvalid)
    results: list[IssuedCertificate] = [out["result"] for _, out in workers]
    assert committer.batches == batches + 2
    indexes = sorted(r.log_index for r in results)
    assert indexes == list(range(indexes[0], indexes[0] + 5))
    certs = {c.serial: c for c in _check_dense_one_leaf_each(svc)}
    for r in results:
        stored = certs[r.serial]
        assert stored.log_index == r.log_index
        assert stored.der == r.certificate.public_bytes(Encoding.DER)
        assert stored.appraisal["ear"] == r.ear
        assert r.ear["ca-service.log-index"] == r.log_index
        x509.load_der_x509_certificate(stored.der).verify_directly_issued_by(svc.keys.certificate("issuing"))


def test_a_failed_batch_issues_nothing_to_anyone(ca):
    """One row the database refuses (a duplicate serial) rolls the whole batch back: every caller
    in it gets the error, no certificate and no leaf of it is stored, and the log stays dense."""
    svc, tee = ca["svc"], ca["tee"]
    committer = svc.group_commit
    first = issue_certificate(svc, _request(svc, tee))
    with svc.db.read() as s:
        row = s.get(Certificate, first.serial)
        assert row is not None
        duplicate = {c.key: getattr(row, c.key) for c in Certificate.__table__.columns}

    def duplicate_serial(index: int) -> group_commit.Built:
        return group_commit.Built(certificate=duplicate | {"log_index": index}, evidence=[],
                                  leaf=b'{"bad":"row"}', result="never returned")

    # the leader holds batch 1 (its item fails alone); batch 2 is the bad row and three good requests
    blocker = _HeldDb(svc.db)
    leader, _ = _in_thread(lambda: committer.submit(blocker, _refused))
    assert blocker.entered.wait(30)
    bad, bad_out = _in_thread(lambda: committer.submit(svc.db, duplicate_serial))
    _wait_queued(committer, 1)
    good = [_in_thread(lambda r=r: issue_certificate(svc, r)) for r in [_request(svc, tee) for _ in range(3)]]
    _wait_queued(committer, 4)
    blocker.release.set()
    for t, _ in [(leader, None), (bad, None), *good]:
        t.join(30)
    assert "result" not in bad_out and bad_out["error"] is not None
    for _, out in good:
        assert "result" not in out
        assert out["error"] is bad_out["error"]
    certs = _check_dense_one_leaf_each(svc)
    assert [c.serial for c in certs] == [first.serial]
    # and the next issuance takes the next index
    after = issue_certificate(svc, _request(svc, tee))
    assert after.log_index == first.log_index + 1
    assert len(_check_dense_one_leaf_each(svc)) == 2


def test_many_threads_issue_once_each(ca):
    """Sixteen concurrent requests: each gets its own certificate, once, with a dense log."""
    svc, tee = ca["svc"], ca["tee"]
    requests = [_request(svc, tee) for _ in range(16)]
    workers = [_in_thread(lambda r=r: issue_certificate(svc, r)) for r in requests]
    for t, _ in workers:
        t.join(60)
    results = [out.get("result") for _, out in workers]
    assert all(isinstance(r, IssuedCertificate) for r in results), [out.get("error") for _, out in workers]
    certs = _check_dense_one_leaf_each(svc)
    assert sorted(c.serial for c in certs) == sorted(r.serial for r in results)
    assert len({r.log_index for r in results}) == 16


def test_one_challenge_twice_in_a_batch_issues_once(ca):
    """Two requests for one challenge queued into the same batch: the challenge is used up in the
    batch's transaction, so exactly one is issued and the other is refused challenge.consumed."""
    svc, tee = ca["svc"], ca["tee"]
    committer = svc.group_commit
    req = _request(svc, tee)
    twin = CertificateRequest(req.challenge_id, req.csr_pem, req.policy, req.evidence)
    held = _HeldDb(svc.db)
    leader, _ = _in_thread(lambda: committer.submit(held, _refused))
    assert held.entered.wait(30)
    workers = [_in_thread(lambda r=r: issue_certificate(svc, r)) for r in (req, twin)]
    _wait_queued(committer, 2)
    held.release.set()
    for t, _ in [(leader, None), *workers]:
        t.join(30)
    outs = [out for _, out in workers]
    assert sum("result" in out for out in outs) == 1
    errors = [out["error"] for out in outs if "error" in out]
    assert len(errors) == 1 and isinstance(errors[0], ChallengeConsumed)
    assert len(_check_dense_one_leaf_each(svc)) == 1


def test_a_refused_request_uses_its_challenge_up(ca):
    """Evidence bound to another key is refused before the final transaction; the challenge is
    used up all the same, so the right evidence cannot be sent with it afterwards."""
    svc, tee = ca["svc"], ca["tee"]
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    ch = create_challenge(svc)
    csr = make_csr(key, ()).public_bytes(Encoding.PEM).decode()
    wrong = tee.report(binding_value(ch.nonce, spki_der(other.public_key())))
    with pytest.raises(BindingMismatch):
        issue_certificate(svc, CertificateRequest(ch.id, csr, "sim", (EvidenceItem("sim", wrong),)))
    right = tee.report(binding_value(ch.nonce, spki_der(key.public_key())))
    with pytest.raises(ChallengeConsumed):
        issue_certificate(svc, CertificateRequest(ch.id, csr, "sim", (EvidenceItem("sim", right),)))
    assert _check_dense_one_leaf_each(svc) == []


def test_consume_challenges_in_refuses_each_bad_claim(ca):
    svc = ca["svc"]
    now = svc.clock.now()
    fresh, used, old = create_challenge(svc), create_challenge(svc), create_challenge(svc)
    with svc.db.transaction() as s:
        consume_challenge_in(s, used.id, now)
    claims = [(fresh.id, now), (used.id, now), (old.id, old.expires_at), (fresh.id, now),
              ("00000000-0000-4000-8000-000000000000", now), ("not-a-uuid", now)]
    with svc.db.transaction() as s:
        out = consume_challenges_in(s, claims)
    assert out[0] is None
    assert [type(e).__name__ for e in out[1:]] == ["ChallengeConsumed", "ChallengeExpired", "ChallengeConsumed",
                                                  "ChallengeUnknown", "ChallengeUnknown"]
    with svc.db.transaction() as s:  # committed: the fresh one is used now
        assert isinstance(consume_challenges_in(s, [(fresh.id, now)])[0], ChallengeConsumed)
