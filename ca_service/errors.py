"""The one error hierarchy of ca-service.

Every leaf carries a stable ``code`` (dotted, lower case) that API clients, the CLI and tests rely
on, and an HTTP ``status`` used by ``api/problems.py``. ``detail`` is a human sentence that never
includes secrets or internals; structured ``fields`` travel to the problem document as extensions.
"""

from __future__ import annotations

from typing import Any, ClassVar


class CAServiceError(Exception):
    """Base of every error ca-service raises on purpose."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str = "", **fields: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.fields = fields


# --- request / input -------------------------------------------------------------------------------


class RequestError(CAServiceError):
    code = "request.invalid"
    status = 400
    title = "Invalid request"


class SealRefused(RequestError):
    code = "seal.refused"
    title = "Sealing refused"


class UnsealFailed(RequestError):
    code = "seal.open_failed"
    title = "Unsealing failed"


class MalformedJSON(RequestError):
    code = "request.malformed_json"
    title = "Request body is not valid JSON"


class SchemaViolation(RequestError):
    code = "request.schema"
    status = 422
    title = "Request does not match the schema"


class NotFound(CAServiceError):
    code = "not_found"
    status = 404
    title = "Not found"


class Conflict(CAServiceError):
    code = "conflict"
    status = 409
    title = "Conflict"


class Unauthorized(CAServiceError):
    code = "auth.unauthorized"
    status = 401
    title = "Authentication required"


class Forbidden(CAServiceError):
    code = "auth.forbidden"
    status = 403
    title = "Not allowed"


# --- HTTP framing and abuse (answered by the worker before the app, or by the rate limiter) ---------


class MalformedHTTP(RequestError):
    """The request line, a header or the chunked framing is not HTTP/1.1 (RFC 9112)."""

    code = "request.malformed_http"
    title = "Malformed HTTP request"


class RequestLineTooLong(RequestError):
    code = "request.line_too_long"
    status = 414
    title = "Request line too long"


class RequestHeadersTooLarge(RequestError):
    code = "request.headers_too_large"
    status = 431
    title = "Request header fields too large"


class BodyTooLarge(RequestError):
    code = "request.too_large"
    status = 413
    title = "Request body too large"


class ExpectationUnmet(RequestError):
    code = "request.expectation_failed"
    status = 417
    title = "Expectation failed"


class TransferCodingUnsupported(RequestError):
    code = "request.unsupported_transfer_coding"
    status = 501
    title = "Transfer coding not supported"


class RequestTimeout(RequestError):
    """The request's headers and body did not arrive within ``serve --request-timeout``."""

    code = "request.timeout"
    status = 408
    title = "Request not received in time"


class RateLimited(CAServiceError):
    """Above the per-client rate limit (``CA_SERVICE_RATE_LIMIT``); ``Retry-After`` says when to retry."""

    code = "request.rate_limited"
    status = 429
    title = "Too many requests"

    def __init__(self, detail: str = "", *, retry_after: int, **fields: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **fields)
        self.retry_after = retry_after


class WorkerTimeout(CAServiceError):
    """A request still running after ``serve --timeout``, or in flight when its worker was stopped."""

    code = "service.worker_timeout"
    status = 503
    title = "The request took too long and was abandoned; retry later"
    retry_after = 5


# --- challenges and binding ------------------------------------------------------------------------


class ChallengeError(CAServiceError):
    code = "challenge.invalid"
    status = 400
    title = "Challenge refused"


class ChallengeUnknown(ChallengeError):
    code = "challenge.unknown"
    title = "Unknown challenge"


class ChallengeExpired(ChallengeError):
    code = "challenge.expired"
    title = "Challenge expired"


class ChallengeConsumed(ChallengeError):
    code = "challenge.consumed"
    status = 409
    title = "Challenge already used"


class BindingMismatch(CAServiceError):
    code = "binding.mismatch"
    status = 422
    title = "Evidence is not bound to this challenge and key"


# --- CSR and keys ----------------------------------------------------------------------------------


class CSRError(CAServiceError):
    code = "csr.invalid"
    status = 400
    title = "CSR refused"


class CSRMalformed(CSRError):
    code = "csr.malformed"
    title = "CSR cannot be parsed"


