"""`python -m opscale.services.placement` = `opscale serve placement`, settings from the environment only."""

from opscale.services.main import main

if __name__ == "__main__":
    main("placement")
