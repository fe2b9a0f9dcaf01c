"""Generate the Python stubs under opscale/api/ from protos/, or check that they are current.

    python scripts/protos.py           # regenerate
    python scripts/protos.py --check   # exit 1 and list the files that drifted

The proto tree mirrors the Python package (protos/opscale/api/<area>/v1/x.proto is package
opscale.api.<area>.v1 and generates opscale/api/<area>/v1/x_pb2.py), so generated imports are
importable as they are and never rewritten.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.resources
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT_PACKAGE = ROOT / "opscale" / "api"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out_root: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Every generated directory is a package, so `import opscale.api.decision.v1.decision_pb2` works.
    api = out_root / "opscale" / "api"
    for directory in [api, *(d for d in api.rglob("*") if d.is_dir())]:
        (directory / "__init__.py").touch()


def generated_files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.name.endswith(GENERATED_SUFFIXES)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the checked-in stubs differ")
    check = parser.parse_args().check
    with tempfile.TemporaryDirectory() as tmp:
        out_root = Path(tmp)
        generate(out_root)
        fresh_root = out_root / "opscale" / "api"
        fresh, current = generated_files(fresh_root), generated_files(OUT_PACKAGE)
        drifted = sorted(
            str(p)
            for p in fresh | current
            if p not in fresh
            or p not in current
            or not filecmp.cmp(fresh_root / p, OUT_PACKAGE / p, shallow=False)
        )
        if check:
            if drifted:
                print(
                    "generated stubs are out of date with protos/; run `make protos`:", *drifted, sep="\n  "
                )
                return 1
            print(f"{len(fresh)} generated files match protos/")
            return 0
        for stale in current - fresh:
            (OUT_PACKAGE / stale).unlink()
        for rel in fresh:
            (OUT_PACKAGE / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fresh_root / rel, OUT_PACKAGE / rel)
            for parent in (OUT_PACKAGE / rel).relative_to(OUT_PACKAGE).parents:
                (OUT_PACKAGE / parent / "__init__.py").touch()
        print(f"wrote {len(fresh)} files under {OUT_PACKAGE.relative_to(ROOT)}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
