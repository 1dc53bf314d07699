"""AWS Nitro Enclaves attestation documents (COSE_Sign1, ES384, chain to the AWS Nitro root)."""
