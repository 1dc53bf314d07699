"""Thin strict wrappers over pyca/cryptography (pure)."""
