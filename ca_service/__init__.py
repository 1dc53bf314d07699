"""ca-service: a certification authority and attestation verifier for confidential computing."""

__version__ = "0.1.0"
