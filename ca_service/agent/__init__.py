"""The CVM side of flow 1: challenge, key, CSR, evidence (configfs-tsm or the sim TEE), request."""
