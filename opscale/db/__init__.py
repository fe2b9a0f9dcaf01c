"""Persistence: schema (``models``), engines (``engine``), migrations (``migrate``), repositories
(``repo``) returning plain records (``records``), and the status lifecycles (``status``).

Deliberately imports nothing: ``opscale.db.status`` is pure and used by layers that must not pull in
SQLAlchemy, and importing it runs this file first.
"""
