"""Trace-driven simulation of the data plane with the real policies in the loop, and the evaluation.

- ``traces``: the trace readers (Azure 2023 CSV, Mooncake-style JSONL, plain CSV, ServeGen rates + PMF)
  and time/rate scaling; packaged traces under ``data/`` (see its README for provenance and licences).
- ``engine``: the discrete-event data plane (pure: no clock, no randomness).
- ``feed``: simulated samples through ingest's validation and counter-store writes, windows through the
  decision service's ``read_load``.
- ``run``: one simulation (``simulate``); ``experiment``: scenarios, specs per policy, lower bound,
  metrics; ``evaluate``: the matrix and its reports; ``plots``: PNGs (matplotlib, imported lazily).
"""
