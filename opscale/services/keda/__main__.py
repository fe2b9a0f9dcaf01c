"""`python -m opscale.services.keda` = `opscale serve keda`, settings from the environment only (wiring)."""

from opscale.services.main import main

if __name__ == "__main__":
    main("keda")
