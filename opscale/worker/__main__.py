"""`python -m opscale.worker ...` = `opscale worker ...`, without importing the whole CLI (fast start)."""

from opscale.cli.worker import main

if __name__ == "__main__":
    main()
