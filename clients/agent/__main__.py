"""`python -m clients.agent ...` = `opscale agent ...`, without importing the whole CLI (fast restarts)."""

from clients.cli.agent import main

if __name__ == "__main__":
    main()
