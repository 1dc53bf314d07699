"""The test Intel PKI (tests/collateral/testroot.py) is judged by the production code, and only where
its root is pinned: ``ca_service.evidence.verify`` with the test root accepts its quotes and reports the
TCB status its TCB Info gives; with the vendor pins alone, or after any change to a signed byte, it
refuses. The CA pins it only through ``CA_SERVICE_INSECURE_TEST_ROOTS``, which production refuses."""

from __future__ import annotations

import json
import os
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from ca_service.collateral import endpoints
from ca_service.collateral.fetchers import load_bundle
from ca_service.collateral.verify import verify_response
from ca_service.config import Settings
from ca_service.errors import ConfigurationError, EvidenceError
from ca_service.evidence import DEFAULT_ROOTS, verify
from ca_service.evidence.intel.parse import HEADER_LEN, parse_quote
from ca_service.evidence.intel.pck import parse_pck_extension
from ca_service.evidence.trust import is_pinned
from ca_service.services.roots import InsecureTestRootsWarning, with_test_roots
from tests.collateral.testroot import REAL_CPU_SVN, SGX_SHAPE, TestIntel

TI = TestIntel()
OLD = TI.platform("old")
PATCHED = TI.platform("patched", cpu_svn=(9, 9, *REAL_CPU_SVN[2:]))
OTHER = TI.platform("other", fmspc=bytes.fromhex("00906ed50000"))
N = TI.collateral(OLD.fmspc, evaluation=20)
RECOVERY = TI.collateral(OLD.fmspc, evaluation=21, levels=TI.tcb_levels(recovery="INTEL-SA-TEST1"))


def _code(quote: bytes, doc: bytes, roots=TI.roots) -> str:
    try:
        verify("tdx-quote", quote, collateral=[doc], at=TI.now, roots=roots)
    except EvidenceError as exc:
        return exc.code
    return "ok"


def test_the_pck_certificate_carries_the_sgx_extension_of_a_real_one():
    info = parse_pck_extension(PATCHED.cert)
    assert (info.fmspc, info.cpu_svn, info.pce_svn, info.pce_id) == (OLD.fmspc, PATCHED.cpu_svn, 11, b"\x00\x00")
    assert parse_pck_extension(OTHER.cert).fmspc == bytes.fromhex("00906ed50000")
    q = parse_quote(TI.quote(OLD, bytes(range(64))))
    assert q.header.version == 4 and q.cert_type == 5 and q.body.report_data == bytes(range(64))


def test_the_verifier_accepts_it_under_the_test_root_and_reports_the_tcb_recovery():
    quote = TI.quote(OLD, os.urandom(64))
    ve = verify("tdx-quote", quote, collateral=[N], at=TI.now, roots=TI.roots)
    assert (ve.tcb_status, ve.advisory_ids, ve.claims["tcb_evaluation_data_number"]) == ("UpToDate", (), 20)
    ve = verify("tdx-quote", quote, collateral=[RECOVERY], at=TI.now, roots=TI.roots)
    assert (ve.tcb_status, ve.advisory_ids) == ("OutOfDate", ("INTEL-SA-TEST1",))
    # the patched host meets the new top level; the PCK CRL that lists it is a refusal
    assert verify("tdx-quote", TI.quote(PATCHED, os.urandom(64)), collateral=[RECOVERY], at=TI.now,
                  roots=TI.roots).tcb_status == "UpToDate"
    revoking = TI.collateral(OLD.fmspc, evaluation=20, pck_crl=TI.pck_crl((PATCHED,), number=2))
    assert _code(TI.quote(PATCHED, os.urandom(64)), revoking) == "evidence.certificate_revoked"
    assert _code(quote, revoking) == "ok"
    # another FMSPC's TCB Info does not belong to this host
    assert _code(quote, TI.collateral(OTHER.fmspc, evaluation=20)) == "evidence.collateral_mismatch"


def test_the_vendor_pins_alone_refuse_it():
    assert not is_pinned(TI.root, DEFAULT_ROOTS.intel)
    assert _code(TI.quote(OLD, bytes(64)), N, roots=DEFAULT_ROOTS) == "evidence.root_untrusted"


@pytest.mark.parametrize("offset", [8, HEADER_LEN + 136, HEADER_LEN + 520, 632 + 4 + 10, 632 + 4 + 64 + 5,
                                    632 + 4 + 128 + 6 + 100, 632 + 4 + 128 + 6 + 384 + 7])
def test_a_changed_signed_byte_is_refused(offset):
    """Header (QE SVN), MRTD, report data, quote signature, attestation key, QE report, QE report signature."""
    quote = bytearray(TI.quote(OLD, bytes(64)))
    quote[offset] ^= 0x01
    assert _code(bytes(quote), N) == "evidence.signature_invalid"


def test_a_re_signed_tcb_info_byte_is_refused():
    doc = json.loads(N)
    doc["tcb_info"] = doc["tcb_info"].replace('"tcbEvaluationDataNumber":20', '"tcbEvaluationDataNumber":99')
    assert _code(TI.quote(OLD, bytes(64)), json.dumps(doc).encode()) == "evidence.collateral_invalid"


def test_its_bundle_is_what_pcs_serves_and_verifies_only_under_the_test_root():
    responses = load_bundle(TI.bundle(N))
    assert sorted(r.url.split("?")[0].rsplit("/", 1)[-1] for r in responses) == [
        "IntelSGXRootCA.der", "identity", "pckcrl", "tcb"]
    for r in responses:
        ep = endpoints.parse_url(r.url)
        assert verify_response(ep, r, TI.roots).key in (OLD.fmspc.hex(), "TD_QE", "platform", "root")
        with pytest.raises(EvidenceError) as info:
            verify_response(ep, r, DEFAULT_ROOTS)
        # the Root CA CRL has no chain: signed by a root that is not the Intel SGX Root CA it is refused
        assert info.value.code in ("evidence.root_untrusted", "evidence.collateral_invalid")


