"""`opscale db …`: schema migrations (Alembic) for the configured database."""

from __future__ import annotations

from typing import Annotated

import typer

from opscale.cli.common import ConfigOpt, DatabaseOpt, echo, handle_errors, settings
from opscale.config import redact_url
from opscale.db.migrate import current_revision, downgrade, head_revision, upgrade
from opscale.services.runtime import sqlite_path

app = typer.Typer(help="Database schema: upgrade, downgrade, current revision.", no_args_is_help=True)


@app.command("upgrade")
@handle_errors
def upgrade_cmd(
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
    revision: Annotated[str, typer.Option(help="target revision")] = "head",
) -> None:
    """Create or migrate the schema to REVISION (default: head)."""
    url = settings(config, database_url=database_url).database_url
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    before = current_revision(url)
    upgrade(url, revision)
    echo(f"database {redact_url(url)}: {before or 'empty'} -> {current_revision(url)}")


@app.command("downgrade")
@handle_errors
def downgrade_cmd(
    revision: Annotated[str, typer.Argument(help="target revision, or 'base' for an empty schema")],
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Migrate the schema down to REVISION."""
    url = settings(config, database_url=database_url).database_url
    before = current_revision(url)
    downgrade(url, revision)
    echo(f"database {redact_url(url)}: {before or 'empty'} -> {current_revision(url) or 'empty'}")


@app.command("current")
@handle_errors
def current_cmd(config: ConfigOpt = None, database_url: DatabaseOpt = None) -> None:
    """Print the schema revision of the database and the one this opscale needs."""
    url = settings(config, database_url=database_url).database_url
    current, head = current_revision(url), head_revision()
    state = "up to date" if current == head else "needs 'opscale db upgrade'"
    echo(f"database {redact_url(url)}: at {current or 'empty'}, head {head} ({state})")
