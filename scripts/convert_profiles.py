#!/usr/bin/env python3
"""Convert the shared operator measurements into opscale's packaged profile format.

    .venv/bin/python scripts/convert_profiles.py ../shared/profiles/h100 \
        [--out opscale/model/data/profiles] [--date YYYY-MM-DD]

Reads every ``<model>.json`` in the source folder (``gpu.json`` is attached to each as
``gpu_measured`` when the model file has no ``gpu_meta``), composes our operators
(``opscale.model.convert`` documents how), validates the result with the same loader the runtime
uses, and writes ``<out>/<gpu_type>/<model>.json``. The output is deterministic for a given source and
date, so re-running it shows up in ``git diff`` only when the measurements changed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from opscale.errors import OpscaleError
from opscale.model.convert import convert_source
from opscale.model.profiles import parse_profile

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "opscale" / "model" / "data" / "profiles"


def render(doc: dict[str, Any]) -> str:
    """Indented JSON with one point per line, so a diff shows which measurements moved."""
    points: list[str] = []
    stages = {
        stage: {kind: [_hold(points, p) for p in pts] for kind, pts in ops.items()}
        for stage, ops in doc["stages"].items()
    }
    refs = [_hold(points, r) for r in doc["reference_layers"]]
    text = json.dumps({**doc, "stages": stages, "reference_layers": refs}, indent=1)
    for i, point in enumerate(points):
        text = text.replace(f'"@point{i}@"', point, 1)
    return text + "\n"


def _hold(points: list[str], point: dict[str, Any]) -> str:
    points.append(json.dumps(point, separators=(", ", ": ")))
    return f"@point{len(points) - 1}@"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "source", type=Path, help="folder with <model>.json files (e.g. ../shared/profiles/h100)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="profiles root to write into")
    parser.add_argument("--date", default=dt.date.today().isoformat(), help="conversion date to record")
    args = parser.parse_args(argv)

    source: Path = args.source
    files = sorted(p for p in source.glob("*.json") if p.name != "gpu.json")
    if not files:
        print(f"no <model>.json files in {source}", file=sys.stderr)
        return 2
    gpu_file = source / "gpu.json"
    gpu_meta = json.loads(gpu_file.read_text()) if gpu_file.exists() else None
    for path in files:
        raw = path.read_bytes()
        src = json.loads(raw)
        if gpu_meta and not src.get("gpu_meta"):
            src["gpu_meta"] = gpu_meta
        # Record the path from the shared root down (profiles/<gpu>/<file>), not this machine's layout.
        rel = "/".join(path.resolve().parts[-3:])
        try:
            doc = convert_source(
                src, source_file=rel, source_sha256=hashlib.sha256(raw).hexdigest(), converted_on=args.date
            )
            profile = parse_profile(doc, origin=str(path))
        except OpscaleError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            return 1
        out = args.out / profile.gpu_type / f"{profile.model}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(doc))
        points = sum(len(op.points) for op in profile.operators)
        print(f"{path.name} -> {out} ({points} points)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
