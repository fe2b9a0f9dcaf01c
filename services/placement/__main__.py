"""`python -m services.placement` = `opscale serve placement`, settings from the environment only (wiring)."""

from services.main import main

if __name__ == "__main__":
    main("placement")