class CSRSignatureInvalid(CSRError):
    code = "csr.signature_invalid"
    title = "CSR self-signature does not verify"


class KeyTypeNotAllowed(CSRError):
    code = "csr.key_type_not_allowed"
    title = "Key type not allowed"


# --- evidence --------------------------------------------------------------------------------------


class EvidenceError(CAServiceError):
    """Raised by every evidence verifier. Leaves name the attack or failure.

    ``partial``: when the refusal comes from a failed check of an otherwise complete verification
    (a RIM mismatch, an unusable revocation source), the result with every check made, so a caller
    can show which check failed and the claims it was judged on (``evidence verify --json``).
    """

    code = "evidence.invalid"
    status = 422
    title = "Evidence refused"
    partial: Any = None


class EvidenceTypeUnknown(EvidenceError):
    code = "evidence.type_unknown"
    status = 400
    title = "Unknown evidence type"


class EvidenceMalformed(EvidenceError):
    code = "evidence.malformed"
    title = "Evidence cannot be parsed"


class EvidenceUnsupported(EvidenceError):
    code = "evidence.unsupported"
    title = "Evidence version or variant not supported"


class SignatureInvalid(EvidenceError):
    code = "evidence.signature_invalid"
    title = "Evidence signature does not verify"


class ChainInvalid(EvidenceError):
    code = "evidence.chain_invalid"
    title = "Certificate chain does not verify"


class RootUntrusted(EvidenceError):
    code = "evidence.root_untrusted"
    title = "Chain does not end at a pinned root"


class CertificateExpired(EvidenceError):
    code = "evidence.certificate_expired"
    title = "A certificate in the chain is outside its validity window"


class CertificateRevoked(EvidenceError):
    code = "evidence.certificate_revoked"
    title = "A certificate in the chain is revoked"


class CollateralMissing(EvidenceError):
    code = "evidence.collateral_missing"
    title = "Required collateral is missing"


class CollateralInvalid(EvidenceError):
    code = "evidence.collateral_invalid"
    title = "Collateral is malformed or its signature does not verify"


class CollateralExpired(EvidenceError):
    code = "evidence.collateral_expired"
    title = "Collateral is outside its validity window"


class CollateralMismatch(EvidenceError):
    code = "evidence.collateral_mismatch"
    title = "Collateral does not belong to this platform"


class TcbLevelUnmatched(EvidenceError):
    code = "evidence.tcb_level_unmatched"
    title = "No matching TCB level"


class TcbRevoked(EvidenceError):
    code = "evidence.tcb_revoked"
    title = "TCB level is revoked"


class IdentityMismatch(EvidenceError):
    code = "evidence.identity_mismatch"
    title = "Enclave or module identity does not match"


class DebugEnabled(EvidenceError):
    code = "evidence.debug_enabled"
    title = "Debug mode is enabled"


class SeptVeNotDisabled(EvidenceError):
    code = "evidence.sept_ve_disable_unset"
    title = "SEPT_VE_DISABLE is not set"


class ReportDataMismatch(EvidenceError):
    code = "evidence.report_data_mismatch"
    title = "Report data does not match the expected nonce"


class InsecureEvidenceRefused(EvidenceError):
    code = "evidence.insecure_refused"
    status = 403
    title = "Development evidence is not accepted in this profile"


# Event logs (docs/event-log.md): the log that says what was extended into the RTMRs.


class EventLogMalformed(EvidenceMalformed):
    code = "evidence.event_log_malformed"
    title = "Event log cannot be parsed (truncated or invalid record)"


class EventLogInconsistent(EvidenceError):
    code = "evidence.event_log_inconsistent"
    title = "Event log record contradicts itself or the log header"


class EventLogMismatch(EvidenceError):
    code = "evidence.event_log_mismatch"
    title = "Event log does not replay to the evidence's measurement registers"


class EventLogUnsupported(EvidenceUnsupported):
    code = "evidence.event_log_unsupported"
    title = "Event log not supported for this evidence or digest algorithm"


class CheckFailed(EvidenceError):
    """A verifier reported a failed check without naming a more specific code."""

    code = "evidence.check_failed"
    title = "A verification check failed"


