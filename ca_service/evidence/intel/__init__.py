"""Intel DCAP: TDX (quote v4/v5) and SGX (quote v3) verification on pyca/cryptography + pyasn1."""
