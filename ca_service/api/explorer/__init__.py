"""The explorer: read-only HTML pages over what the CA issued (opt-in, ``CA_SERVICE_EXPLORER``).

Server-rendered with Jinja (autoescaped: every value from evidence, CSRs, policies and reports is
attacker-controlled), one stylesheet and one script, no external assets, and a strict CSP. The
views read through the same services as the JSON API (``services/explorer.py`` composes them).
"""

from __future__ import annotations

import difflib
import json
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, abort, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from ca_service.api.context import services
from ca_service.errors import CAServiceError
from ca_service.services import explorer as ex

bp = Blueprint("explorer", __name__, template_folder="templates", static_folder="static",
               static_url_path="/explorer/static")

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

# What a relying party should read into each value (AR4SI, draft-ietf-rats-ar4si section 2.3).
TIERS = {"affirming": "the verifier vouches for this claim",
         "warning": "the claim holds only with a caveat (for example an insecure or development TEE, "
                    "or a TCB that is out of date)",
         "contraindicated": "the verifier found a reason not to trust this",
         "none": "no claim was made"}
VECTOR_MEANING = {
    "instance-identity": "the evidence comes from this TEE instance and is bound to the certified key",
    "configuration": "the TEE's configuration (debug, policy flags) is acceptable",
    "executables": "the measured code (MRTD/RTMRs, launch measurement, RIM) is the approved one",
    "file-system": "the file system contents are the approved ones",
    "hardware": "the hardware is genuine and its TCB is at an accepted level",
    "runtime-opaque": "the memory of the workload is protected from the host",
    "storage-opaque": "secrets are sealed to this TEE",
    "sourced-data": "the data the workload consumed is from trusted sources",
}


def tier(value: Any) -> str:
    """The AR4SI tier of a trustworthiness-vector value."""
    if not isinstance(value, int) or value == 0:
        return "none"
    if -1 <= value <= 31 and value >= 2:
        return "affirming"
    if 32 <= value <= 95:
        return "warning"
    if 96 <= value <= 127:
        return "contraindicated"
    return "none"


