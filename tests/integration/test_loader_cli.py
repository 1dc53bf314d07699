"""The three parties by the CLI, over real HTTP (`ca-service serve`, gunicorn): the loader
(`agent loader-request --sim`), the lab (`verify --expect engine=...`, `seal`), the loader again
(`unseal`, `integrity sign|submit`) and the auditor (`integrity verify --proof`); then the
operator's `revoke` of the CVM certificate, after which the lab's seal is refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import requests

from tests.integration.test_http_cli import CLI, server  # noqa: F401  (the module-scoped `ca-service serve`)
from tests.integration.test_integrity_http_cli import _run

ENGINE = b"ca-service demo training engine v1\n"
ENGINE_DIGEST = "sha384:" + hashlib.sha384(ENGINE).hexdigest()
POLICY = Path(__file__).resolve().parents[2] / "policies" / "trusted-loader.yaml"


def _certify(env, url, tmp_path: Path, engine: bytes = ENGINE) -> tuple[Path, Path, dict]:
    assert _run(["policy", "apply", str(POLICY), "--activate"], env).returncode == 0
    cvm, loader = tmp_path / "cvm", tmp_path / "loader"
    p = _run(["agent", "request", "--server", url, "--policy", "sim", "--out", str(cvm), "--sim"], env)
    assert p.returncode == 0, p.stderr
    (tmp_path / "engine.img").write_bytes(engine)
    p = _run(["agent", "loader-request", "--server", url, "--policy", "trusted-loader", "--out", str(loader), "--sim",
              "--component", f"engine={tmp_path / 'engine.img'}", "--arguments", "--epochs 3"], env)
    return cvm, loader, {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}


def test_lab_seals_to_the_loader_and_the_auditor_checks_its_report(server, tmp_path: Path):  # noqa: F811
    env, url, home = server["env"], server["url"], server["home"]
    cvm, loader, out = _certify(env, url, tmp_path)
    assert out["rc"] == 0, out["stderr"]
    root = str(home / "root.pem")
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "key.bin").write_bytes(b"\x11" * 32)
    expect = ["--root", root, "--expect", f"engine={ENGINE_DIGEST}", "--expect", "policy=trusted-loader",
              "--accept-insecure"]
    # the lab: the loader's certificate passes (online revocation: OCSP at the CA), and it seals to it
    p = _run(["verify", str(loader / "chain.pem"), *expect, "--json"])
    assert p.returncode == 0, p.stdout + p.stderr
    verdict = json.loads(p.stdout)
    assert verdict["ok"] is True and verdict["ear"]["submods"]["sim"]["ca-service.engine"] == ENGINE_DIGEST
    p = _run(["seal", "--to", str(loader / "chain.pem"), *expect, str(lab / "key.bin"), str(lab / "key.sealed")])
    assert p.returncode == 0, p.stdout + p.stderr
    # the CVM's own certificate is not a loader's: the same expectation refuses it
    p = _run(["seal", "--to", str(cvm / "chain.pem"), *expect, str(lab / "key.bin"), str(lab / "cvm.sealed")])
    assert p.returncode == 1 and "no claim named 'engine'" in p.stdout and not (lab / "cvm.sealed").exists()
    # the loader opens it and reports what it loaded
    p = _run(["unseal", "--key", str(loader / "key.pem"), str(lab / "key.sealed"), str(tmp_path / "opened.bin")])
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "opened.bin").read_bytes() == b"\x11" * 32
    report = tmp_path / "report.json"
    p = _run(["integrity", "sign", "--key", str(loader / "key.pem"), "--cert", str(loader / "chain.pem"),
              "--order-id", "order-lab-1", "--component", f"engine={tmp_path / 'engine.img'}",
              "--component", "dataset/lab=sha256:" + hashlib.sha256(b"lab").hexdigest(), "--arguments", "--epochs 3",
              "--out", str(report)])
    assert p.returncode == 0, p.stderr
    p = _run(["integrity", "submit", "--server", url, str(report)])
    assert p.returncode == 0, p.stderr
    rec_id = json.loads(p.stdout)["id"]
    # arguments the loader did not measure are refused
    bad = tmp_path / "bad.json"
    assert _run(["integrity", "sign", "--key", str(loader / "key.pem"), "--cert", str(loader / "chain.pem"),
                 "--order-id", "order-lab-2", "--component", f"engine={tmp_path / 'engine.img'}",
                 "--arguments", "--epochs 300", "--out", str(bad)]).returncode == 0
    p = _run(["integrity", "submit", "--server", url, str(bad)])
    assert p.returncode == 1 and "integrity.component_not_measured" in p.stderr
    # the auditor
    assert _run(["log", "publish"], env).returncode == 0
    (tmp_path / "record.json").write_text(requests.get(f"{url}/v1/integrity-reports/{rec_id}", timeout=10).text)
    vkey = requests.get(f"{url}/v1/log/vkey", timeout=10).text.strip()
    p = _run(["integrity", "verify", str(report), "--root", root, "--proof", str(tmp_path / "record.json"),
              "--log-vkey", vkey, "--json"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert [c["name"] for c in json.loads(p.stdout)["checks"]] == ["report", "signature", "log_inclusion"]
    # ... and the anchor: the operator anchors the checkpoint on the embedded chain, the auditor checks it there
    # (`--rpc embedded` reads the chain kept in CA_SERVICE_HOME) under the contract the CA publishes, pinned
    anchored = _run(["anchor", "--once"], env)
    assert anchored.returncode == 0, anchored.stdout + anchored.stderr
    latest = requests.get(f"{url}/v1/anchors/latest", timeout=10).json()
    size, contract = latest["size"], latest["contract"]
    audit = ["integrity", "verify", str(report), "--root", root, "--proof", str(tmp_path / "record.json"),
             "--log-vkey", vkey, "--rpc", "embedded"]
    p = _run([*audit, "--contract", contract, "--json"], env)
    assert p.returncode == 0, p.stdout + p.stderr
    checks = {c["name"]: c for c in json.loads(p.stdout)["checks"]}
    assert list(checks) == ["report", "signature", "log_inclusion", "anchor_contract", "anchor"]
    assert checks["anchor"]["passed"] and f"the checkpoint of size {size} is anchored in block" in checks["anchor"][
        "detail"]
    # a pinned address that holds no anchor contract
    p = _run([*audit, "--contract", "0x" + "11" * 20], env)
    assert p.returncode == 1 and "[FAIL] anchor_contract: the code at 0x" in p.stdout, p.stdout
    # not pinned: learned from the CA (a warning, not a pass)
    p = _run([*audit, "--server", url], env)
    assert p.returncode == 0 and f"[warn] anchor_contract: {contract} holds the CheckpointAnchor code" in p.stdout
    # without a chain to read: the anchor fails, never passes
    p = _run([*audit, "--contract", contract], {**env, "CA_SERVICE_HOME": str(tmp_path / "nowhere")})
    assert p.returncode == 1 and "[FAIL] anchor: no embedded chain in" in p.stdout, p.stdout
    # the operator revokes the CVM certificate: the loader's goes with it, and the lab's seal is refused
    cvm_serial = json.loads((cvm / "response.json").read_text())["serial"]
    p = _run(["revoke", cvm_serial, "--reason", "keyCompromise"], env)
    assert p.returncode == 0, p.stdout + p.stderr
    loader_serial = json.loads((loader / "response.json").read_text())["serial"]
    assert f"its loader certificate {loader_serial}: revoked" in p.stdout
    assert requests.get(f"{url}/v1/certificates/{loader_serial}", timeout=10).json()["status"] == "revoked"
    p = _run(["seal", "--to", str(loader / "chain.pem"), *expect, str(lab / "key.bin"), str(lab / "late.sealed")])
    assert p.returncode == 1 and "REVOKED" in p.stdout and not (lab / "late.sealed").exists()
    # the auditor again, later: the report's proof is now under a checkpoint that grew past the anchored one (the
    # revocation leaves); it is consistent with the anchor by an RFC 9162 proof the CA serves (--server)
    assert _run(["log", "publish"], env).returncode == 0
    (tmp_path / "later.json").write_text(requests.get(f"{url}/v1/integrity-reports/{rec_id}", timeout=10).text)
    later = ["integrity", "verify", str(report), "--root", root, "--proof", str(tmp_path / "later.json"),
             "--log-vkey", vkey, "--rpc", "embedded", "--contract", contract]
    p = _run([*later, "--server", url], env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "is consistent (RFC 9162 proof" in p.stdout and f"with the checkpoint of size {size} anchored" in p.stdout
    p = _run(later, env)
    assert p.returncode == 1 and "a consistency proof is needed and no CA server is known" in p.stdout, p.stdout


def test_a_loader_running_another_engine_is_refused(server, tmp_path: Path):  # noqa: F811
    _, loader, out = _certify(server["env"], server["url"], tmp_path, engine=b"some other engine\n")
    assert out["rc"] == 1 and "appraisal.failed" in out["stderr"]
    assert not (loader / "chain.pem").exists()
