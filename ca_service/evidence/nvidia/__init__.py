"""NVIDIA GPU (Hopper) attestation: SPDM GET_MEASUREMENTS report, device chain, RIM golden values."""