def _age(at: datetime) -> str:
    seconds = max(0, int((datetime.now(UTC) - at).total_seconds()))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def _try(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A value a page can live without (no checkpoint yet, no anchor yet): None instead."""
    try:
        return fn(*args, **kwargs)
    except CAServiceError:
        return None


@bp.after_request
def _security_headers(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "no-referrer"
    if resp.mimetype == "text/html":
        resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.app_template_filter("pretty")
def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


@bp.get("/")
def home() -> ResponseReturnValue:
    from ca_service.services.anchoring import latest_anchor, list_anchors
    from ca_service.services.log import get_checkpoint
    from ca_service.services.policies import list_policies

    svc = services()
    cp = _try(get_checkpoint, svc)
    anchors = _try(list_anchors, svc, limit=1) or []
    final = _try(latest_anchor, svc)
    policies = [p for p in list_policies(svc) if p["active_version"] is not None]
    recent = ex.recent_entries(svc, limit=10)
    return render_template("explorer/home.html", cp=cp, cp_age=_age(cp.created_at) if cp else None,
                           log_size=(recent[0].index + 1) if recent else 0, newest_anchor=anchors[0] if anchors
                           else None, final_anchor=final, policies=policies, recent=recent,
                           confirmations=svc.settings.anchor_confirmations, profile=svc.settings.profile)


@bp.get("/search")
def search() -> ResponseReturnValue:
    q = request.args.get("q", "")[:300]
    result = ex.search(services(), q)
    if result.kind == "serial" and len(result.certificates) == 1:
        return redirect(url_for("explorer.certificate", serial=result.certificates[0].serial))
    if result.kind == "integrity_report" and result.report_id:
        return redirect(url_for("explorer.integrity_report", report_id=result.report_id))
    return render_template("explorer/search.html", result=result, q=q)


@bp.get("/certificates/<serial>")
def certificate(serial: str) -> ResponseReturnValue:
    from ca_service.services.log import vkey

    svc = services()
    view = ex.certificate_view(svc, serial)
    public = svc.settings.public_url
    return render_template("explorer/certificate.html", v=view, tier=tier, tiers=TIERS, meaning=VECTOR_MEANING,
                           cert_sha256=ex.certificate_sha256(view), public_url=public,
                           vkey=vkey(svc), profile=svc.settings.profile)


@bp.get("/certificates/<serial>/proof.txt")
def certificate_proof(serial: str) -> ResponseReturnValue:
    view = ex.certificate_view(services(), serial)
    if view.proof.bundle is None:
        abort(404)
    return Response(view.proof.bundle, mimetype="text/plain",
                    headers={"Content-Disposition": f'attachment; filename="{view.row.serial}.tlog-proof"'})


@bp.get("/certificates/<serial>/chain.pem")
def certificate_chain(serial: str) -> ResponseReturnValue:
    view = ex.certificate_view(services(), serial)
    return Response("".join(view.chain_pem[:2]), mimetype="application/pem-certificate-chain",
                    headers={"Content-Disposition": f'attachment; filename="{view.row.serial}.pem"'})


@bp.get("/policies/<name>")
def policy(name: str) -> ResponseReturnValue:
    from ca_service.services.audit_query import list_events
    from ca_service.services.policies import describe_policy

    svc = services()
    desc = describe_policy(svc, name)
    trail = list_events(svc, limit=200, target_prefix=f"{name}@")["events"]
    return render_template("explorer/policy.html", p=desc, audit=trail)


@bp.get("/policies/<name>/versions/<int:version>")
def policy_version(name: str, version: int) -> ResponseReturnValue:
    from ca_service.services.policies import describe_policy, get_version

    svc = services()
    ref = get_version(svc, name, version)
    return render_template("explorer/policy_version.html", p=describe_policy(svc, name), ref=ref,
                           document=json.dumps(ref.policy.document, indent=2, sort_keys=True))


@bp.get("/policies/<name>/diff")
def policy_diff(name: str) -> ResponseReturnValue:
    from ca_service.services.policies import describe_policy, diff_versions

    svc = services()
    desc = describe_policy(svc, name)
    versions = [v["version"] for v in desc["versions"]]
    try:
        old = int(request.args.get("from", versions[0] if versions else 1))
        new = int(request.args.get("to", versions[-1] if versions else 1))
    except ValueError:
        abort(400)
    a, b, changes = diff_versions(svc, name, old, new)
    text = difflib.unified_diff(json.dumps(a.policy.document, indent=2, sort_keys=True).splitlines(),
                                json.dumps(b.policy.document, indent=2, sort_keys=True).splitlines(),
                                fromfile=f"{name}@{a.version}", tofile=f"{name}@{b.version}", lineterm="")
    return render_template("explorer/policy_diff.html", p=desc, a=a, b=b, changes=changes, lines=list(text),
                           versions=versions)


@bp.get("/log")
def log() -> ResponseReturnValue:
    from ca_service.services.log import get_checkpoint

    svc = services()
    before = request.args.get("before", "")
    start = int(before) if before.isascii() and before.isdigit() and len(before) < 19 else None
    entries = ex.recent_entries(svc, limit=50, before=start)
    return render_template("explorer/log.html", entries=entries, cp=_try(get_checkpoint, svc),
                           checkpoints=ex.recent_checkpoints(svc),
                           next_before=entries[-1].index if entries and entries[-1].index > 0 else None)


@bp.get("/integrity-reports")
def integrity_reports() -> ResponseReturnValue:
    return render_template("explorer/integrity_reports.html", reports=ex.list_integrity_reports(services()))


@bp.get("/integrity-reports/<report_id>")
def integrity_report(report_id: str) -> ResponseReturnValue:
    from ca_service.services import integrity as integrity_service

    svc = services()
    record = integrity_service.get_report(svc, report_id)
    try:
        body = json.loads(record.report)
    except ValueError:
        body = None
    signer = _try(ex.certificate_view, svc, record.serial)
    return render_template("explorer/integrity_report.html", r=record, body=body,
                           components=ex.report_components(body), signer=signer)


@bp.get("/anchors")
def anchors() -> ResponseReturnValue:
    from ca_service.services.anchoring import list_anchors

    svc = services()
    return render_template("explorer/anchors.html", anchors=list_anchors(svc, limit=100),
                           confirmations=svc.settings.anchor_confirmations, rpc=svc.settings.chain_rpc)


@bp.errorhandler(CAServiceError)
def _service_error(exc: CAServiceError) -> ResponseReturnValue:
    detail = exc.detail if exc.status < 500 else "an internal error occurred"
    return render_template("explorer/error.html", status=exc.status, code=exc.code, title=exc.title,
                           detail=detail), exc.status


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> ResponseReturnValue:
    status = exc.code or 500
    return render_template("explorer/error.html", status=status, code=str(status), title=exc.name,
                           detail=exc.description or exc.name), status


def init_app(app: Flask) -> None:
    """Register the explorer pages (only when ``Settings.explorer_enabled``)."""
    app.register_blueprint(bp)
