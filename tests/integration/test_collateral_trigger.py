"""Re-appraisal on collateral updates, triggered the way an operator meets them (issue 14): collateral
arriving by ``ca-service collateral import`` and ``collateral refresh`` (the loopback replay of Intel PCS)
is compared with what the CA held; the resources that changed in a way that can change a verdict are
reported, and exactly the certificates whose evidence needs them are re-appraised and revoked, flagged
or left as their policy versions say.

The data is real: the TDX quote ``dcapqvl-v4-uptodate`` (FMSPC B0C06F000000) was UpToDate under Intel's
TCB evaluation 17 (June 2025); the ``nearmpc-dstack-json`` vector carries the collateral Intel published
for that FMSPC in August 2026, evaluation 20 (a TCB recovery: the same quote is OutOfDate there, with
INTEL-SA-01192 and three more), QE Identity evaluation 19, and a PCK CRL listing 13 more certificates.
Judged now, that collateral is past its window: the re-appraisal refuses, a worse verdict, and the
policies act on it. The quote ``gcp-c3-v4-uptodate`` (FMSPC 00806F050000) is the bystander: judged now
it would be refused too, so it shows that only the certificates a change concerns are touched.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner
from cryptography import x509
from sqlalchemy import select

from ca_service.cli.main import cli
from ca_service.collateral.changes import _change
from ca_service.db.models.collateral import CollateralItem
from ca_service.db.models.tlog import TlogEntry
from ca_service.services import collateral as cs
from ca_service.services import policies
from ca_service.tlog.leaves import decode_leaf
from tests.collateral import replay
from tests.collateral.fixtures import fresh_services
from tests.collateral.make_bundle import intel_entries
from tests.collateral.recorded import record, vector
from tests.integration.ports import free_port as _free_port

RECOVERED = "tdx/dcapqvl-v4-uptodate"  # FMSPC b0c06f000000, TCB evaluation 17 -> 20
BYSTANDER = "tdx/gcp-c3-v4-uptodate"  # FMSPC 00806f050000
NEW = vector("tdx-eventlog/nearmpc-dstack-json").dir / "collateral"

POLICY = """
name: {name}
description: TDX CVMs, up to date
evidence:
  required: [tdx-quote]
  tdx-quote:
    tcb_status: [UpToDate]
    debug: false
certificate:
  max_lifetime: 24h
collateral:
  on_collateral_update: {action}
