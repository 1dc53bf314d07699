"""Collateral IO edge: vendor endpoints (an allowlist), fetchers (HTTP, fake, offline-bundle replay),
verification of each response before it is cached, and the database cache.

Use cases (fetch on miss, import, refresh, assembly for the verifiers) are in
``ca_service/services/collateral.py``.
"""
