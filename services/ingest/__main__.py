"""`python -m services.ingest [flags]` = `opscale serve ingest [flags]`."""

import sys

from clients.cli.main import app

if __name__ == "__main__":
    app(["serve", "ingest", *sys.argv[1:]])
