"""The ``opscale`` command: the CLI, or one line naming the extra that a plain install lacks.

``pip install opscale`` installs the client SDK alone (grpcio, protobuf, the OpenTelemetry API), so that
a serving framework importing ``OpscaleClient`` pulls in no database, plotting or GPU libraries. The
command line, the services and the node agent need ``pip install 'opscale[server]'``; without it the
command says so instead of printing a ``ModuleNotFoundError`` traceback. (This package's ``__init__``
is empty, so importing this module needs nothing beyond the standard library.)
"""

from __future__ import annotations

import sys

#: Top-level packages of this distribution: a missing one of these is a broken install, not a missing extra.
_OWN = frozenset({"opscale"})


def main() -> None:
    try:
        from opscale.cli.main import main as cli
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if not missing or missing in _OWN:
            raise
        sys.stderr.write(
            f"opscale: the command line needs the server extra (Python module {missing!r} is not "
            "installed): pip install 'opscale[server]'\n"
        )
        raise SystemExit(2) from None
    cli()