def test_the_setting_pins_the_root_in_insecure_dev_only(tmp_path: Path):
    root = TI.write_root(tmp_path / "root.pem")
    env = {"CA_SERVICE_PROFILE": "insecure-dev", "CA_SERVICE_INSECURE_TEST_ROOTS": f"intel={root}",
           "CA_SERVICE_HOME": str(tmp_path)}
    settings = Settings.from_env(env)
    assert settings.insecure_test_roots == (("intel", root),)
    with pytest.warns(InsecureTestRootsWarning):
        roots = with_test_roots(DEFAULT_ROOTS, settings.with_(insecure_test_roots=(("intel", root), ("nitro", root))))
    assert is_pinned(TI.root, roots.intel) and is_pinned(TI.root, roots.nitro) and not is_pinned(TI.root, roots.amd)
    assert DEFAULT_ROOTS.intel < roots.intel and roots.intel_certs == (TI.root.public_bytes(Encoding.DER),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _code(TI.quote(OLD, bytes(64)), N, roots=with_test_roots(DEFAULT_ROOTS, settings)) == "ok"
    with pytest.raises(ConfigurationError, match="refused in the production profile"):
        Settings.from_env({**env, "CA_SERVICE_PROFILE": "production"})
    with pytest.raises(ConfigurationError, match="refused in the production profile"):
        Settings(home=tmp_path, insecure_test_roots=(("intel", root),))
    for bad in ("intel", f"tpm={root}", f"={root}"):
        with pytest.raises(ConfigurationError):
            Settings.from_env({**env, "CA_SERVICE_INSECURE_TEST_ROOTS": bad})
    with pytest.raises(ConfigurationError, match="no PEM certificate"):
        with_test_roots(DEFAULT_ROOTS, settings.with_(insecure_test_roots=(("intel", tmp_path / "missing.pem"),)))
    assert with_test_roots(DEFAULT_ROOTS, Settings.from_env({"CA_SERVICE_HOME": str(tmp_path)})) is DEFAULT_ROOTS


def test_collateral_import_without_the_setting_refuses_the_test_bundle(tmp_path, tmp_path_factory, db_url_factory):
    from click.testing import CliRunner

    from ca_service.cli.main import cli
    from tests.collateral.fixtures import fresh_services

    svc = fresh_services(tmp_path_factory, db_url_factory)
    try:
        (tmp_path / "b.json").write_bytes(TI.bundle(N, fetched_at=TI.now - timedelta(minutes=1)))
        env = {"CA_SERVICE_HOME": str(svc.settings.home), "CA_SERVICE_DATABASE_URL": svc.settings.database_url,
               "CA_SERVICE_PROFILE": "insecure-dev"}
        res = CliRunner().invoke(cli, ["collateral", "import", str(tmp_path / "b.json")], env=env)
        assert res.exit_code == 1 and "evidence.root_untrusted" in res.output
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            root = TI.write_root(tmp_path / "root.pem")
            res = CliRunner().invoke(cli, ["collateral", "import", str(tmp_path / "b.json")],
                                     env={**env, "CA_SERVICE_INSECURE_TEST_ROOTS": f"intel={root}"})
        assert res.exit_code == 0 and res.output.startswith("imported 4 item(s)"), res.output
    finally:
        svc.close()


def test_an_sgx_v3_quote_of_the_sgx_shape_verifies_and_reports_the_recovery():
    sgx = TestIntel(shape=SGX_SHAPE)
    old, patched = sgx.platform("old"), sgx.platform("patched", cpu_svn=(15, 15, *sgx.cpu_svn[2:]))
    quote = sgx.quote(old, bytes(range(64)))
    assert parse_quote(quote).header.version == 3 and parse_quote(quote).body.report_data == bytes(range(64))
    n = sgx.collateral(sgx.fmspc, evaluation=20)
    recovery = sgx.collateral(sgx.fmspc, evaluation=21, levels=sgx.tcb_levels(recovery="INTEL-SA-TEST1"))
    ve = verify("sgx-quote", quote, collateral=[n], at=sgx.now, roots=sgx.roots)
    assert (ve.kind, ve.tcb_status, ve.advisory_ids, ve.claims["fmspc"]) == ("sgx-quote", "UpToDate", (), "00606a000000")
    ve = verify("sgx-quote", quote, collateral=[recovery], at=sgx.now, roots=sgx.roots)
    assert (ve.tcb_status, ve.advisory_ids) == ("OutOfDate", ("INTEL-SA-TEST1",))
    assert verify("sgx-quote", sgx.quote(patched, bytes(64)), collateral=[recovery], at=sgx.now,
                  roots=sgx.roots).tcb_status == "UpToDate"
    for offset in (8, HEADER_LEN + 64, HEADER_LEN + 320, 432 + 4 + 3, 432 + 4 + 128 + 100):
        bad = bytearray(quote)
        bad[offset] ^= 0x01  # header, MRENCLAVE, report data, quote signature, QE report
        with pytest.raises(EvidenceError) as info:
            verify("sgx-quote", bytes(bad), collateral=[n], at=sgx.now, roots=sgx.roots)
        assert info.value.code == "evidence.signature_invalid"
