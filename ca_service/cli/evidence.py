"""``ca-service evidence verify TYPE EVIDENCE_FILE``: verify one item offline."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from ca_service.errors import CAServiceError


@click.group("evidence")
def evidence() -> None:
    """Evidence verification without issuance."""


@evidence.command("verify")
@click.argument("kind")
@click.argument("evidence_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--collateral", "collateral_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--at", "at_text", help="RFC 3339 instant to verify at (default now)")
@click.option("--nonce", "nonce_hex", help="hex the report data must start with")
@click.option("--sim-root", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="pin this sim root (PEM or DER) for `sim` evidence")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path),
              help="a CA home: without --collateral, use its cached collateral (also when CA_SERVICE_HOME or "
                   "CA_SERVICE_DATABASE_URL is set)")
@click.option("--event-log", "event_log_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TDX/sim: a CCEL or dstack JSON event log to replay against the verified RTMRs")
@click.option("--ima", "ima_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="with --event-log: an IMA runtime measurement list (SHA-384 bank) replayed into RTMR2")
@click.option("--allow-unchecked-revocation", is_flag=True,
              help="accept a missing, expired, unparseable or wrongly signed CRL: shown as skipped, with a warning "
                   "(a policy's revocation.allow_unchecked; docs/revocation.md)")
@click.option("--revocation-grace", "grace_text", metavar="DURATION",
              help="accept a CRL this long past its nextUpdate, e.g. 7d "
                   "(a policy's collateral.max_age_past_next_update)")
@click.option("--json", "as_json", is_flag=True)
def verify(kind: str, evidence_file: Path, collateral_files: tuple[Path, ...], at_text: str | None,
           nonce_hex: str | None, sim_root: Path | None, home: Path | None, event_log_file: Path | None,
           ima_file: Path | None, allow_unchecked_revocation: bool, grace_text: str | None,
           as_json: bool) -> None:
    """Exit 0 iff the evidence is genuine and meets the vendor baseline at --at; 1 refused; 2 usage error.

    One verdict: ``ok`` (and the exit code) agrees with every check. A check that failed is a
    refusal; a check that could not be made (no RIM, no OCSP response given) is shown as skipped,
    never as passed, and a policy can require it (``require_checks``).

    With no --collateral and a CA configured (--home, CA_SERVICE_HOME or CA_SERVICE_DATABASE_URL), TDX,
    SGX and SNP collateral comes from the CA's cache, and the output lists the items used. With
    --event-log the log is replayed against the verified RTMRs; a mismatch refuses, naming the RTMR.

    With --collateral the files given decide. Revocation is checked in them or refused
    (revocation.<item>_<state>: a missing CRL is never shown as passed) unless --allow-unchecked-revocation
    or --revocation-grace accepts it, with a warning (docs/revocation.md)."""
    from ca_service import evidence as ev
    from ca_service.errors import PolicyError
    from ca_service.evidence.trust import DEFAULT_ROOTS
    from ca_service.policy.model import parse_duration

    try:
        at = datetime.fromisoformat(at_text.replace("Z", "+00:00")) if at_text else datetime.now(UTC)
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
    except ValueError:
        raise click.BadParameter(f"{at_text!r} is not an RFC 3339 time (for example 2026-03-01T12:00:00Z)",
                                 param_hint="--at") from None
    try:
        nonce = bytes.fromhex(nonce_hex) if nonce_hex else None
    except ValueError:
        raise click.BadParameter("not hex", param_hint="--nonce") from None
    if kind not in ev.known_kinds():
        raise click.BadParameter(f"unknown evidence type {kind!r}; known: {', '.join(sorted(ev.known_kinds()))}",
                                 param_hint="TYPE")
    try:
        grace = parse_duration(grace_text) if grace_text else timedelta(0)
    except PolicyError:
        raise click.BadParameter("not a duration like 7d or 12h", param_hint="--revocation-grace") from None
    roots = DEFAULT_ROOTS
    if sim_root is not None:
        roots = roots.with_sim_root(_root_der(sim_root))
    out: dict[str, Any]
    data = evidence_file.read_bytes()
    collateral = [p.read_bytes() for p in collateral_files]
    used: list[dict[str, object]] | None = None
    try:
        if not collateral and _ca_configured(home):
            collateral, used = _from_cache(kind, data, at, home)
        result = ev.verify(kind, data, collateral=collateral, at=at, nonce=nonce, roots=roots,
                           event_log=event_log_file.read_bytes() if event_log_file else None,
                           ima_log=ima_file.read_bytes() if ima_file else None,
                           allow_unchecked_revocation=allow_unchecked_revocation, revocation_grace=grace)
        out = {"ok": True, **result.to_json()}
    except CAServiceError as exc:
        out = _refusal(kind, exc)
    out = _one_verdict(out)
    if used is not None:
        out["collateral_used"] = used
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
    else:
        _print_text(kind, out, used)
    sys.exit(0 if out["ok"] is True else 1)


def _root_der(path: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    raw = path.read_bytes()
    try:
        cert = x509.load_pem_x509_certificate(raw) if raw.lstrip().startswith(b"-----") \
            else x509.load_der_x509_certificate(raw)
    except ValueError:
        raise click.BadParameter("not a PEM or DER certificate", param_hint="--sim-root") from None
    return cert.public_bytes(Encoding.DER)


def _refusal(kind: str, exc: CAServiceError) -> dict[str, Any]:
    """The refusal's JSON: the checks made (from the refusal's partial result, when there is one)
    and, last, the check that failed."""
    partial = getattr(exc, "partial", None)
    base: dict[str, Any] = partial.to_json() if partial is not None else {
        "type": kind, "tcb_status": None, "advisory_ids": [], "claims": {}, "checks": []}
    checks = list(base.get("checks") or [])
    if not any(c.get("result") == "fail" for c in checks):
        checks.append({"name": "verification", "result": "fail", "detail": exc.detail, "code": exc.code})
    fields = {k: v for k, v in exc.fields.items() if isinstance(v, str | int | list | dict)}
    return {**base, "ok": False, "checks": checks, "error": {"code": exc.code, "detail": exc.detail, **fields}}


def _one_verdict(out: dict[str, Any]) -> dict[str, Any]:
    """Belt and braces: ``ok`` true only when no check failed (issue 11 section 3)."""
    checks: list[dict[str, Any]] = [c for c in out.get("checks") or [] if isinstance(c, dict)]
    failed = [c for c in checks if c.get("result") == "fail"]
    if out.get("ok") is True and failed:
        out = {**out, "ok": False, "error": {"code": failed[0].get("code") or "evidence.check_failed",
                                              "detail": failed[0].get("detail", "")}}
    skipped = [c["name"] for c in checks if c.get("result") == "skipped"]
    return {"ok": out["ok"], **{k: v for k, v in out.items() if k != "ok"}, "skipped_checks": skipped}


def _print_text(kind: str, out: dict[str, Any], used: list[dict[str, object]] | None) -> None:
    marks = {"pass": "pass", "fail": "FAIL", "skipped": "skip"}
    for c in out.get("checks") or []:
        click.echo(f"  {marks.get(c['result'], c['result'])}  {c['name']}: {c.get('detail', '')}")
    if out["ok"] is True:
        skipped = out.get("skipped_checks") or []
        click.echo(f"OK {kind}: tcb_status={out.get('tcb_status')} advisories={out.get('advisory_ids')}"
                   + (f" (skipped: {', '.join(skipped)})" if skipped else ""))
        for warning in out.get("warnings") or []:
            click.echo(f"  WARNING {warning}: accepted by --allow-unchecked-revocation / --revocation-grace")
        claims = out.get("claims")
        if isinstance(claims, dict) and "event_log" in claims:
            click.echo(f"  event log ({claims['event_log_format']}): {len(claims['event_log'])} events replay to "
                       f"RTMR0-3; loaded digests: {', '.join(claims['loaded_digests']) or 'none'}")
        for u in used or []:
            click.echo(f"  collateral {u['kind']} {u['key']} sha256:{u['sha256']} next update {u['next_update']} "
                       f"from {u['source']}")
    else:
        err = out["error"]
        if not isinstance(err, dict):
            raise TypeError("refusal without an error object")
        click.echo(f"REFUSED {kind}: [{err['code']}] {err['detail']}")


def _ca_configured(home: Path | None) -> bool:
    import os

    return home is not None or bool(os.environ.get("CA_SERVICE_HOME") or os.environ.get("CA_SERVICE_DATABASE_URL"))


def _from_cache(kind: str, data: bytes, at: datetime, home: Path | None
                ) -> tuple[list[bytes], list[dict[str, object]] | None]:
    """The CA's cached collateral for this evidence, and the items used (kind, key, digest, source,
    next update). Kinds the CA supplies no collateral for get none (their verifier says what is missing)."""
    from ca_service.config import Settings
    from ca_service.evidence.needs import SUPPLIED_KINDS
    from ca_service.services import collateral as cs
    from ca_service.services.collateral_used import used_items
    from ca_service.services.container import Services

    if kind not in SUPPLIED_KINDS:
        return [], None
    settings = Settings.from_env(home=home) if home is not None else Settings.from_env()
    svc = Services.create(settings)
    try:
        items = list(cs.collateral_for(svc, kind, data, at))
        return items, list(used_items(svc, kind, data, at))
    finally:
        svc.close()


@evidence.command("replay")
@click.argument("quote_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("event_log_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--ima", "ima_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="an IMA runtime measurement list (SHA-384 bank) replayed into RTMR2 after the log")
@click.option("--json", "as_json", is_flag=True)
def replay(quote_file: Path, event_log_file: Path, ima_file: Path | None, as_json: bool) -> None:
    """Replay EVENT_LOG (CCEL or dstack JSON) and compare with the RTMRs of QUOTE (TDX quote or sim report).

    This does NOT verify the quote's signature: it is a debugging aid. Use `evidence verify tdx-quote
    QUOTE --event-log LOG` to verify and replay. Exit 0 iff all four RTMRs match."""
    from ca_service.evidence.eventlog import parse_event_log, parse_ima
    from ca_service.evidence.eventlog import replay as do_replay

    note = "the quote's signature was NOT verified (use: evidence verify tdx-quote QUOTE --event-log LOG)"
    try:
        rtmrs = _quote_rtmrs(quote_file.read_bytes())
        log = parse_event_log(event_log_file.read_bytes())
        ima = parse_ima(ima_file.read_bytes()) if ima_file else None
        rep = do_replay(log, rtmrs, ima)
    except CAServiceError as exc:
        if as_json:
            click.echo(json.dumps({"ok": False, "signature_verified": False, "note": note,
                                   "error": {"code": exc.code, "detail": exc.detail}}, indent=2))
        else:
            click.echo(f"REFUSED: [{exc.code}] {exc.detail}\nnote: {note}")
        sys.exit(1)
    ok = all(rep.matches)
    n = sum(1 for e in log.events if e.register is not None) + (len(ima.entries) if ima else 0)
    if as_json:
        click.echo(json.dumps({"ok": ok, "signature_verified": False, "note": note, "events": n, **rep.to_json()},
                              indent=2))
    else:
        click.echo(f"event log: {rep.to_json()['format']}, {n} extending events")
        for i, (r, q, m) in enumerate(zip(rep.replayed, rep.quote, rep.matches, strict=True)):
            click.echo(f"RTMR{i} {'match   ' if m else 'MISMATCH'} replayed {r.hex()}\n"
                       f"              quote    {q.hex()}")
        click.echo(f"note: {note}")
    sys.exit(0 if ok else 1)


def _quote_rtmrs(data: bytes) -> tuple[bytes, ...]:
    """RTMR0-3 of a TDX quote or sim report, parsed only (no signature check)."""
    from ca_service.errors import EvidenceMalformed
    from ca_service.evidence.intel.parse import TdReport, parse_quote
    from ca_service.evidence.sim.parse import MAGIC, parse_sim_report

    if data.startswith(MAGIC):
        f = parse_sim_report(data).fields
        return tuple(f[f"rtmr{i}"] for i in range(4))
    body = parse_quote(data).body
    if not isinstance(body, TdReport):
        raise EvidenceMalformed("not a TDX quote (no RTMRs)")
    return body.rtmr
