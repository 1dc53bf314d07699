"""Errors of the collateral IO edge, in the one ``CAServiceError`` tree (codes ``collateral.*``).

Verification failures of a collateral item keep the verifier's own leaf (``evidence.collateral_invalid``,
``evidence.root_untrusted``...), with the item's URL added to its fields; what only the IO edge can get
wrong (a host outside the allowlist, a vendor outage, a rollback) has its own leaf here.
"""

from __future__ import annotations

from ca_service.errors import CAServiceError


class CollateralError(CAServiceError):
    code = "collateral.error"
    status = 502
    title = "Collateral could not be obtained"


class HostNotAllowed(CollateralError):
    code = "collateral.host_not_allowed"
    status = 400
    title = "Collateral URL is not on the vendor allowlist"


class UrlNotAllowed(CollateralError):
    code = "collateral.url_not_allowed"
    status = 400
    title = "Collateral URL is not a known vendor endpoint"


class FetchFailed(CollateralError):
    code = "collateral.fetch_failed"
    status = 502
    title = "Vendor collateral service did not answer with the collateral"


class BundleInvalid(CollateralError):
    code = "collateral.bundle_invalid"
    status = 400
    title = "Offline collateral bundle is malformed"


class RollbackRefused(CollateralError):
    code = "collateral.rollback_refused"
    status = 409
    title = "Collateral is older than the cached TCB evaluation data number"

