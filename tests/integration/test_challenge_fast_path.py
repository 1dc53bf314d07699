"""The issuance that reads nothing first (issue 15; docs/adr/0007-challenge-nonce-derived-from-its-id.md).

On PostgreSQL, a challenge whose nonce is derived from its id, and a policy this process has read
before, are not read again: the batch's claim checks that the challenge is usable and the policy
version still active. These tests show that the claim decides: a moved policy, a used, unknown or
expired challenge are each caught there, and a challenge made before (random nonce) still works.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select, text

from ca_service.agent.client import make_csr
from ca_service.crypto.keys import spki_der
from ca_service.db.models import Certificate, Challenge
from ca_service.errors import ChallengeConsumed, ChallengeExpired, ChallengeUnknown, PolicyInactive
from ca_service.evidence.binding import binding_value
from ca_service.services import issuance, policies
from ca_service.services.challenges import create_challenge, derived_nonce, has_derived_nonce
from ca_service.services.issuance import CertificateRequest, EvidenceItem, issue_certificate
from tests.conftest import use_postgres
from tests.integration.test_group_commit import ca  # noqa: F401 - the same CA of its own per test

pytestmark = pytest.mark.skipif(not use_postgres(), reason="the read-nothing path is PostgreSQL's")


@pytest.fixture
def no_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every read the issuance makes before its batch (there should be none)."""
    seen: list[str] = []
    real = issuance._pre_read_pg

    def pre_read(*args: Any) -> Any:
        seen.append("pre-read")
        return real(*args)

    monkeypatch.setattr(issuance, "_pre_read_pg", pre_read)
    return seen


def _request(svc: Any, tee: Any, challenge_id: str | None = None, nonce: bytes | None = None) -> CertificateRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    if challenge_id is None:
        ch = create_challenge(svc)
        challenge_id, nonce = ch.id, ch.nonce
    assert nonce is not None
    report = tee.report(binding_value(nonce, spki_der(key.public_key())))
    return CertificateRequest(challenge_id, make_csr(key, ()).public_bytes(Encoding.PEM).decode(), "sim",
                              (EvidenceItem("sim", report),))


def _versions(svc: Any) -> list[int]:
    with svc.db.read() as s:
        return [r for (r,) in s.execute(select(Certificate.policy_version).order_by(Certificate.log_index))]


def test_challenge_ids_are_version_8_with_the_nonce_derived(ca):
    ch = create_challenge(ca["svc"])
    assert uuid.UUID(ch.id).version == 8 and has_derived_nonce(ch.id)
    assert ch.nonce == derived_nonce(ch.id) and len(ch.nonce) == 32
    with ca["svc"].db.read() as s:
        assert s.get(Challenge, ch.id).nonce == ch.nonce  # the row holds the same nonce
    assert not has_derived_nonce(str(uuid.uuid4()))  # a challenge of before: its row decides
    assert not has_derived_nonce(ch.id.upper()) and not has_derived_nonce("not-a-uuid")


def test_a_warm_process_reads_nothing_before_the_batch(ca, no_reads):
    svc, tee = ca["svc"], ca["tee"]
    policies.forget_active(svc.db.url, "sim")
    first = issue_certificate(svc, _request(svc, tee))  # reads the policy once
    assert no_reads == ["pre-read"]
    later = [issue_certificate(svc, _request(svc, tee)) for _ in range(3)]
    assert no_reads == ["pre-read"]
    assert [c.log_index for c in [first, *later]] == [first.log_index + i for i in range(4)]


def test_a_policy_activated_since_is_read_again_and_decides(ca, no_reads):
    """The process's pointer says version 1; version 2 was activated (by another process, say):
    the claim finds it, the request is appraised again under 2, and is issued under 2."""
    svc, tee = ca["svc"], ca["tee"]
    issue_certificate(svc, _request(svc, tee))
    assert policies.cached_active(svc.db.url, "sim").version == 1
    from importlib.resources import files
    doc = files("ca_service.data").joinpath("sim.yaml").read_text().replace("max_lifetime: 24h", "max_lifetime: 12h")
    ref, _ = policies.apply_policy(svc, doc, actor="test")
    with svc.db.transaction() as s:  # behind this process's back: its pointer still says 1
        s.execute(text("UPDATE policies SET active_version = :v WHERE name = 'sim'"), {"v": ref.version})
    assert policies.cached_active(svc.db.url, "sim").version == 1
    issued = issue_certificate(svc, _request(svc, tee))
    assert issued.policy.version == ref.version == 2
    assert _versions(svc) == [1, 2]
    assert policies.cached_active(svc.db.url, "sim").version == 2
    lifetime = issued.certificate.not_valid_after_utc - issued.certificate.not_valid_before_utc
    assert lifetime <= timedelta(hours=12, minutes=5)


