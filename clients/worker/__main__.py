"""`python -m clients.worker ...` = `opscale worker ...`, without importing the whole CLI (fast start)."""

from clients.cli.worker import main

if __name__ == "__main__":
    main()
