"""What the README says about the code stays true (issue 16, "README and docs"): it names every
evidence kind the registry verifies, with its family, and the Fernet key file where the code puts it."""

from __future__ import annotations

from pathlib import Path

from ca_service.config import Settings
from ca_service.evidence.registry import known_kinds
from ca_service.services.keys import fernet_keys_path

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
FAMILIES = {"tdx-quote": "Intel TDX", "sgx-quote": "Intel SGX", "snp-report": "AMD SEV-SNP",
            "nvidia-gpu": "NVIDIA", "nitro": "AWS Nitro", "sim": "sim"}


def test_readme_names_every_evidence_kind_and_its_family():
    assert set(known_kinds()) == set(FAMILIES), "a new kind: add it here and to the README"
    for kind, family in FAMILIES.items():
        assert f"`{kind}`" in README, kind
        assert family in README, family


def test_readme_gives_the_fernet_key_path_the_code_uses(tmp_path):
    path = fernet_keys_path(Settings(home=tmp_path)).relative_to(tmp_path)
    assert f"`$CA_SERVICE_HOME/{path.as_posix()}`" in README
