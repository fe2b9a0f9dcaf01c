"""`python -m opscale.services.decision` = `opscale serve decision`, settings from the environment only."""

from opscale.services.main import main

if __name__ == "__main__":
    main("decision")
