"""configfs-tsm and CCEL collection against a fake kernel tree holding real vector bytes."""

from __future__ import annotations

import base64
import struct
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca_service.agent import tsm
from ca_service.agent.client import AgentError
from ca_service.agent.tee import TsmEvidenceSource
from tests.unit.agent.fake_tsm import FakeConfigfs, fake_ccel
from tests.vectors.manifest import vectors_for

GCE = {v.path: v for v in vectors_for("tdx-eventlog")}["tdx-eventlog/gce-cos113-ccel"]
SNP = {v.path: v for v in vectors_for("snp")}["snp/milan-virtee-vcek"]
RD = bytes(range(64))
NEEDS_LOG = {"required": ["tdx-quote"], "items": {"tdx-quote": {"event_log": True}}}
NO_LOG = {"required": ["tdx-quote"], "items": {"tdx-quote": {"event_log": False}}}


def _der(pem_or_der: bytes) -> bytes:
    if pem_or_der.startswith(b"-----"):
        return x509.load_pem_x509_certificate(pem_or_der).public_bytes(Encoding.DER)
    return pem_or_der


def cert_table(entries: list[tuple[str, bytes]]) -> bytes:
    """GHCB 4.1.8.1: {GUID, offset u32, length u32}[] + a zero entry, then the certificates."""
    head = 24 * (len(entries) + 1)
    table, blobs = b"", b""
    for guid, der in entries:
        table += uuid.UUID(guid).bytes + struct.pack("<II", head + len(blobs), len(der))
        blobs += der
    return table + bytes(24) + blobs


def test_tdx_quote_from_the_provider(tmp_path: Path, monkeypatch):
    fs = FakeConfigfs(tmp_path, "tdx_guest", GCE.read("quote")).install(monkeypatch)
    rep = tsm.tsm_request(RD, fs.root)
    assert (rep.kind, rep.provider, rep.outblob) == ("tdx-quote", "tdx_guest", GCE.read("quote"))
    assert fs.inblobs == [RD]  # our report data went in
    assert list(fs.root.iterdir()) == []  # and the entry was released
    assert tsm.tsm_report(RD, fs.root) == ("tdx-quote", GCE.read("quote"))


def test_unknown_provider_and_bad_report_data(tmp_path: Path, monkeypatch):
    fs = FakeConfigfs(tmp_path, "arm_cca_guest", b"token").install(monkeypatch)
    with pytest.raises(tsm.TsmError, match="unsupported configfs-tsm provider 'arm_cca_guest'"):
        tsm.tsm_request(RD, fs.root)
    assert list(fs.root.iterdir()) == []
    with pytest.raises(ValueError):
        tsm.tsm_request(RD[:32], fs.root)


def test_a_generation_change_while_reading_is_refused(tmp_path: Path, monkeypatch):
    fs = FakeConfigfs(tmp_path, "tdx_guest", GCE.read("quote")).install(monkeypatch)
    seen = iter([1, 2])
    monkeypatch.setattr(tsm, "_read_int", lambda path: next(seen))
    with pytest.raises(tsm.TsmError, match="written by someone else"):
        tsm.tsm_request(RD, fs.root)
    assert list(fs.root.iterdir()) == []


def test_snp_report_and_the_hosts_certificate_table(tmp_path: Path, monkeypatch):
    vcek, ask, ark = _der(SNP.read("vek")), _der(SNP.read("ask")), _der(SNP.read("ark"))
    aux = cert_table([("63da758d-e664-4564-adc5-f4b93be8accd", vcek), ("4ab7b379-bbac-4fe4-a02f-05aef327c782", ask),
                      ("c0b406a4-a803-4952-9743-3fb6014cd0ae", ark),
                      ("00000000-0000-0000-0000-0000000000aa", b"unknown entry")])
    fs = FakeConfigfs(tmp_path, "sev_guest", SNP.read("report"), aux).install(monkeypatch)
    rep = tsm.tsm_request(RD, fs.root, privlevel=0)
    assert rep.kind == "snp-report" and rep.outblob == SNP.read("report")
    assert rep.certificates == {"vcek": vcek, "ask": ask, "ark": ark}
    assert fs.privlevels == ["0"]
    src = TsmEvidenceSource(needs=None, root=fs.root)
    kind, blob, extra = src(RD)[0]
    assert kind == "snp-report" and sorted(base64.b64decode(c) for c in extra["collateral"]) == sorted([vcek, ask, ark])
    assert "event_log" not in extra


def test_certificate_table_pointing_outside_is_refused():
    bad = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd").bytes + struct.pack("<II", 48, 4096) + bytes(24)
    with pytest.raises(tsm.TsmError):
        tsm.snp_certificates(bad)


def test_ccel_sent_only_when_the_policy_needs_it(tmp_path: Path, monkeypatch):
    fs = FakeConfigfs(tmp_path, "tdx_guest", GCE.read("quote")).install(monkeypatch)
    ccel = fake_ccel(tmp_path, GCE.read("ccel"))
    src = TsmEvidenceSource(needs=NEEDS_LOG, root=fs.root, ccel_path=ccel)
    kind, blob, extra = src(RD)[0]
    assert kind == "tdx-quote" and blob == GCE.read("quote")
    assert base64.b64decode(extra["event_log"]) == GCE.read("ccel")  # the whole log area, padding included
    assert f"event log: CCEL from {ccel} (262144 bytes)" in src.notes
    _, _, extra = TsmEvidenceSource(needs=NO_LOG, root=fs.root, ccel_path=ccel)(RD)[0]
    assert extra == {}
    _, _, extra = TsmEvidenceSource(needs=NO_LOG, event_log="always", root=fs.root, ccel_path=ccel)(RD)[0]
    assert "event_log" in extra
    _, _, extra = TsmEvidenceSource(needs=NEEDS_LOG, event_log="never", root=fs.root, ccel_path=ccel)(RD)[0]
    assert extra == {}


def test_needed_log_that_is_missing_is_an_agent_error(tmp_path: Path, monkeypatch):
    fs = FakeConfigfs(tmp_path, "tdx_guest", GCE.read("quote")).install(monkeypatch)
    src = TsmEvidenceSource(needs=NEEDS_LOG, root=fs.root, ccel_path=tmp_path / "no-such-CCEL")
    with pytest.raises(AgentError, match="does not exist"):
        src(RD)
    assert tsm.read_ccel(tmp_path / "no-such-CCEL") is None
