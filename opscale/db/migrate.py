"""Schema migrations in code: what ``opscale db upgrade`` and service start-up call.

The Alembic ``Config`` is built here, pointing at the installed ``migrations`` package, so nothing
depends on the working directory or on ``alembic.ini`` (which only serves the ``alembic`` command in
a checkout). Everything is synchronous, like Alembic; from async code call it with
``await asyncio.to_thread(upgrade, url)``. It never touches an event loop, so it is safe in a worker
thread while a loop runs elsewhere. Alembic keeps its ``context``/``op`` proxies in module globals, so
migrations in one process are serialised by a lock.

Services call :func:`ensure_at_head` at start-up and refuse to serve on an old schema rather than
migrating behind the operator's back: migrations are a deliberate step (a one-shot job in compose
and Kubernetes, ``opscale db upgrade`` by hand).
"""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError

from opscale import migrations
from opscale.db.engine import make_sync_engine, public_url
from opscale.errors import FailedPrecondition, InvalidArgument

_LOCK = threading.Lock()

SCRIPT_LOCATION = Path(migrations.__file__).resolve().parent


def alembic_config(url: str | None = None) -> Config:
    """The same configuration ``alembic.ini`` gives, built without reading any file."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(slug)s")
    cfg.set_main_option("timezone", "UTC")
    cfg.attributes["configure_logger"] = False
    if url is not None:
        # An attribute, not a main option: configparser would read a '%' in a password as interpolation.
        cfg.attributes["sqlalchemy.url"] = url
    return cfg


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision this build of opscale ships."""
    heads = _script().get_heads()
    if len(heads) != 1:  # two heads is a merge someone forgot: our bug, not the operator's
        raise RuntimeError(f"migrations have {len(heads)} heads ({', '.join(heads)}); merge them")
    return heads[0]


def _known(revision: str) -> bool:
    try:
        return _script().get_revision(revision) is not None
    except CommandError:
        return False


def _check_target(revision: str) -> None:
    if revision in ("head", "heads", "base") or _known(revision):
        return
    raise InvalidArgument(
        f"revision: '{revision}' is not a migration this opscale ships (head is {head_revision()})",
        field="revision",
    )


def _unknown_revision(current: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"database at revision {current}, which this opscale does not know (written by a newer "
        f"version?); this opscale's head is {head_revision()}: run a newer opscale against it"
    )


def _check_current_known(url: str) -> None:
    current = current_revision(url)
    if current is not None and not _known(current):
        raise _unknown_revision(current)


def current_revision(url: str) -> str | None:
    """The revision the database is stamped with, or None for an empty (never migrated) database."""
    engine = make_sync_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` forward to ``revision`` (default: this build's head)."""
    _check_target(revision)
    with _LOCK:
        _check_current_known(url)
        command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate back to ``revision`` (``"base"`` drops every opscale table). Data in them is lost."""
    _check_target(revision)
    with _LOCK:
        _check_current_known(url)
        command.downgrade(alembic_config(url), revision)


def ensure_at_head(url: str) -> None:
    """Raise ``FailedPrecondition`` with the command to run unless the database is at head."""
    current = current_revision(url)
    head = head_revision()
    if current == head:
        return
    if current is not None and not _known(current):
        raise _unknown_revision(current)
    raise FailedPrecondition(
        f"database at revision {current or 'empty'}, this opscale needs {head}; "
        f"run 'opscale db upgrade --database-url {public_url(url)}'"
    )
