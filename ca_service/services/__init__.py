"""Use cases. Each service function owns its transaction; api/ and cli/ call only these."""