# NVIDIA GPU (Hopper SPDM reports, RIMs).


class NvidiaTrailingData(EvidenceMalformed):
    code = "evidence.nvidia.trailing_data"
    title = "Bytes after the report signature are not zero padding within the bound"


class NvidiaRimMismatch(EvidenceError):
    code = "evidence.nvidia.rim_mismatch"
    title = "GPU measurements do not match the RIM golden values"


# Revocation sources that could not be used (issue 11 section 2; docs/revocation.md). The code names
# the item and its state: revocation.<item>_<state>. A revoked certificate stays
# evidence.certificate_revoked. Only a policy rule accepts an unchecked source: revocation.allow_unchecked,
# or, for an expired one, the grace collateral.max_age_past_next_update; the EAR then carries a warning.


class RevocationUnchecked(EvidenceError):
    code = "revocation.unchecked"
    title = "Revocation could not be checked"
    item: ClassVar[str] = ""
    state: ClassVar[str] = ""


class IntelPckCrlMissing(RevocationUnchecked):
    code, item, state = "revocation.intel_pck_crl_missing", "intel_pck_crl", "missing"
    title = "No Intel PCK CRL from the CA that issued the PCK certificate"


class IntelPckCrlExpired(RevocationUnchecked):
    code, item, state = "revocation.intel_pck_crl_expired", "intel_pck_crl", "expired"
    title = "The Intel PCK CRL is outside its validity window"


class IntelPckCrlInvalid(RevocationUnchecked):
    code, item, state = "revocation.intel_pck_crl_invalid", "intel_pck_crl", "invalid"
    title = "The Intel PCK CRL cannot be parsed"


class IntelPckCrlBadSignature(RevocationUnchecked):
    code, item, state = "revocation.intel_pck_crl_bad_signature", "intel_pck_crl", "bad_signature"
    title = "The Intel PCK CRL is not signed by a PCK CA chaining to the pinned Intel root"


class IntelRootCaCrlMissing(RevocationUnchecked):
    code, item, state = "revocation.intel_root_ca_crl_missing", "intel_root_ca_crl", "missing"
    title = "No Intel SGX Root CA CRL"


class IntelRootCaCrlExpired(RevocationUnchecked):
    code, item, state = "revocation.intel_root_ca_crl_expired", "intel_root_ca_crl", "expired"
    title = "The Intel SGX Root CA CRL is outside its validity window"


class IntelRootCaCrlInvalid(RevocationUnchecked):
    code, item, state = "revocation.intel_root_ca_crl_invalid", "intel_root_ca_crl", "invalid"
    title = "The Intel SGX Root CA CRL cannot be parsed"


class IntelRootCaCrlBadSignature(RevocationUnchecked):
    code, item, state = "revocation.intel_root_ca_crl_bad_signature", "intel_root_ca_crl", "bad_signature"
    title = "The Intel SGX Root CA CRL is not signed by the pinned Intel root"


class AmdCrlMissing(RevocationUnchecked):
    code, item, state = "revocation.amd_crl_missing", "amd_crl", "missing"
    title = "No AMD CRL from the ARK of the VCEK/VLEK chain"


class AmdCrlExpired(RevocationUnchecked):
    code, item, state = "revocation.amd_crl_expired", "amd_crl", "expired"
    title = "The AMD CRL is outside its validity window"


class AmdCrlInvalid(RevocationUnchecked):
    code, item, state = "revocation.amd_crl_invalid", "amd_crl", "invalid"
    title = "The AMD CRL cannot be parsed"


class AmdCrlBadSignature(RevocationUnchecked):
    code, item, state = "revocation.amd_crl_bad_signature", "amd_crl", "bad_signature"
    title = "The AMD CRL is not signed by the pinned ARK of the chain"


class NvidiaOcspMissing(RevocationUnchecked):
    code, item, state = "revocation.nvidia_ocsp_missing", "nvidia_ocsp", "missing"
    title = "No OCSP response for a certificate of the NVIDIA device chain"


class NvidiaOcspExpired(RevocationUnchecked):
    code, item, state = "revocation.nvidia_ocsp_expired", "nvidia_ocsp", "expired"
    title = "The NVIDIA OCSP response is outside its validity window"


