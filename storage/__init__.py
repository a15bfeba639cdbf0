"""Persistence: SQLAlchemy models, repositories returning plain dataclasses, Alembic migrations."""
