"""Turn the chaos suite's measurements (out/chaos/results.json) into the table of RELIABILITY.md.

    .venv/bin/python -m pytest -q tests/chaos          # measures; writes out/chaos/results.json
    .venv/bin/python scripts/reliability_table.py      # prints the Markdown table
    .venv/bin/python scripts/reliability_table.py --write  # replaces the table in RELIABILITY.md

Only what the suite measured is printed; a figure it could not measure (a recovery that never came)
is printed as such, never filled in.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "out" / "chaos" / "results.json"
DOC = ROOT / "RELIABILITY.md"
BEGIN, END = "<!-- chaos-table:begin -->", "<!-- chaos-table:end -->"

# In the order the suite runs them.
ORDER = (
    "worker kill -9",
    "agent kill -9",
    "ingest kill -9",
    "decision leader kill -9",
    "decision leader SIGSTOP",
    "placement kill -9",
    "Redis outage",
    "PostgreSQL outage",
)


def _seconds(value: float | None, never: str = "did not recover within the bound") -> str:
    return never if value is None else f"{value:.1f} s"


# Extra figures a scenario records, in the words the table uses.
TIMES = (
    ("agent_restart_s", "agent back after"),
    ("ingest_down_s", "ingest back after"),
    ("placement_down_s", "placement back after"),
    ("agents_reconnected_s", "all agents reconnected after"),
    ("takeover_s", "standby decided after"),
    ("decisions_resume_after_return_s", "decisions resumed, after the return, in"),
)


def _behaviour(r: dict[str, Any]) -> str:
    parts = [f"{label} {_seconds(r[key], 'never (within the bound)')}" for key, label in TIMES if key in r]
    if "victim_restarted" in r:
        parts.append(
            "the killed worker restarted" if r["victim_restarted"] else "the killed worker NOT restarted"
        )
    if "late_writes_by_old_leader" in r:
        late = r["late_writes_by_old_leader"]
        parts.append(
            "late writes not measured (no takeover)"
            if late is None
            else f"{late} late decisions by the woken leader"
        )
    parts.append(f"{r['healthy_replicas_restarted']} of {r['replicas']} healthy replicas restarted")
    parts.append(f"at most {r['max_extra_processes']} worker processes beyond the replicas")
    if r.get("log_lines"):
        worst = max(r["log_lines"].items(), key=lambda kv: kv[1])
        parts.append(f"{worst[1]:,} log lines from {worst[0]} in the {r['outage_s']:.0f} s outage")
    tracebacks = sum(r.get("tracebacks", {}).values())
    parts.append(f"{tracebacks} tracebacks logged")
    return "; ".join(parts)


def _data(r: dict[str, Any]) -> str:
    sent, stored = r["samples_sent"], r["samples_stored"]
    if stored is None:
        return f"{sent:,} sent, stored count unreadable"
    if sent == stored:
        return f"none: {sent:,} sent = {stored:,} stored"
    return f"{sent:,} sent, {stored:,} stored ({stored - sent:+,})"


def table(doc: dict[str, Any]) -> str:
    rows = [
        f"Measured {doc['date']} on {doc['machine']}; suite wall time {doc['suite_wall_s']:.0f} s. "
        f"Settings: {', '.join(f'{k} {v}' for k, v in sorted(doc['settings'].items()))}.",
        "",
        "| fault | expected | measured behaviour | back to steady state | data lost / duplicated |",
        "|---|---|---|---|---|",
    ]
    scenarios = doc["scenarios"]
    for name in [n for n in ORDER if n in scenarios] + sorted(set(scenarios) - set(ORDER)):
        r = scenarios[name]
        rows.append(
            f"| {r['fault']} | {r['expected']} | {_behaviour(r)} | {_seconds(r['recovery_s'])} | {_data(r)} |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--write", action="store_true", help=f"replace the table in {DOC.name}")
    parser.add_argument("--doc", type=Path, default=DOC, help="the Markdown file --write edits")
    args = parser.parse_args()
    if not args.results.exists():
        print(f"error: {args.results} does not exist; run pytest tests/chaos first", file=sys.stderr)
        return 2
    text = table(json.loads(args.results.read_text()))
    if not args.write:
        print(text)
        return 0
    current = args.doc.read_text()
    if BEGIN not in current or END not in current:
        print(f"error: {args.doc} has no {BEGIN} … {END} block to replace", file=sys.stderr)
        return 2
    head, rest = current.split(BEGIN, 1)
    args.doc.write_text(f"{head}{BEGIN}\n{text}\n{END}{rest.split(END, 1)[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
