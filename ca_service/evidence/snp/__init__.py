"""AMD SEV-SNP attestation reports (raw, or wrapped by Azure's HCL), verified with VCEK/VLEK chains.

``parse.py`` reads the report, ``certs.py`` the AMD certificates and their extensions,
``chain.py`` verifies and caches ARK -> ASK/ASVK -> VCEK/VLEK and the CRL, ``azure.py`` unwraps the
HCL report, and ``verify.py`` (``verify_snp``) puts the steps together.
"""
