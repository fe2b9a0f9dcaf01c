"""`python -m services.decision` = `opscale serve decision`, settings from the environment only (wiring)."""

from services.main import main

if __name__ == "__main__":
    main("decision")
