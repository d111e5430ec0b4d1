"""Persistence: SQLAlchemy models, Alembic migrations, sessions and the audit trail. Knows nothing of DICOM."""
