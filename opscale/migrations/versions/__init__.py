"""Alembic revisions. A package (not a bare folder) so setuptools ships it inside the wheel."""
