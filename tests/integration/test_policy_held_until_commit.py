"""The policy version an issuance claims under stays active until its certificate commits.

The claim (services/challenges.consume_challenges_in) checks that the version the request was
appraised under is still the active one, and holds the policy row shared until COMMIT: an
activation that commits before the claim sends the request back to be appraised again; one that
comes after waits for the certificate. So no certificate of a version commits after another was
activated, and ``policy retire --revoke`` of a superseded version finds every certificate it
admitted. On both databases; the lock itself on PostgreSQL (SQLite serialises writers already).
"""

from __future__ import annotations

import threading
from importlib.resources import files
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from ca_service.db.models import Certificate, Challenge
from ca_service.errors import PolicyChanging
from ca_service.services import issuance, policies
from ca_service.services.challenges import Expect, consume_challenges_in
from ca_service.services.issuance import issue_certificate
from tests.conftest import use_postgres
from tests.integration.test_challenge_fast_path import _request
from tests.integration.test_group_commit import ca  # noqa: F401 - the same CA of its own per test


def _new_version(svc: Any, hours: int) -> int:
    """Store (not activate) a version of the sim policy with another max_lifetime."""
    doc = files("ca_service.data").joinpath("sim.yaml").read_text().replace("max_lifetime: 24h",
                                                                            f"max_lifetime: {hours}h")
    ref, created = policies.apply_policy(svc, doc, actor="test")
    assert created
    return int(ref.version)


def _activate_during_prepare(monkeypatch: pytest.MonkeyPatch, svc: Any, versions: list[int]) -> list[int]:
    """Each appraisal (``_prepare``) first activates the next of ``versions``, as an administrator
    would while the request is being verified: after its read, before its claim."""
    real = issuance._prepare
    seen: list[int] = []

    def prepare(svc_: Any, req: Any, now: Any, csr: Any, nonce: bytes, ref: Any) -> Any:
        seen.append(ref.version)
        if versions:
            policies.activate(svc, "sim", versions.pop(0), actor="admin")
        return real(svc_, req, now, csr, nonce, ref)

    monkeypatch.setattr(issuance, "_prepare", prepare)
    return seen


def _issued_versions(svc: Any) -> list[int]:
    with svc.db.read() as s:
        return [v for (v,) in s.execute(select(Certificate.policy_version).order_by(Certificate.log_index))]


def test_an_activation_after_the_read_sends_the_request_back_and_the_new_version_decides(ca, monkeypatch):
    svc, tee = ca["svc"], ca["tee"]
    v2 = _new_version(svc, 12)
    policies.forget_active(svc.db.url, "sim")  # the read path, on either database
    appraised = _activate_during_prepare(monkeypatch, svc, [v2])
    issued = issue_certificate(svc, _request(svc, tee))
    assert appraised == [1, v2]  # appraised under 1, then 1 was no longer active: again, under v2
    assert issued.policy.version == v2 and _issued_versions(svc) == [v2]


def test_a_policy_that_keeps_moving_is_refused_with_retry_and_the_challenge_stays_usable(ca, monkeypatch):
    svc, tee = ca["svc"], ca["tee"]
    v2 = _new_version(svc, 12)
    policies.forget_active(svc.db.url, "sim")
    appraised = _activate_during_prepare(monkeypatch, svc, [v2, 1, v2, 1])
    req = _request(svc, tee)
    with pytest.raises(PolicyChanging) as err:
        issue_certificate(svc, req)
    assert err.value.status == 503 and err.value.retry_after == 1 and err.value.code == "policy.changing"
    assert len(appraised) >= 3 and _issued_versions(svc) == []
    with svc.db.read() as s:
        assert s.get(Challenge, req.challenge_id).consumed_at is None  # nothing used it
    issued = issue_certificate(svc, req)  # the retry: the administrator has stopped
    assert _issued_versions(svc) == [issued.policy.version]


@pytest.mark.skipif(not use_postgres(), reason="the row lock is PostgreSQL's; SQLite serialises writers")
def test_an_activation_waits_for_a_claimed_batch_to_commit(ca):
    svc, tee = ca["svc"], ca["tee"]
    v2 = _new_version(svc, 12)
    req = _request(svc, tee)
    with svc.db.read() as s:
        nonce = s.get(Challenge, req.challenge_id).nonce
    with svc.db.read() as s:
        digest = s.execute(text("SELECT digest FROM policy_versions WHERE name = 'sim' AND version = 1")).scalar_one()
    done = threading.Event()
    with svc.db.transaction() as batch:  # a batch between its claim and its COMMIT
        now = svc.clock.now()
        assert consume_challenges_in(batch, [(req.challenge_id, now, Expect(nonce, "sim", 1, digest))]) == [None]
        # another connection cannot update the policy row meanwhile
        with svc.db.engine.connect() as other:
            other.execute(text("SET lock_timeout = '200ms'"))
            with pytest.raises(OperationalError, match="lock"):
                other.execute(text("UPDATE policies SET active_version = :v WHERE name = 'sim'"), {"v": v2})
            other.rollback()
        # an administrator's activation waits for this transaction
        worker = threading.Thread(target=lambda: (policies.activate(svc, "sim", v2, actor="admin"), done.set()))
        worker.start()
        assert not done.wait(0.5)
    worker.join(10)
    assert done.is_set()
    with svc.db.read() as s:
        assert s.execute(text("SELECT active_version FROM policies WHERE name = 'sim'")).scalar_one() == v2
        assert s.get(Challenge, req.challenge_id).consumed_at is not None  # the batch committed its claim


@pytest.mark.skipif(not use_postgres(), reason="the row lock is PostgreSQL's; SQLite serialises writers")
def test_a_claim_after_a_committed_activation_sees_it(ca):
    """The claim's UPDATE runs after its lock statement, with a snapshot of its own: an activation
    that committed while the claim waited for the policy row is what it checks against."""
    svc, tee = ca["svc"], ca["tee"]
    v2 = _new_version(svc, 12)
    req = _request(svc, tee)
    with svc.db.read() as s:
        nonce = s.get(Challenge, req.challenge_id).nonce
        digest = s.execute(text("SELECT digest FROM policy_versions WHERE name = 'sim' AND version = 1")).scalar_one()
    entered = threading.Event()
    result: list[Any] = []
    with svc.db.transaction() as admin:
        admin.execute(text("SELECT 1 FROM policies WHERE name = 'sim' FOR UPDATE"))
        admin.execute(text("UPDATE policies SET active_version = :v WHERE name = 'sim'"), {"v": v2})

        def claim() -> None:
            entered.set()
            with svc.db.transaction() as batch:
                result.extend(consume_challenges_in(
                    batch, [(req.challenge_id, svc.clock.now(), Expect(nonce, "sim", 1, digest))]))

        worker = threading.Thread(target=claim)
        worker.start()
        assert entered.wait(5)
        worker.join(0.5)
        assert worker.is_alive()  # waiting for the administrator's row lock
    worker.join(10)
    assert len(result) == 1 and type(result[0]).__name__ == "PolicyMoved"
    with svc.db.read() as s:
        assert s.get(Challenge, req.challenge_id).consumed_at is None
