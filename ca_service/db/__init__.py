"""Persistence: SQLAlchemy 2 models and sessions. Only services/, cli/ and api/ import this."""
