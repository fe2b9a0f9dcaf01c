"""`python -m services.ingest` = `opscale serve ingest`, settings from the environment only (wiring)."""

from services.main import main

if __name__ == "__main__":
    main("ingest")