class NvidiaOcspInvalid(RevocationUnchecked):
    code, item, state = "revocation.nvidia_ocsp_invalid", "nvidia_ocsp", "invalid"
    title = "The NVIDIA OCSP response cannot be parsed or is not a successful answer for this certificate"


class NvidiaOcspBadSignature(RevocationUnchecked):
    code, item, state = "revocation.nvidia_ocsp_bad_signature", "nvidia_ocsp", "bad_signature"
    title = "The NVIDIA OCSP response is not signed by the certificate's issuer or its designated responder"


REVOCATION_ITEMS = ("intel_pck_crl", "intel_root_ca_crl", "amd_crl", "nvidia_ocsp")
REVOCATION_STATES = ("missing", "expired", "invalid", "bad_signature")


def revocation_error(item: str, state: str) -> type[RevocationUnchecked]:
    """The leaf for ``revocation.<item>_<state>``.

    Raises:
        ValueError: an item or state outside REVOCATION_ITEMS x REVOCATION_STATES (a programming error).
    """
    for cls in RevocationUnchecked.__subclasses__():
        if cls.item == item and cls.state == state:
            return cls
    raise ValueError(f"no revocation code for {item!r} in state {state!r}")


def evidence_error_for(code: str | None) -> type[EvidenceError]:
    """The EvidenceError leaf with this code (a check's ``code``); CheckFailed when none has it."""
    todo: list[type[EvidenceError]] = [EvidenceError]
    while todo:
        cls = todo.pop()
        if cls.code == code:
            return cls
        todo.extend(cls.__subclasses__())
    return CheckFailed


# AMD SEV-SNP: the report and its VCEK/VLEK/ASK do not belong together (each its own attack).


class SnpChipIdMismatch(CollateralMismatch):
    code = "evidence.snp.chip_id_mismatch"
    title = "VCEK hwID does not match the report's chip id (VCEK from another machine)"


class SnpTcbMismatch(CollateralMismatch):
    code = "evidence.snp.tcb_mismatch"
    title = "VCEK/VLEK TCB extensions do not match the report's reported TCB"


class SnpProductMismatch(CollateralMismatch):
    code = "evidence.snp.product_mismatch"
    title = "Certificates or report CPUID belong to another AMD product line"


# --- policy and appraisal --------------------------------------------------------------------------


class PolicyError(CAServiceError):
    code = "policy.invalid"
    status = 422
    title = "Policy document refused"


class PolicyGpuOnly(PolicyError):
    """A GPU cannot attest where the CSR's key lives: a GPU item needs a CPU item bound with it."""

    code = "policy.gpu_only"
    title = "Policy admits GPU evidence without a CPU TEE item bound to the same challenge and key"


class PolicyNotFound(PolicyError):
    code = "policy.not_found"
    status = 404
    title = "Policy not found"


class PolicyInactive(PolicyError):
    code = "policy.inactive"
    status = 409
    title = "Policy has no active version"


class AppraisalFailed(CAServiceError):
    code = "appraisal.failed"
    status = 403
    title = "Evidence does not satisfy the policy"


class CertificateRequestRefused(CAServiceError):
    code = "certificate.refused"
    status = 403
    title = "Certificate request not allowed by the policy"


class CollateralExpiring(CertificateRequestRefused):
    """The certificate would expire with its collateral sooner than the policy's ``min_lifetime``."""

    code = "certificate.collateral_expiring"
    title = "Collateral the evidence was judged by expires before the minimum certificate lifetime"


class PolicyChanging(CAServiceError):
    """The policy's active version changed between the read and the claim of every attempt to issue
    (services/issuance.py): nothing was issued and the challenge is still usable."""

    code = "policy.changing"
    status = 503
    title = "The policy's active version changed while the request was appraised; retry"
    retry_after = 1


class PolicyRetired(PolicyError):
    code = "policy.retired"
    status = 409
    title = "Policy version is retired"


class PolicyVersionActive(PolicyError):
    code = "policy.version_active"
    status = 409
    title = "Policy version is active"


class TokenInvalid(Unauthorized):
    code = "auth.token_invalid"
    title = "Bearer token not recognised"


class TokenExpired(Unauthorized):
    code = "auth.token_expired"
    title = "Bearer token expired"


