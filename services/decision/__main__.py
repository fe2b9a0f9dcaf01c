"""`python -m services.decision [flags]` = `opscale serve decision [flags]`."""

import sys

from clients.cli.main import app

if __name__ == "__main__":
    app(["serve", "decision", *sys.argv[1:]])
