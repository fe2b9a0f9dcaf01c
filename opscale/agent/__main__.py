"""`python -m opscale.agent ...` = `opscale agent ...`, without importing the whole CLI (fast restarts)."""

from opscale.cli.agent import main

if __name__ == "__main__":
    main()