class TokenRevoked(Unauthorized):
    code = "auth.token_revoked"
    title = "Bearer token revoked"


class RoleForbidden(Forbidden):
    code = "auth.role_forbidden"
    title = "The token's role does not allow this"


# --- loader certificates (DESIGN.md flow 2; docs/loader.md) ---------------------------------------


class LoaderCertificateRefused(CAServiceError):
    code = "loader.refused"
    status = 403
    title = "Loader certificate refused"


class LoaderCvmCertificateMissing(LoaderCertificateRefused):
    """No valid, unrevoked CVM certificate of this CA attests the loader's TEE instance."""

    code = "loader.cvm_certificate_missing"
    title = "No valid CVM certificate for this TEE instance"


class LoaderInstanceUnknown(LoaderCertificateRefused):
    """The loader's evidence names no TEE instance (no MRTD/RTMR0-2, no SNP measurement and chip)."""

    code = "loader.instance_unknown"
    status = 422
    title = "The evidence does not identify a TEE instance"


# --- integrity reports (DESIGN.md flow 2; docs/integrity-report.md) --------------------------------


class IntegrityReportError(CAServiceError):
    code = "integrity.invalid"
    status = 422
    title = "Integrity report refused"


class IntegrityReportMalformed(IntegrityReportError):
    code = "integrity.malformed"
    title = "Integrity report is not a valid report document"


class IntegrityReportNotCanonical(IntegrityReportError):
    code = "integrity.not_canonical"
    title = "Integrity report is not RFC 8785 canonical JSON"


class IntegrityReportTimeInvalid(IntegrityReportError):
    code = "integrity.time_invalid"
    title = "Integrity report is dated in the future"


class IntegrityAlgMismatch(IntegrityReportError):
    code = "integrity.alg_mismatch"
    title = "Signature algorithm does not match the certificate's key"


class IntegritySignatureInvalid(IntegrityReportError):
    code = "integrity.signature_invalid"
    title = "Integrity report signature does not verify"


class IntegrityCertificateUnknown(IntegrityReportError):
    code = "integrity.certificate_unknown"
    title = "The report names no certificate issued by this CA"


class IntegrityCertificateUntrusted(IntegrityReportError):
    code = "integrity.certificate_untrusted"
    title = "The signing certificate does not chain to this CA"


class IntegrityCertificateRevoked(IntegrityReportError):
    code = "integrity.certificate_revoked"
    title = "The signing certificate is revoked"


class IntegrityCertificateExpired(IntegrityReportError):
    code = "integrity.certificate_expired"
    title = "The signing certificate is not valid at the report's time or now"


class IntegrityPolicyNotAllowed(IntegrityReportError):
    code = "integrity.policy_not_allowed"
    status = 403
    title = "The signing certificate was not issued under a loader policy"


class IntegrityComponentNotMeasured(IntegrityReportError):
    """The policy asks that a component of the report be one the loader measured into its log."""

    code = "integrity.component_not_measured"
    title = "A component the report lists is not what the loader measured into its event log"


class IntegrityReportNotFound(NotFound):
    code = "integrity.not_found"
    title = "No integrity report with this id"


# --- log, chain, config ----------------------------------------------------------------------------


class LogError(CAServiceError):
    code = "log.invalid"
    status = 400
    title = "Log request refused"


class ProofUnavailable(LogError):
    code = "log.proof_unavailable"
    title = "Proof cannot be produced for these parameters"


class LogEntryNotFound(LogError):
    code = "log.entry_not_found"
    status = 404
    title = "No log entry at this index"


class TilePathInvalid(LogError):
    code = "log.tile_path_invalid"
    title = "Not a C2SP tlog-tiles path"


class TileNotFound(LogError):
    code = "log.tile_not_found"
    status = 404
    title = "Tile not available at the current tree size"


class LeafInvalid(LogError):
    code = "log.leaf_invalid"
    title = "Log leaf is malformed"


class NotCheckpointed(LogError):
    code = "log.not_checkpointed"
    status = 404
    title = "No checkpoint covers this entry yet"


class InclusionProofInvalid(LogError):
    code = "log.inclusion_proof_invalid"
    status = 422
    title = "Inclusion proof does not verify"


