"""`python -m services.placement [flags]` = `opscale serve placement [flags]`."""

import sys

from clients.cli.main import app

if __name__ == "__main__":
    app(["serve", "placement", *sys.argv[1:]])
