"""`python -m opscale.services.ingest` = `opscale serve ingest`, settings from the environment only."""

from opscale.services.main import main

if __name__ == "__main__":
    main("ingest")