class ConsistencyProofInvalid(LogError):
    code = "log.consistency_proof_invalid"
    status = 422
    title = "Consistency proof does not verify"


class CheckpointInvalid(LogError):
    code = "log.checkpoint_invalid"
    status = 422
    title = "Checkpoint or signed note is malformed"


class CheckpointSignatureInvalid(CheckpointInvalid):
    code = "log.checkpoint_signature_invalid"
    title = "Checkpoint signature does not verify with the log key"


class LogInconsistent(LogError):
    code = "log.inconsistent"
    status = 500
    title = "Stored log state disagrees with a published checkpoint"


class ConfigurationError(CAServiceError):
    code = "config.invalid"
    status = 500
    title = "Service is misconfigured"


class LogOriginMismatch(ConfigurationError):
    code = "log.origin_mismatch"
    title = "This replica's log origin is not the log's"


class NotInitialised(CAServiceError):
    code = "ca.not_initialised"
    status = 503
    title = "The CA is not initialised"


class DatabaseUnavailable(CAServiceError):
    """The database cannot be reached or did not answer in time (down, frozen, partitioned)."""

    code = "service.database_unavailable"
    status = 503
    title = "The database is unavailable; retry later"
    retry_after = 5


class DatabaseBusy(DatabaseUnavailable):
    """A lock or statement timeout cut the request off (a lock holder stalled or went away)."""

    code = "service.database_busy"
    title = "The database is busy (a lock or statement timed out); retry shortly"
    retry_after = 2


class NotInTee(CAServiceError):
    code = "ca.not_in_tee"
    status = 503
    title = "The CA runs outside a TEE"


class KeyDecryptionFailed(CAServiceError):
    code = "ca.key_decryption_failed"
    status = 500
    title = "A key at rest could not be decrypted"


class ChainError(CAServiceError):
    code = "anchor.chain_error"
    status = 502
    title = "Chain RPC failed"


class ChainUnavailable(ChainError):
    code = "anchor.chain_unavailable"
    status = 503
    title = "Chain RPC endpoint is unreachable"


class EmbeddedChainGone(ChainUnavailable):
    """No embedded chain file in CA_SERVICE_HOME (never made, or deleted): its anchors are gone."""


class EmbeddedChainInvalid(ChainError):
    code = "anchor.embedded_chain_invalid"
    status = 500
    title = "The embedded chain file in CA_SERVICE_HOME does not rebuild"


class ChainIdMismatch(ChainError):
    code = "anchor.chain_id_mismatch"
    status = 500
    title = "Chain RPC serves another chain id than the configured one"


class AnchorTransactionReverted(ChainError):
    code = "anchor.tx_reverted"
    title = "Anchor transaction reverted"


class AnchorContractMissing(ChainError):
    code = "anchor.contract_missing"
    status = 503
    title = "No anchor contract deployed (or its code is gone) on this chain"


class AnchorChainChanged(ChainError):
    code = "anchor.chain_changed"
    status = 503
    title = "The chain RPC serves another chain than the recorded anchor contract's"


class LeaseLost(CAServiceError):
    """A single-replica lease (db/lease.py) went to another holder: this one froze or was cut off."""

    code = "lease.lost"
    status = 409
    title = "Another replica took the lease over"


class CollateralDutyLeaseLost(LeaseLost):
    """The collateral duty's lease went to another replica: this run stops and writes nothing."""

    code = "collateral.duty_lease_lost"
    title = "Another replica took the collateral duty's lease over"


class CollateralDutyBusy(CAServiceError):
    """Another process holds the collateral duty's lease (serve's duty, a ``collateral refresh``, another
    ``ca-service reappraise``): two re-appraisals never act at once, so this one does not start."""

    code = "collateral.duty_busy"
    status = 409
    title = "Another process holds the collateral duty's lease"


class AnchorLeaseLost(LeaseLost):
    """The anchoring worker's lease went to another worker (this one froze or was cut off)."""

    code = "anchor.lease_lost"
    status = 409
    title = "Another anchoring worker took the lease over"


class AnchorNotFound(NotFound):
    code = "anchor.not_found"
    title = "No anchor covers this log entry yet"
