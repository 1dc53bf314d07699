"""Certificate profiles, the attestation extension, EAR claims (PURE)."""
