"""Alembic migration environment and revisions for opscale (shipped in the wheel; see opscale.db.migrate)."""
