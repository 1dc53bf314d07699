"""The ``ca-service`` command line: one module per command group."""