"""


def _entries(v) -> list[dict]:
    return intel_entries(v.dir / v.files["collateral"].split("/")[0])


def _tcb_only(entries: list[dict]) -> list[dict]:
    return [e for e in entries if "/tcb?" in e["url"]]


@pytest.fixture
def ca(tmp_path_factory, db_url_factory, monkeypatch):
    """A CA holding the June 2025 collateral of both quotes, with certificates: the recovered quote
    under a revoke policy and under a warn policy, the bystander under the revoke policy."""
    svc = fresh_services(tmp_path_factory, db_url_factory)
    refs = {}
    for name, action in (("tdx-revoke", "revoke"), ("tdx-warn", "warn")):
        refs[name], _ = policies.apply_policy(svc, POLICY.format(name=name, action=action), actor="test")
    recovered, bystander = vector(RECOVERED), vector(BYSTANDER, "collateral-2025-06")
    cs.import_bundle(svc, json.dumps(_entries(recovered) + _entries(bystander)).encode())
    serials = {"revoked": record(svc, refs["tdx-revoke"], recovered),
               "flagged": record(svc, refs["tdx-warn"], recovered),
               "bystander": record(svc, refs["tdx-revoke"], bystander)}
    monkeypatch.setenv("CA_SERVICE_HOME", str(svc.settings.home))
    monkeypatch.setenv("CA_SERVICE_DATABASE_URL", svc.settings.database_url)
    monkeypatch.delenv("CA_SERVICE_COLLATERAL_MIRRORS", raising=False)
    yield svc, serials
    svc.close()


def _status(svc, serial: str) -> dict:
    from ca_service.api.app import create_app

    return create_app(services=svc).test_client().get(f"/v1/certificates/{serial}").get_json()


def _crl_reasons(svc) -> dict[str, x509.ReasonFlags | None]:
    from ca_service.api.app import create_app

    crl = x509.load_der_x509_crl(create_app(services=svc).test_client().get("/v1/ca/crl").data)
    out = {}
    for e in crl:
        try:
            out[format(e.serial_number, "x")] = e.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            out[format(e.serial_number, "x")] = None
    return out


def _leaves(svc, serials) -> list[tuple[str, str]]:
    with svc.db.read() as session:
        leaves = [decode_leaf(e.leaf) for e in session.scalars(select(TlogEntry))]
    return [(lf.type, lf.body["serial"]) for lf in leaves if lf.body.get("serial") in serials]


def _assert_acted(svc, serials, *, bystander_touched: bool = False) -> None:
    revoked, flagged, bystander = serials["revoked"], serials["flagged"], serials["bystander"]
    crl = _crl_reasons(svc)
    assert _status(svc, revoked)["status"] == "revoked"
    assert crl[revoked] == x509.ReasonFlags.privilege_withdrawn
    got = _status(svc, flagged)
    assert got["status"] == "valid" and flagged not in crl
    flag = got["appraisal"]["reappraisal"]
    assert (flag["before"], flag["after"]) == ("affirming", "refused")
    assert flag["reasons"][0].startswith("refused [evidence.collateral_expired]")
    expected = [("revocation", revoked), ("reappraisal", flagged)]
    if not bystander_touched:
        assert _status(svc, bystander)["status"] == "valid" and bystander not in crl
        assert "reappraisal" not in _status(svc, bystander)["appraisal"]
    assert sorted(_leaves(svc, serials.values())) == sorted(expected + ([("revocation", bystander)]
                                                                        if bystander_touched else []))


def test_import_reports_what_changed_on_real_collateral(ca):
    """Newer collateral with the same evaluation number and the same revocations (Intel's re-issue of
    June's data in October) is no change; a TCB recovery, a new QE Identity evaluation and a CRL with
    new entries are."""
    svc, _ = ca
    october = _entries(vector(BYSTANDER, "collateral-2025-10"))
    result = cs.import_bundle(svc, json.dumps(october).encode())
    assert len(result.added) == 3 and result.changed == []  # TCB Info, QE Identity, PCK CRL re-issued
    result = cs.import_bundle(svc, json.dumps(intel_entries(NEW)).encode())
    got = {(c.kind, c.key): c.reason for c in result.changed}
    assert got == {("intel.tcb_info.tdx", "b0c06f000000"): "tcbEvaluationDataNumber 17 -> 20",
                   ("intel.qe_identity.tdx", "TD_QE"): "tcbEvaluationDataNumber 17 -> 19",
                   ("intel.pck_crl", "platform"): "CRL revokes 13 more certificate(s)"}
    assert cs.import_bundle(svc, json.dumps(intel_entries(NEW)).encode()).changed == []  # all cached now


def test_collateral_import_cli_revokes_and_flags_only_what_the_change_concerns(ca):
    svc, serials = ca
    bundle = svc.settings.home / "tcb.json"
    bundle.write_text(json.dumps(_tcb_only(intel_entries(NEW))))
    res = CliRunner().invoke(cli, ["collateral", "import", str(bundle)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "changed\tintel.tcb_info.tdx\tb0c06f000000\ttcbEvaluationDataNumber 17 -> 20" in res.output
    assert "re-appraised 2 certificate(s): revoked 1, flagged 1, ignored 0" in res.output
    assert f"revoke\t{serials['revoked']}\taffirming -> refused" in res.output
    _assert_acted(svc, serials)
    # the rest of August 2026: the TDX QE Identity changed, which every TDX certificate needs; the
    # bystander is judged now, and the flagged one is not flagged twice for the same finding
    bundle.write_text(json.dumps(intel_entries(NEW)))
    res = CliRunner().invoke(cli, ["collateral", "import", str(bundle), "--json"], catch_exceptions=False)
    out = json.loads(res.output)
    assert {(c["kind"], c["key"]) for c in out["changed"]} == {("intel.qe_identity.tdx", "TD_QE"),
                                                                ("intel.pck_crl", "platform")}
    assert {(a["serial"], a["action"]) for a in out["reappraisal"]["actions"]} == {(serials["bystander"], "revoke")}, \
        [r["reasons"] for r in out["reappraisal"]["reappraised"]]
    _assert_acted(svc, serials, bystander_touched=True)


def test_import_no_reappraise_leaves_certificates_to_the_duty(ca):
    svc, serials = ca
    bundle = svc.settings.home / "tcb.json"
    bundle.write_text(json.dumps(_tcb_only(intel_entries(NEW))))
    res = CliRunner().invoke(cli, ["collateral", "import", str(bundle), "--no-reappraise"], catch_exceptions=False)
    assert res.exit_code == 0 and "not re-appraised (--no-reappraise)" in res.output
    assert all(_status(svc, s)["status"] == "valid" for s in serials.values())
    assert _leaves(svc, serials.values()) == []
    # the duty had never run on this CA: the import recorded where it starts, so its first run judges them
    from ca_service.services import collateral_duty

    out = collateral_duty.run(svc, trigger="worker", actor="collateral-duty")
    assert [c.resource for c in out.changes] == [("intel.tcb_info.tdx", "b0c06f000000")]
    _assert_acted(svc, serials)


def test_collateral_refresh_against_the_vendor_replay(ca):
    """``collateral refresh`` fetches from the loopback replay of Intel PCS (serving the August 2026 TCB
    Info and, unchanged, the rest of what the CA holds) and re-appraises what the change concerns."""
    svc, serials = ca
    served = _entries(vector(RECOVERED)) + _entries(vector(BYSTANDER, "collateral-2025-06"))
    served = [e for e in served if "fmspc=B0C06F000000" not in e["url"]] + _tcb_only(intel_entries(NEW))
    with replay.serve(served) as (app, base):
        res = CliRunner().invoke(cli, ["collateral", "refresh", "--within", "3650d", *replay.mirror_args(base)],
                                 catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "/tdx/certification/v4/tcb?fmspc=B0C06F000000" in app.requests
    assert "refreshed 1, unchanged" in res.output
    assert "re-appraised 2 certificate(s): revoked 1, flagged 1, ignored 0" in res.output
    _assert_acted(svc, serials)


def test_a_crl_that_adds_no_entry_is_no_change():
    """The CRL rule on its own (the rows as the cache holds them; ``_change`` reads only the entries)."""
    from datetime import UTC, datetime

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CRL issuer")])
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def row(i: int, serials: list[int], days: int) -> CollateralItem:
        b = x509.CertificateRevocationListBuilder().issuer_name(name).last_update(t0 + timedelta(days=days)) \
            .next_update(t0 + timedelta(days=days + 30))
        for s in serials:
            b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(s)
                                          .revocation_date(t0).build())
        from cryptography.hazmat.primitives.serialization import Encoding

        return CollateralItem(id=i, kind="amd.vcek_crl", key="Milan", url="u", body=b.sign(key, hashes.SHA384())
                              .public_bytes(Encoding.DER), issue_date=t0 + timedelta(days=days))

    old = [row(1, [1, 2], 0)]
    assert _change([row(2, [1, 2], 1)], old) is None
    assert _change([row(2, [2, 1], 1), row(3, [1], 2)], old) is None  # fewer entries: nothing newly revoked
    assert _change([row(2, [1, 2, 3], 1)], old) == "CRL revokes 1 more certificate(s)"
    assert _change([row(2, [1, 2, 3], -1)], old) is None  # an older CRL arriving late
    assert _change([row(2, [1], 1)], []) == "first amd.vcek_crl held"


def test_the_duty_serve_runs_refreshes_and_acts(ca):
    """``ca-service serve`` (two gunicorn workers, each with the duty thread; one holds the lock at a
    time), online with the replay as its PCS mirror: the duty refreshes, finds the TCB recovery, and
    the certificates are revoked and flagged over HTTP, with CRL, OCSP and metrics saying so."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    import requests
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509 import ocsp

    from ca_service.db.models import Certificate

    svc, serials = ca
    served = _entries(vector(RECOVERED)) + _entries(vector(BYSTANDER, "collateral-2025-06"))
    served = [e for e in served if "fmspc=B0C06F000000" not in e["url"]] + _tcb_only(intel_entries(NEW))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with replay.serve(served) as (app, base):
        env = {**os.environ, "CA_SERVICE_HOME": str(svc.settings.home), "CA_SERVICE_PROFILE": "insecure-dev",
               "CA_SERVICE_DATABASE_URL": svc.settings.database_url, "CA_SERVICE_PUBLIC_URL": svc.settings.public_url,
               "CA_SERVICE_COLLATERAL": "online",
               "CA_SERVICE_COLLATERAL_MIRRORS": ",".join(f"{h}={base}" for h in sorted(replay.ALLOWED_HOSTS)),
               "CA_SERVICE_COLLATERAL_REFRESH_INTERVAL_SECONDS": "2", "CA_SERVICE_COLLATERAL_REFRESH_WITHIN": "3650d"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        proc = subprocess.Popen([sys.executable, "-m", "ca_service.cli", "serve", "--bind", f"127.0.0.1:{port}",
                                 "--workers", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            deadline = time.time() + 90
            status = None
            while time.time() < deadline and status != "revoked":
                try:
                    status = requests.get(f"{url}/v1/certificates/{serials['revoked']}", timeout=5).json()["status"]
                except requests.RequestException:
                    pass
                time.sleep(0.5)
            assert status == "revoked", "the duty did not revoke within 90 s"
            assert "/tdx/certification/v4/tcb?fmspc=B0C06F000000" in app.requests
            # the flag is written in the same run, in its own transaction: waited for, not slept for (a
            # loaded box can take longer than any fixed pause between the two)
            while True:
                flagged = requests.get(f"{url}/v1/certificates/{serials['flagged']}", timeout=5).json()
                if "reappraisal" in flagged["appraisal"] or time.time() > deadline:
                    break
                time.sleep(0.2)
            assert flagged["status"] == "valid"
            assert flagged["appraisal"]["reappraisal"]["after"] == "refused"
            bystander = requests.get(f"{url}/v1/certificates/{serials['bystander']}", timeout=5).json()
            assert bystander["status"] == "valid" and "reappraisal" not in bystander["appraisal"]
            crl = x509.load_der_x509_crl(requests.get(f"{url}/v1/ca/crl", timeout=5).content)
            assert {format(e.serial_number, "x") for e in crl} & set(serials.values()) == {serials["revoked"]}
            with svc.db.read() as session:
                der = {c.serial: c.der for c in session.query(Certificate)}
            issuing = svc.keys.certificate("issuing")
            for name, want in (("revoked", ocsp.OCSPCertStatus.REVOKED), ("bystander", ocsp.OCSPCertStatus.GOOD)):
                req = ocsp.OCSPRequestBuilder().add_certificate(x509.load_der_x509_certificate(der[serials[name]]),
                                                                issuing, hashes.SHA256()).build()
                r = requests.post(f"{url}/v1/ocsp", data=req.public_bytes(Encoding.DER), timeout=5,
                                  headers={"Content-Type": "application/ocsp-request"})
                assert ocsp.load_der_ocsp_response(r.content).certificate_status == want
            metrics = requests.get(f"{url}/metrics", timeout=5).text

            def metric(name: str, labels: str) -> float:
                m = re.search(rf"^{re.escape(name)}{re.escape('{' + labels + '}' if labels else '')} (\S+)$", metrics,
                              re.M)
                assert m is not None, (name, labels)
                return float(m.group(1))

            assert metric("ca_service_collateral_duty_runs_total", 'outcome="done",trigger="worker"') >= 1
            assert metric("ca_service_reappraisals_total", 'action="revoke",policy="tdx-revoke"') == 1
            assert metric("ca_service_reappraisals_total", 'action="warn",policy="tdx-warn"') == 1
            assert metric("ca_service_collateral_changes_total", 'kind="intel.tcb_info.tdx"') == 1
            assert metric("ca_service_collateral_duty_last_run_age_seconds", "") < 60
            assert requests.get(f"{url}/readyz", timeout=5).json()["status"] == "ready"
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    # one run judged the change: every later run (every 2 s, in either worker) found nothing new
    assert sorted(_leaves(svc, serials.values())) == sorted([("revocation", serials["revoked"]),
                                                             ("reappraisal", serials["flagged"])])


def test_an_nvidia_ocsp_answer_changes_only_when_the_status_does():
    from datetime import UTC, datetime

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509 import ocsp
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP384R1())
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def cert(cn: str, serial: int) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(serial).not_valid_before(t0).not_valid_after(t0 + timedelta(days=365))
                .sign(key, hashes.SHA384()))

    issuer, device = cert("test GPU CA", 1), cert("test GPU", 2)

    def row(i: int, status: ocsp.OCSPCertStatus, hours: int) -> CollateralItem:
        at = t0 + timedelta(hours=hours)
        revoked = (at, None) if status is ocsp.OCSPCertStatus.REVOKED else (None, None)
        resp = (ocsp.OCSPResponseBuilder().add_response(device, issuer, hashes.SHA384(), status, at,
                                                        at + timedelta(days=1), *revoked)
                .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer).sign(key, hashes.SHA384()))
        return CollateralItem(id=i, kind="nvidia.ocsp", key="k/2", url="u", body=resp.public_bytes(Encoding.DER),
                              issue_date=at)

    old = [row(1, ocsp.OCSPCertStatus.GOOD, 0)]
    assert _change([row(2, ocsp.OCSPCertStatus.GOOD, 6)], old) is None  # re-issued every few hours
    assert _change([row(2, ocsp.OCSPCertStatus.REVOKED, 6)], old) == "OCSP status good -> revoked"


def test_dry_run_inside_the_new_window_shows_the_real_tcb_recovery(ca):
    """As of 2026-08-20 (inside the August 2026 collateral's window) the real quote is no longer refused
    for age: the dry run shows Intel's TCB recovery itself, UpToDate -> OutOfDate with four advisories."""
    svc, serials = ca
    bundle = svc.settings.home / "new.json"
    bundle.write_text(json.dumps(intel_entries(NEW)))
    assert CliRunner().invoke(cli, ["collateral", "import", "--no-reappraise", str(bundle)]).exit_code == 0
    res = CliRunner().invoke(cli, ["reappraise", "--dry-run", "--at", "2026-08-20T00:00:00Z"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    advisories = "+INTEL-SA-01192 +INTEL-SA-01245 +INTEL-SA-01312 +INTEL-SA-01313"
    for name, policy in (("revoked", "tdx-revoke"), ("flagged", "tdx-warn")):
        assert (f"{serials[name]}\t{policy}\taffirming -> contraindicated\tCHANGED\n"
                f"\ttdx-quote: TCB status UpToDate -> OutOfDate\n\ttdx-quote: advisories {advisories}\n"
                "\tpolicy check tcb_status failed: expected ['UpToDate'], got OutOfDate") in res.output, res.output
    assert all(_status(svc, s)["status"] == "valid" for s in serials.values())  # a dry run changes nothing


def test_collateral_refresh_loop_is_the_duty_in_the_foreground(ca):
    """``collateral refresh --loop`` for a CA whose serve runs without the duty: the same runs, printed."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    svc, serials = ca
    served = _entries(vector(RECOVERED)) + _entries(vector(BYSTANDER, "collateral-2025-06"))
    served = [e for e in served if "fmspc=B0C06F000000" not in e["url"]] + _tcb_only(intel_entries(NEW))
    with replay.serve(served) as (app, base):
        env = {**os.environ, "CA_SERVICE_HOME": str(svc.settings.home), "CA_SERVICE_PROFILE": "insecure-dev",
               "CA_SERVICE_DATABASE_URL": svc.settings.database_url}
        proc = subprocess.Popen([sys.executable, "-m", "ca_service.cli", "collateral", "refresh", "--loop",
                                 "--interval", "1", "--within", "3650d", *replay.mirror_args(base)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        try:
            # at least one more run after the one that acted: it finds nothing new. Waited for by its
            # line, not a fixed pause a loaded box can outlast (the run then got the SIGINT mid-way)
            def acted_then_idle() -> bool:
                text = "".join(lines)
                return "re-appraised" in text and "no resource changed" in text[text.index("re-appraised"):]

            deadline = time.time() + 90
            while time.time() < deadline and not acted_then_idle():
                time.sleep(0.2)
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=30)
            reader.join(30)
    out = "".join(lines)
    assert proc.returncode == 0, out
    assert "changed\tintel.tcb_info.tdx\tb0c06f000000\ttcbEvaluationDataNumber 17 -> 20" in out
    assert out.count("re-appraised 2 certificate(s): revoked 1, flagged 1, ignored 0") == 1, out
    assert "no resource changed in a way that can change a verdict" in out
    _assert_acted(svc, serials)


VLEK_POLICY = """
name: snp-vlek
description: SEV-SNP on a CSP's VLEK (AWS), the VLEK CRL not held
evidence:
  required: [snp-report]
  snp-report:
    signing_key: [vlek]
    debug: false
revocation:
  allow_unchecked: true
certificate:
  max_lifetime: 24h
"""


def test_a_vlek_report_is_re_appraised_with_the_vlek_it_was_sent_with(tmp_path_factory, db_url_factory):
    """AMD KDS publishes no VLEKs: the request's VLEK (kept as a blob) judges the report again, so an
    unchanged verdict stays unchanged rather than turning into a refusal for a VLEK the CA never had."""
    from ca_service.services.reappraisal import reappraise

    svc = fresh_services(tmp_path_factory, db_url_factory)
    try:
        ref, _ = policies.apply_policy(svc, VLEK_POLICY, actor="test")
        v = vector("snp/milan-aws-vlek")
        serial = record(svc, ref, v, "snp-report", evidence=v.read("report"),
                        collateral=[v.read("vek"), v.read("cert_chain")], allow_unchecked_revocation=True)
        [r] = reappraise(svc, at=v.verify_time)
        assert (r.serial, r.before, r.after, r.changed, r.reasons) == (serial, "warning", "warning", False, ())
        [r] = reappraise(svc, at=v.verify_time + timedelta(days=400))  # past the VLEK's validity
        assert r.after == "refused" and "evidence.certificate_expired" in r.reasons[0], r.reasons
    finally:
        svc.close()
