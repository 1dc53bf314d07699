"""Flow 2 the way users run it, over real HTTP (`ca-service serve`, gunicorn) and the CLI:
`agent request --sim`, `integrity sign`, `integrity submit`, `log publish`, `integrity verify --proof`."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import requests

from tests.integration.test_http_cli import CLI, server  # noqa: F401  (the module-scoped `ca-service serve`)


def _run(args, env=None, timeout=60):
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_sign_submit_verify_with_proof(server, tmp_path: Path):  # noqa: F811
    """The loader's side by the CLI: the CVM is certified, the loader measures the vendor's engine and
    its arguments and gets its own certificate, then signs, submits and checks a report."""
    env, url, home = server["env"], server["url"], server["home"]
    policy = Path(__file__).resolve().parents[2] / "policies" / "trusted-loader.yaml"
    p = _run(["policy", "apply", str(policy), "--activate"], env)
    assert p.returncode == 0, p.stdout + p.stderr
    cvm, agent = tmp_path / "cvm", tmp_path / "agent"
    p = _run(["agent", "request", "--server", url, "--policy", "sim", "--out", str(cvm), "--sim",
              "--dns", "trainer.cvm.local"], env)
    assert p.returncode == 0, p.stderr
    engine = tmp_path / "engine.bin"
    engine.write_bytes(b"ca-service demo training engine v1\n")  # the engine policies/trusted-loader.yaml lists
    p = _run(["agent", "loader-request", "--server", url, "--policy", "trusted-loader", "--out", str(agent), "--sim",
              "--component", f"engine={engine}", "--arguments", "--epochs 3"], env)
    assert p.returncode == 0, p.stderr
    cvm_serial = json.loads((cvm / "response.json").read_text())["serial"]
    assert f"linked to CVM certificate {cvm_serial}" in p.stdout
    assert "measured engine sha384:" in p.stderr and "measured args sha384:" in p.stderr
    dataset_digest = "sha256:" + hashlib.sha256(b"clinic-a").hexdigest()
    report_file = tmp_path / "report.json"
    p = _run(["integrity", "sign", "--key", str(agent / "key.pem"), "--cert", str(agent / "chain.pem"),
              "--order-id", "order-7", "--component", f"engine={engine}", "--component",
              f"dataset/clinic-a={dataset_digest}", "--arguments", "--epochs 3", "--out", str(report_file)])
    assert p.returncode == 0, p.stderr
    signed = json.loads(report_file.read_text())
    assert set(signed) == {"report", "signature", "alg", "certificate_chain"}
    import base64

    doc = json.loads(base64.b64decode(signed["report"]))
    assert doc["components"] == [
        {"name": "engine", "digest": "sha384:" + hashlib.sha384(b"ca-service demo training engine v1\n").hexdigest()},
        {"name": "dataset/clinic-a", "digest": dataset_digest}]
    assert doc["arguments_digest"] == "sha384:" + hashlib.sha384(b"--epochs 3").hexdigest()
    # offline, before it is logged
    root = str(home / "root.pem")
    p = _run(["integrity", "verify", str(report_file), "--root", root])
    assert p.returncode == 0, p.stdout + p.stderr
    # submit (twice: idempotent)
    p = _run(["integrity", "submit", "--server", url, str(report_file)])
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    p2 = _run(["integrity", "submit", "--server", url, str(report_file)])
    assert p2.returncode == 0 and json.loads(p2.stdout) == out
    # a checkpoint covers it; the relying party checks the proof against the log key it keeps
    assert _run(["log", "publish"], env).returncode == 0
    rec = requests.get(f"{url}/v1/integrity-reports/{out['id']}", timeout=10).json()
    assert rec["proof"] and rec["sha256"] == out["sha256"]
    (tmp_path / "record.json").write_text(json.dumps(rec))
    (tmp_path / "proof.txt").write_text(rec["proof"])
    vkey = requests.get(f"{url}/v1/log/vkey", timeout=10).text.strip()
    for proof in ("record.json", "proof.txt"):
        p = _run(["integrity", "verify", str(report_file), "--root", root, "--proof", str(tmp_path / proof),
                  "--log-vkey", vkey, "--json"])
        assert p.returncode == 0, p.stdout + p.stderr
        checks = json.loads(p.stdout)["checks"]
        assert [c["name"] for c in checks] == ["report", "signature", "log_inclusion"]
    # a tampered file fails offline and is refused online, with the code on stderr
    signed["signature"] = base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01").decode()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(signed))
    p = _run(["integrity", "verify", str(bad), "--root", root])
    assert p.returncode == 1 and "integrity.signature_invalid" in p.stdout
    p = _run(["integrity", "submit", "--server", url, str(bad)])
    assert p.returncode == 1 and "integrity.signature_invalid" in p.stderr


def test_sign_refuses_a_key_that_is_not_the_certificates(server, tmp_path: Path):  # noqa: F811
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        p = _run(["agent", "request", "--server", server["url"], "--policy", "sim", "--out", str(d), "--sim"],
                 server["env"])
        assert p.returncode == 0, p.stderr
    p = _run(["integrity", "sign", "--key", str(a / "key.pem"), "--cert", str(b / "chain.pem"), "--order-id", "o",
              "--component", "engine=sha256:" + "0" * 64, "--out", str(tmp_path / "r.json")])
    assert p.returncode == 2 and "not the certificate's key" in p.stderr
    p = _run(["integrity", "sign", "--key", str(a / "key.pem"), "--cert", str(a / "chain.pem"), "--order-id", "o",
              "--component", "engine=/no/such/file", "--out", str(tmp_path / "r.json")])
    assert p.returncode == 2 and "neither a file nor" in p.stderr
