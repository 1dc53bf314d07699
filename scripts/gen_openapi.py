"""Regenerate docs/openapi.json from the app (a test keeps the two equal): python scripts/gen_openapi.py"""

from __future__ import annotations

import json
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.simplefilter("ignore")

from ca_service.api.app import create_app  # noqa: E402
from ca_service.api.v1.openapi import build_document  # noqa: E402
from ca_service.config import Settings  # noqa: E402

app = create_app(Settings(home=Path(tempfile.mkdtemp()), profile="insecure-dev"))
(ROOT / "docs" / "openapi.json").write_text(json.dumps(build_document(app), indent=2, sort_keys=True) + "\n")
print("docs/openapi.json written")