def test_a_policy_left_without_active_version_refuses_and_uses_the_challenge(ca):
    svc, tee = ca["svc"], ca["tee"]
    issue_certificate(svc, _request(svc, tee))
    with svc.db.transaction() as s:
        s.execute(text("UPDATE policies SET active_version = NULL WHERE name = 'sim'"))
    req = _request(svc, tee)
    with pytest.raises(PolicyInactive):
        issue_certificate(svc, req)
    with svc.db.read() as s:
        assert s.get(Challenge, req.challenge_id).consumed_at is not None
    assert _versions(svc) == [1]


def test_the_claim_refuses_used_unknown_and_expired_challenges(ca, no_reads):
    svc, tee = ca["svc"], ca["tee"]
    issue_certificate(svc, _request(svc, tee))
    req = _request(svc, tee)
    issue_certificate(svc, req)
    with pytest.raises(ChallengeConsumed):
        issue_certificate(svc, _request(svc, tee, req.challenge_id, derived_nonce(req.challenge_id)))
    made_up = str(uuid.UUID(bytes=bytes(6) + b"\x80" + bytes(1) + b"\x80" + bytes(7)))  # v8, never stored
    assert has_derived_nonce(made_up)
    with pytest.raises(ChallengeUnknown):
        issue_certificate(svc, _request(svc, tee, made_up, derived_nonce(made_up)))
    old = _request(svc, tee)
    with svc.db.transaction() as s:
        s.execute(text("UPDATE challenges SET expires_at = now() - interval '1 second' WHERE id = :id"),
                  {"id": old.challenge_id})
    with pytest.raises(ChallengeExpired):
        issue_certificate(svc, old)
    assert no_reads == ["pre-read"] and len(_versions(svc)) == 2  # the first request only


def test_a_challenge_of_before_with_a_random_nonce_still_issues(ca):
    svc, tee = ca["svc"], ca["tee"]
    issue_certificate(svc, _request(svc, tee))
    cid, nonce = str(uuid.uuid4()), b"\x07" * 32
    now = svc.clock.now()
    with svc.db.transaction() as s:
        s.add(Challenge(id=cid, nonce=nonce, created_at=now, expires_at=now + timedelta(seconds=60)))
    issued = issue_certificate(svc, _request(svc, tee, cid, nonce))
    assert issued.ear["eat_nonce"] == nonce.hex()
    with svc.db.read() as s:
        assert s.get(Challenge, cid).consumed_at is not None


def test_of_two_claims_of_one_challenge_the_first_decides_with_its_own_expectation(ca):
    """Two claims of one id in one batch: the first is judged by its own Expect (right), not by the
    second's (a stale version); the second is refused as used."""
    from ca_service.services.challenges import Expect, PolicyMoved, consume_challenges_in

    svc = ca["svc"]
    ch = create_challenge(svc)
    now = svc.clock.now()
    with svc.db.read() as s:
        ref = policies.active_policy(s, "sim")
    right = Expect(ch.nonce, "sim", ref.version, ref.policy.digest)
    stale = Expect(ch.nonce, "sim", ref.version + 1, ref.policy.digest)
    with svc.db.transaction() as s:
        out = consume_challenges_in(s, [(ch.id, now, right), (ch.id, now, stale)])
    assert out[0] is None and isinstance(out[1], ChallengeConsumed)
    other = create_challenge(svc)
    with svc.db.transaction() as s:
        moved = consume_challenges_in(s, [(other.id, now, stale)])
    assert isinstance(moved[0], PolicyMoved)
    with svc.db.read() as s:
        assert s.get(Challenge, ch.id).consumed_at is not None
        assert s.get(Challenge, other.id).consumed_at is None  # a moved policy uses nothing up
