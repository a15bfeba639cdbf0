"""Alembic migrations of the gateway's schema (run through storage.migrate)."""
