"""Re-appraisal on an AMD collateral update (issue 14: "a CRL that revokes a VCEK or VLEK"), under test
ARKs only this CA pins (tests/unit/evidence/snp/fakeamd.py: AMD-shaped ARK -> ASK -> VCEK, RSASSA-PSS,
AMD extensions; ``CA_SERVICE_INSECURE_TEST_ROOTS=amd=...``), driven as test_reappraise_testroot.py drives
the Intel case: ``ca-service init`` + ``serve``, real issuances of SEV-SNP reports bound to the challenge,
``collateral import`` (vendor responses as KDS serves them, mapped by collateral/offered.py),
``reappraise --dry-run`` and ``reappraise``, the reads over HTTP.

AMD revokes per ASK: the ARK's CRL (KDS ``/vcek/v1/{line}/crl``) lists the ASK it withdrew, and every
VCEK under it falls with it. Two Milan chips and one Genoa chip each get a certificate under policies
that revoke, flag or leave; a new ARK-Milan CRL that lists ASK-Milan makes exactly the Milan chips'
certificates refused (evidence.certificate_revoked); Genoa's are not touched.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from ca_service.collateral.offered import offered_responses
from tests.integration.test_reappraise_testroot import ACTIONS, Ca, _check_state, running_ca
from tests.unit.evidence.snp.fakeamd import FakeAmd, make_report

REPO = Path(__file__).resolve().parents[2]
TCB = {"bl": 3, "tee": 0, "snp": 8, "ucode": 115}
CPUID = {"Milan": (0x19, 0x01, 0x01), "Genoa": (0x19, 0x11, 0x01)}
MEASUREMENT = "22" * 48  # make_report's launch measurement


def _policy(action: str) -> str:
    doc = (REPO / "policies" / "snp-cvm.yaml").read_text().replace("name: snp-cvm", f"name: snp-{action}")
    head, _, rest = doc.partition("    measurement:\n")
    rest = rest[rest.index("certificate:"):]
    return (head + f"    measurement: ['{MEASUREMENT}']\ncollateral:\n  on_collateral_update: {action}\n" + rest)


def _bundle(items: list[bytes], now: datetime) -> bytes:
    """The vendor responses KDS serves for these certificates and CRLs (the shipped mapping)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pairs, _ = offered_responses("snp-report", items, now)
    return json.dumps([resp.to_json() for _, resp in pairs]).encode()


@pytest.fixture(scope="module")
def amd() -> dict[str, Any]:
    now = datetime.now(UTC)
    lines = {line: FakeAmd(line) for line in ("Milan", "Genoa")}
    hosts = {}
    for name, line in (("milan-a", "Milan"), ("milan-b", "Milan"), ("genoa", "Genoa")):
        chip = os.urandom(64)
        key, vcek = lines[line].vek(chip_id=chip, tcb=TCB)
        hosts[name] = {"line": line, "chip": chip, "key": key, "vcek": vcek}
    crls = {line: f.crl(this_update=now - timedelta(hours=2), next_update=now + timedelta(days=30))
            for line, f in lines.items()}
    items = [b for line, f in lines.items() for b in (f.chain_pem(), crls[line])] + [h["vcek"] for h in hosts.values()]
    return {"now": now, "lines": lines, "hosts": hosts, "bundle": _bundle(items, now)}


@pytest.fixture
def ca(tmp_path_factory, db_url_factory, amd) -> Iterator[Ca]:
    arks = tmp_path_factory.mktemp("test-arks")
    roots = []
    for line, fake in amd["lines"].items():
        (arks / f"{line}.pem").write_bytes(fake.ark.public_bytes(Encoding.PEM))
        roots.append(f"amd={arks / f'{line}.pem'}")
    with running_ca(tmp_path_factory, db_url_factory(), ",".join(roots), {f"{a}.yaml": _policy(a) for a in ACTIONS},
                    amd["bundle"], None) as c:
        assert len(c.imported["added"]) == 7  # two cert_chains, two CRLs, three VCEKs
        yield c


def _report(host: dict[str, Any], binding: bytes) -> bytes:
    return make_report(host["key"], chip_id=host["chip"], cpuid=CPUID[host["line"]], report_data=binding)


def test_an_ark_crl_that_revokes_the_ask_affects_only_that_product_lines_certificates(ca, amd, tmp_path):
    issued = {}
    for name, host in amd["hosts"].items():
        for action in ACTIONS:
            r = ca.issue_with("snp-report", lambda b, h=host: _report(h, b), f"snp-{action}", name)
            assert r.status_code == 201, r.text
            used = {u["item"]: u["key"] for u in r.json()["appraisal"]["collateral"]["snp-report"]}
            assert used["amd.vcek_crl"] == host["line"]  # judged by the CA's own (cached) CRL of its line
            issued[(name, action)] = r.json()
    serial = {k: v["serial"] for k, v in issued.items()}
    milan = amd["lines"]["Milan"]
    crl = milan.crl(this_update=amd["now"] - timedelta(minutes=30), next_update=amd["now"] + timedelta(days=30),
                    revoked=(milan.ask.serial_number,))
    got = ca.import_bundle(tmp_path / "crl.json", _bundle([milan.chain_pem(), crl], amd["now"]))
    assert [u.rsplit("/", 1)[-1] for u in got["added"]] == ["crl"] and len(got["already_cached"]) == 1
    results = {r["serial"]: r for r in json.loads(ca.cli("reappraise", "--dry-run", "--json"))}
    changed = {s for s, r in results.items() if r["changed"]}
    assert changed == {serial[(h, a)] for h in ("milan-a", "milan-b") for a in ACTIONS}
    for s in changed:
        assert results[s]["before"] == "affirming" and results[s]["after"] == "refused"
        assert results[s]["reasons"][0].startswith("refused [evidence.certificate_revoked]"), results[s]
    for a in ACTIONS:
        assert (results[serial[("genoa", a)]]["after"], results[serial[("genoa", a)]]["reasons"]) == ("affirming", [])
    out = json.loads(ca.cli("reappraise", "--json"))
    assert {(x["serial"], x["action"]) for x in out["actions"]} == {
        (serial[(h, a)], a) for h in ("milan-a", "milan-b") for a in ACTIONS}
    refused = ("refused", "refused [evidence.certificate_revoked]")
    _check_state(ca, issued, {"milan-a": refused, "milan-b": refused})
    # new requests from a Milan chip are refused now; Genoa still issues
    r = ca.issue_with("snp-report", lambda b: _report(amd["hosts"]["milan-a"], b), "snp-ignore", "milan-a")
    assert r.status_code in (400, 403, 422) and r.json()["code"] == "evidence.certificate_revoked", r.text
    assert ca.issue_with("snp-report", lambda b: _report(amd["hosts"]["genoa"], b), "snp-ignore",
                         "genoa").status_code == 201
