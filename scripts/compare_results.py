"""Compare two ``opscale evaluate`` results.json files, ignoring what differs between any two runs.

    python scripts/compare_results.py before/results.json after/results.json

Prints every differing path with both values and exits 1 if there is one; wall times (``wall_s``) and
the command line that produced each file are left out. It is how a refactor shows that evaluate's
numbers did not move (see issue 12's closing note).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

IGNORED = {"wall_s", "command"}


def differences(a: Any, b: Any, path: str = "") -> Iterator[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in IGNORED:
                yield from differences(a.get(key), b.get(key), f"{path}/{key}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from differences(x, y, f"{path}[{i}]")
    elif a != b:
        yield f"{path or '/'}: {a!r} != {b!r}"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    before, after = (json.loads(Path(p).read_text()) for p in argv)
    found = list(differences(before, after))
    print("\n".join(found) if found else "identical (wall times and command lines aside)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
