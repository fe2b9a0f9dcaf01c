"""The migrations produce exactly the models, go down and up again, and guard service start-up.

Every test runs on SQLite and on PostgreSQL (``db_url``). Schema only ever comes from Alembic here.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from opscale.db import migrate
from opscale.db.engine import make_sync_engine
from opscale.db.models import Base
from opscale.errors import FailedPrecondition, InvalidArgument

OPSCALE_TABLES = set(Base.metadata.tables)


def _diff(url: str, metadata: sa.MetaData = Base.metadata) -> list[Any]:
    engine = make_sync_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = make_sync_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_from_empty_matches_the_models(db_url: str) -> None:
    migrate.upgrade(db_url)
    assert _tables(db_url) == OPSCALE_TABLES | {"alembic_version"}
    assert _diff(db_url) == []


def test_the_comparison_can_fail(db_url: str) -> None:
    # Guards the test above against passing vacuously: a model change must show up as a diff.
    migrate.upgrade(db_url)
    changed = sa.MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["deployments"].append_column(sa.Column("extra", sa.Integer()))
    changed.tables["nodes"].c.status.type = sa.String(40)
    kinds = {entry[0] if isinstance(entry, tuple) else entry[0][0] for entry in _diff(db_url, changed)}
    assert kinds == {"add_column", "modify_type"}


def test_downgrade_to_base_then_upgrade_again(db_url: str) -> None:
    migrate.upgrade(db_url)
    migrate.downgrade(db_url, "base")
    assert _tables(db_url) & OPSCALE_TABLES == set()
    assert migrate.current_revision(db_url) is None
    migrate.upgrade(db_url)
    assert migrate.current_revision(db_url) == migrate.head_revision()
    assert _diff(db_url) == []


def test_foreign_keys_are_enforced_after_migrating(db_url: str) -> None:
    # Migrations run with SQLite foreign keys off (batch mode); normal engines must have them on.
    migrate.upgrade(db_url)
    engine = make_sync_engine(db_url)
    try:
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.execute(
                sa.text(
                    'INSERT INTO gpus (node_id, "index", uuid, gpu_type, memory_bytes, labels) '
                    "VALUES (999, 0, 'GPU-x', 'H100', 1, '{}')"
                )
            )
    finally:
        engine.dispose()


def test_ensure_at_head_on_an_empty_database(db_url: str) -> None:
    with pytest.raises(FailedPrecondition) as info:
        migrate.ensure_at_head(db_url)
    message = str(info.value)
    assert message.startswith("database at revision empty, this opscale needs ")
    assert migrate.head_revision() in message
    assert "run 'opscale db upgrade --database-url " in message


def test_ensure_at_head_on_an_older_database(db_url: str) -> None:
    migrate.upgrade(db_url)
    migrate.downgrade(db_url, "base")  # the only revision older than head today
    with pytest.raises(FailedPrecondition, match="opscale db upgrade"):
        migrate.ensure_at_head(db_url)


NEXT_REVISION = """
from alembic import op
import sqlalchemy as sa

revision = "next00000001"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("future_thing", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade() -> None:
    op.drop_table("future_thing")
"""


def test_ensure_at_head_on_a_database_one_revision_behind(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulates the next release: a copy of the shipped migrations plus one revision on top.
    migrate.upgrade(db_url)
    shipped_head = migrate.head_revision()
    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.SCRIPT_LOCATION, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "2099_01_01_next.py").write_text(NEXT_REVISION.format(down=shipped_head))
    monkeypatch.setattr(migrate, "SCRIPT_LOCATION", scripts)
    assert migrate.head_revision() == "next00000001"
    with pytest.raises(FailedPrecondition) as info:
        migrate.ensure_at_head(db_url)
    assert str(info.value).startswith(
        f"database at revision {shipped_head}, this opscale needs next00000001; run 'opscale db upgrade "
    )
    migrate.upgrade(db_url)
    migrate.ensure_at_head(db_url)
    migrate.downgrade(db_url, shipped_head)
    assert migrate.current_revision(db_url) == shipped_head
    assert "future_thing" not in _tables(db_url)


def test_ensure_at_head_passes_at_head(db_url: str) -> None:
    migrate.upgrade(db_url)
    migrate.ensure_at_head(db_url)


def test_the_hint_names_the_database_but_not_the_password(pg_url: str) -> None:
    # The test server trusts every local login, so a password in the URL is accepted and ignored.
    with_password = pg_url.replace("postgres@", "postgres:hunter2@", 1)
    assert "hunter2" in with_password
    with pytest.raises(FailedPrecondition) as info:
        migrate.ensure_at_head(with_password)
    assert "hunter2" not in str(info.value)
    assert f"--database-url {pg_url}'" in str(info.value)


def test_a_database_from_a_newer_opscale_is_refused(db_url: str) -> None:
    migrate.upgrade(db_url)
    engine = make_sync_engine(db_url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))
    engine.dispose()
    with pytest.raises(FailedPrecondition, match="does not know"):
        migrate.ensure_at_head(db_url)
    with pytest.raises(FailedPrecondition, match="does not know"):
        migrate.upgrade(db_url)


def test_unknown_target_revision_is_an_invalid_argument(sqlite_url: str) -> None:
    with pytest.raises(InvalidArgument, match="revision"):
        migrate.upgrade(sqlite_url, "nope")


async def test_upgrade_from_a_worker_thread_while_a_loop_runs(db_url: str) -> None:
    # How services call it: the event loop keeps running while Alembic works in a thread.
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        await asyncio.to_thread(migrate.upgrade, db_url)
        await asyncio.to_thread(migrate.ensure_at_head, db_url)
    finally:
        task.cancel()
    assert ticks > 0
    assert await asyncio.to_thread(migrate.current_revision, db_url) == migrate.head_revision()
