"""Request traces: one value type and one reader per format.

A ``Trace`` is three aligned numpy arrays — arrival time (s, from 0, sorted), prompt tokens, output
tokens — plus a name. Readers:

* ``read_azure_csv``: Azure LLM inference 2023 (``TIMESTAMP,ContextTokens,GeneratedTokens``; naive
  datetimes with up to 7 fractional digits).
* ``read_jsonl``: one JSON object per line with ``timestamp`` (ms), ``input_length``, ``output_length``
  (Mooncake's format; other keys such as ``hash_ids`` are ignored).
* ``read_plain_csv``: ``arrival_s,input_tokens,output_tokens``.
* ``read_servegen``: a rate file (``window_start_s,total_rate_rps,…,req_weighted_client_cv``) and a
  length PMF (``field,tokens,prob``): arrivals are generated per window as a gamma renewal process
  with the window's inter-arrival CV (capped, see ``MAX_CV``), lengths drawn from the PMF; seeded.

``load_trace(name_or_path)`` picks the reader from a packaged name (``azure-conv``, ``azure-code``,
``servegen-m-large``), a ServeGen pair by path (any category's ``*_aggregate_rate_10min.csv`` with its
``*_length_pmf.csv`` beside it, or ``RATE.csv,PMF.csv``), or the file's suffix and header. Every malformed
row raises ``TraceError`` naming the file, line and column. ``scale_time`` compresses the clock;
``scale_rate`` thins or duplicates requests.

Adding a format: write ``read_x(path) -> Trace`` raising ``TraceError`` and add its suffix to
``_BY_SUFFIX``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from opscale.errors import InvalidArgument

DATA = Path(__file__).parent / "data"
COPY_SPREAD_S = 30.0  # scale_rate: copies of a request land within ±15 s of it
PACKAGED: dict[str, tuple[Path, ...]] = {
    "azure-conv": (DATA / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv",),
    "azure-code": (DATA / "azure_llm_2023" / "AzureLLMInferenceTrace_code.csv",),
    "servegen-m-large": (
        DATA / "servegen" / "servegen_m-large_aggregate_rate_10min.csv",
        DATA / "servegen" / "servegen_m-large_length_pmf.csv",
    ),
}
MAX_REQUESTS = 20_000_000  # a replay's requests (the simulator keeps per-request arrays in memory)
# ServeGen's request-weighted client CV reaches 32 in a few windows (one client's burst); a gamma
# renewal process with CV 32 puts a window's requests into a handful of instants, which no single
# aggregate stream shows. Capped here; the cap is reported with the trace.
MAX_CV = 4.0
MAX_TOKENS = 1_000_000
MAX_REPLAY_S = 7 * 86_400.0  # the simulator keeps per-second series of the replay
TEXT = "utf-8-sig"  # UTF-8, with or without the byte-order mark spreadsheets write


class TraceError(InvalidArgument):
    """A malformed trace row: names the file, the 1-based line and the column."""

    def __init__(self, path: str | Path, line: int, column: str, why: str) -> None:
        super().__init__(f"{path}:{line}: column {column!r}: {why}", field=column)
        self.path = str(path)
        self.line = line
        self.column = column


@dataclass(frozen=True, slots=True, eq=False)
class Trace:
    name: str
    arrival_s: np.ndarray  # float64, sorted, first at >= 0
    input_tokens: np.ndarray  # int64 >= 1
    output_tokens: np.ndarray  # int64 >= 1
    note: str = ""

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        if len(self.input_tokens) != n or len(self.output_tokens) != n:
            raise InvalidArgument("trace arrays must have the same length", field="trace")

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def duration_s(self) -> float:
        return float(self.arrival_s[-1]) if len(self) else 0.0

    def window(self, start_s: float, end_s: float) -> Trace:
        """Requests arriving in [start_s, end_s), re-based to start at 0."""
        m = (self.arrival_s >= start_s) & (self.arrival_s < end_s)
        return Trace(
            self.name, self.arrival_s[m] - start_s, self.input_tokens[m], self.output_tokens[m], self.note
        )

    def stats(self) -> dict[str, float]:
        d = max(self.duration_s, 1e-9)
        return {
            "requests": float(len(self)),
            "duration_s": self.duration_s,
            "mean_rps": len(self) / d,
            "input_mean": float(self.input_tokens.mean()) if len(self) else 0.0,
            "output_mean": float(self.output_tokens.mean()) if len(self) else 0.0,
        }


def _make(
    name: str,
    arrival: list[float] | np.ndarray,
    inp: list[int] | np.ndarray,
    out: list[int] | np.ndarray,
    note: str = "",
) -> Trace:
    a = np.asarray(arrival, dtype=np.float64)
    i = np.asarray(inp, dtype=np.int64)
    o = np.asarray(out, dtype=np.int64)
    order = np.argsort(a, kind="stable")
    a, i, o = a[order], i[order], o[order]
    if len(a):
        a = a - a[0] if a[0] < 0 else a
    return Trace(name, a, i, o, note)


def _int(path: Path, line: int, column: str, text: object, *, low: int = 1) -> int:
    if isinstance(text, bool):
        raise TraceError(path, line, column, f"expected an integer, got {text!r}")
    try:
        value = int(text) if isinstance(text, int) else int(str(text).strip())
    except (TypeError, ValueError):
        try:
            f = float(str(text))
        except ValueError:
            raise TraceError(path, line, column, f"expected an integer, got {text!r}") from None
        if not f.is_integer():
            raise TraceError(path, line, column, f"expected an integer, got {text!r}") from None
        value = int(f)
    if not low <= value <= MAX_TOKENS:
        raise TraceError(path, line, column, f"must be in [{low}, {MAX_TOKENS}], got {value}")
    return value


def _float(path: Path, line: int, column: str, text: object, *, low: float = 0.0) -> float:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TraceError(path, line, column, f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= low):
        raise TraceError(path, line, column, f"must be a finite number >= {low:g}, got {text!r}")
    return value


def _csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        yield from _decoded_csv_rows(path, required)
    except UnicodeDecodeError as exc:
        raise _not_text(path, exc) from None


def _decoded_csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding=TEXT) as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
            if header is None:
                raise TraceError(path, 1, required[0], "empty file: expected a header row")
            header = [h.strip() for h in header]
            for col in required:
                if col not in header:
                    raise TraceError(path, 1, col, f"missing from the header {header}")
                if header.count(col) > 1:
                    raise TraceError(path, 1, col, f"appears {header.count(col)} times in the header")
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    col = header[min(len(row), len(header) - 1)]
                    raise TraceError(path, line, col, f"expected {len(header)} fields, got {len(row)}")
                yield line, dict(zip(header, row, strict=True))
        except csv.Error as exc:  # a field over the csv module's limit, a stray quote at the end
            raise TraceError(path, reader.line_num, required[0], f"not CSV: {exc}") from None


def _timestamp(path: Path, line: int, text: str) -> float:
    """Seconds since the epoch of a naive ``YYYY-MM-DD HH:MM:SS[.fffffff]`` (read as UTC)."""
    whole, _, frac = text.strip().partition(".")
    try:
        base = datetime.fromisoformat(whole)
        digits = float("0." + frac) if frac else 0.0
        if frac and not frac.isdigit():
            raise ValueError
    except ValueError:
        raise TraceError(
            path, line, "TIMESTAMP", f"expected 'YYYY-MM-DD HH:MM:SS[.fraction]', got {text!r}"
        ) from None
    return _naive_epoch(base) + digits


def _naive_epoch(dt: datetime) -> float:
    return (dt - datetime(1970, 1, 1)).total_seconds()


def read_azure_csv(path: str | Path, name: str | None = None) -> Trace:
    p = Path(path)
    arr, inp, out = [], [], []
    for line, row in _csv_rows(p, ("TIMESTAMP", "ContextTokens", "GeneratedTokens")):
        arr.append(_timestamp(p, line, row["TIMESTAMP"]))
        inp.append(_int(p, line, "ContextTokens", row["ContextTokens"]))
        # A handful of Azure rows generate 0 tokens; they still cost a prefill and one step.
        out.append(max(1, _int(p, line, "GeneratedTokens", row["GeneratedTokens"], low=0)))
    t = _make(name or p.stem, arr, inp, out)  # sorted; now re-based so the first request is at 0
    return Trace(t.name, t.arrival_s - (t.arrival_s[0] if len(t) else 0.0), t.input_tokens, t.output_tokens)


def read_plain_csv(path: str | Path, name: str | None = None) -> Trace:
    p = Path(path)
    arr, inp, out = [], [], []
    for line, row in _csv_rows(p, ("arrival_s", "input_tokens", "output_tokens")):
        arr.append(_float(p, line, "arrival_s", row["arrival_s"]))
        inp.append(_int(p, line, "input_tokens", row["input_tokens"]))
        out.append(_int(p, line, "output_tokens", row["output_tokens"]))
    return _make(name or p.stem, arr, inp, out)


def read_jsonl(path: str | Path, name: str | None = None) -> Trace:
    p = Path(path)
    arr, inp, out = [], [], []
    try:
        with p.open(encoding=TEXT) as fh:
            for line, text in enumerate(fh, start=1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise TraceError(p, line, f"char {exc.colno}", f"not valid JSON: {exc.msg}") from None
                except ValueError as exc:  # an integer of over 4,300 digits
                    raise TraceError(p, line, "record", f"not a trace record: {exc}") from None
                except RecursionError:
                    raise TraceError(
                        p, line, "record", "JSON nested too deeply to be a trace record"
                    ) from None
                if not isinstance(obj, dict):
                    raise TraceError(p, line, "timestamp", "expected a JSON object per line")
                for col in ("timestamp", "input_length", "output_length"):
                    if col not in obj:
                        raise TraceError(p, line, col, "missing")
                arr.append(_float(p, line, "timestamp", obj["timestamp"]) / 1e3)
                inp.append(_int(p, line, "input_length", obj["input_length"]))
                # A 0-token output (Mooncake has some) still costs the one step that samples it.
                out.append(max(1, _int(p, line, "output_length", obj["output_length"], low=0)))
    except UnicodeDecodeError as exc:
        raise _not_text(p, exc) from None
    return _make(name or p.stem, arr, inp, out)


@dataclass(frozen=True, slots=True)
class RateWindow:
    start_s: float
    rate_rps: float
    cv: float


def read_rate_csv(path: str | Path) -> list[RateWindow]:
    p = Path(path)
    out = []
    for line, row in _csv_rows(p, ("window_start_s", "total_rate_rps")):
        cv = _float(p, line, "req_weighted_client_cv", row.get("req_weighted_client_cv") or 1.0)
        out.append(
            RateWindow(
                _float(p, line, "window_start_s", row["window_start_s"]),
                _float(p, line, "total_rate_rps", row["total_rate_rps"]),
                cv,
            )
        )
    if not out:
        raise TraceError(p, 2, "window_start_s", "no rate windows")
    return out


def read_length_pmf(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``field -> (tokens, probabilities normalised to 1)`` for input_tokens and output_tokens."""
    p = Path(path)
    acc: dict[str, tuple[list[int], list[float]]] = {}
    for line, row in _csv_rows(p, ("field", "tokens", "prob")):
        f = row["field"].strip()
        if f not in ("input_tokens", "output_tokens"):
            raise TraceError(p, line, "field", f"expected input_tokens or output_tokens, got {f!r}")
        toks, probs = acc.setdefault(f, ([], []))
        toks.append(_int(p, line, "tokens", row["tokens"], low=0))
        probs.append(_float(p, line, "prob", row["prob"]))
    out = {}
    for f in ("input_tokens", "output_tokens"):
        if f not in acc or sum(acc[f][1]) <= 0:
            raise TraceError(p, 1, "field", f"no {f} rows with positive probability")
        t, pr = np.asarray(acc[f][0], dtype=np.int64), np.asarray(acc[f][1], dtype=np.float64)
        pr = pr / pr.max()  # weights near the float limit would sum to inf
        out[f] = (t, pr / pr.sum())
    return out


def read_servegen(
    rate_path: str | Path,
    pmf_path: str | Path,
    *,
    rng: np.random.Generator,
    start_s: float = 0.0,
    duration_s: float | None = None,
    rate_scale: float = 1.0,
    window_s: float | None = None,
    name: str = "servegen",
) -> Trace:
    """Arrivals for the windows in [start_s, start_s + duration_s) of the rate file.

    Per window: a gamma renewal process at ``rate × rate_scale`` with CV = the window's (≤ ``MAX_CV``),
    started afresh (stationary start: the first gap is a uniform fraction of a gamma gap). ``window_s``
    (default: the file's spacing) lets a caller compress each window's replay (e.g. 600 s of rate
    replayed in 60 s: time compression that keeps each window's rate).
    """
    windows = read_rate_csv(rate_path)
    pmf = read_length_pmf(pmf_path)
    spacing = windows[1].start_s - windows[0].start_s if len(windows) > 1 else 600.0
    play = window_s or spacing
    end = start_s + (duration_s if duration_s is not None else windows[-1].start_s + spacing - start_s)
    expected = sum(w.rate_rps * play for w in windows if start_s <= w.start_s < end) * rate_scale
    _check_size(expected, f"the windows of {name!r} at rate × {rate_scale:g}")
    arrivals: list[np.ndarray] = []
    t0 = 0.0
    capped = 0
    for w in windows:
        if w.start_s < start_s or w.start_s >= end:
            continue
        lam = w.rate_rps * rate_scale
        cv = min(max(w.cv, 0.05), MAX_CV)
        capped += w.cv > MAX_CV
        if lam > 0:
            k = 1.0 / (cv * cv)
            n_guess = int(lam * play * 1.5 + 10 * math.sqrt(lam * play + 1) + 20)
            gaps = rng.gamma(k, 1.0 / (lam * k), size=n_guess)
            gaps[0] *= rng.random()
            times = np.cumsum(gaps)
            while times[-1] < play:  # rare: the guess fell short
                more = np.cumsum(rng.gamma(k, 1.0 / (lam * k), size=n_guess)) + times[-1]
                times = np.concatenate([times, more])
            arrivals.append(t0 + times[times < play])
        t0 += play
    a = np.concatenate(arrivals) if arrivals else np.zeros(0)
    n = len(a)
    ti, pi = pmf["input_tokens"]
    to, po = pmf["output_tokens"]
    inp = rng.choice(ti, size=n, p=pi)
    out = np.maximum(1, rng.choice(to, size=n, p=po))  # a 0-token output still costs one step
    inp = np.maximum(1, inp)
    note = (
        f"ServeGen windows [{start_s:g}, {end:g}) s replayed {spacing / play:g}x faster, "
        f"rate x{rate_scale:g}; "
        f"gamma renewal arrivals, CV capped at {MAX_CV:g} in {capped} windows"
    )
    return _make(name, a, inp, out, note)


def _check_size(requests: float, what: str) -> None:
    """A replay of at most ``MAX_REQUESTS`` requests, checked before any is generated."""
    if requests > MAX_REQUESTS:
        raise InvalidArgument(
            f"rate_scale: {what} makes ~{requests:.3g} requests; a simulated replay holds at most "
            f"{MAX_REQUESTS:,} (shorten it with duration_s, or scale the rate less)",
            field="rate_scale",
        )


_BY_SUFFIX = {".jsonl": read_jsonl, ".json": read_jsonl}
RATE_SUFFIX = "_aggregate_rate_10min.csv"
PMF_SUFFIX = "_length_pmf.csv"


def servegen_files(source: str | Path) -> tuple[Path, Path] | None:
    """The (rate file, length-PMF file) pair ``source`` names, or None when it names no ServeGen-style
    trace: a packaged name (``servegen-m-large``); ``RATE.csv,PMF.csv``; or a rate file by path
    (``…_aggregate_rate_10min.csv``, or any CSV whose header starts ``window_start_s``), whose PMF is
    the sibling ``…_length_pmf.csv``. Raises ``InvalidArgument`` naming the file that is missing."""
    text = str(source)
    if text in PACKAGED:
        paths = PACKAGED[text]
        return (paths[0], paths[1]) if len(paths) == 2 else None
    if "," in text:
        rate, _, pmf_path = text.partition(",")
        pair = (Path(rate.strip()), Path(pmf_path.strip()))
        for f in pair:
            if not f.is_file():
                raise InvalidArgument(f"ServeGen trace: no file {str(f)!r}", field="trace")
        return pair
    p = Path(text)
    if not p.is_file() or p.suffix.lower() != ".csv":
        return None
    head = _first_line(p)
    if not (p.name.endswith(RATE_SUFFIX) or head.strip().startswith("window_start_s")):
        return None
    stem = p.name[: -len(RATE_SUFFIX)] if p.name.endswith(RATE_SUFFIX) else p.stem
    sibling = p.with_name(stem + PMF_SUFFIX)
    if not sibling.is_file():
        raise InvalidArgument(
            f"ServeGen rate file {str(p)!r} needs its length PMF {sibling.name!r} beside it, or name both "
            f"as RATE.csv,PMF.csv",
            field="trace",
        )
    return p, sibling


def load_trace(source: str | Path, *, rng: np.random.Generator | None = None, **servegen: float) -> Trace:
    """A packaged trace by name, or a file: Azure-format CSV (by header), plain CSV, JSONL (Mooncake), or
    a ServeGen rate + length-PMF pair (``servegen_files``), whose arrivals are generated (``rng``)."""
    text = str(source)
    pair = servegen_files(text)
    if pair is not None:
        if rng is None:
            raise InvalidArgument("a ServeGen trace generates arrivals: pass a seeded rng", field="rng")
        name = text if text in PACKAGED else pair[0].name.removesuffix(RATE_SUFFIX)
        return read_servegen(pair[0], pair[1], rng=rng, name=name, **servegen)
    if text in PACKAGED:
        return read_azure_csv(PACKAGED[text][0], name=text)
    p = Path(text)
    if not p.is_file():
        raise InvalidArgument(
            f"no trace named {text!r}: not a packaged trace ({', '.join(PACKAGED)}) and not a file",
            field="trace",
        )
    reader = _BY_SUFFIX.get(p.suffix.lower())
    if reader is None:
        reader = read_azure_csv if "TIMESTAMP" in _first_line(p) else read_plain_csv
    return reader(p)


def _first_line(p: Path) -> str:
    try:
        with p.open(encoding=TEXT) as fh:
            return fh.readline()
    except UnicodeDecodeError as exc:
        raise _not_text(p, exc) from None


def _not_text(p: Path, exc: UnicodeDecodeError) -> InvalidArgument:
    return InvalidArgument(
        f"trace {str(p)!r} is not UTF-8 text (byte {exc.start}: {exc.reason}): expected a CSV or JSONL trace",
        field="trace",
    )


def scale_time(trace: Trace, speedup: float) -> Trace:
    """Replay ``speedup`` times faster: arrival times divided by it (the rate multiplies by it)."""
    if not speedup > 0:
        raise InvalidArgument(f"speedup must be > 0, got {speedup}", field="speedup")
    return Trace(
        trace.name,
        trace.arrival_s / speedup,
        trace.input_tokens,
        trace.output_tokens,
        f"{trace.note}; time /{speedup:g}".strip("; "),
    )


def scale_rate(trace: Trace, factor: float, rng: np.random.Generator) -> Trace:
    """About ``factor`` times the requests over the same clock, as ``factor`` times the users would send:
    each request is kept ⌊factor⌋ times plus once more with probability frac(factor); the first copy keeps
    its time, every other copy moves by an independent uniform shift within ±``COPY_SPREAD_S``/2
    (reflected at the trace's ends). The rate profile at the scale of the planners' windows (30–60 s)
    and above is kept; below it the copies arrive as other users would, independently — superposed
    independent streams tend to Poisson (Palm–Khintchine). Copies placed within the gap to the next
    arrival (as before) arrived in clumps of ``factor``: on Azure conv × 4 the index of dispersion of
    1-s counts was 3.9 where the trace itself has 1.06, a burstiness no busier service has."""
    if not (math.isfinite(factor) and factor > 0):
        raise InvalidArgument(f"rate factor must be a finite number > 0, got {factor}", field="rate_scale")
    n = len(trace)
    _check_size(n * factor, f"{trace.name!r} ({n:,} requests) × {factor:g}")
    whole, frac = math.floor(factor), factor - math.floor(factor)
    copies = np.full(n, whole, dtype=np.int64) + (rng.random(n) < frac)
    idx = np.repeat(np.arange(n), copies)
    first = np.ones(len(idx), dtype=bool)
    first[1:] = idx[1:] != idx[:-1]
    shift = np.where(first, 0.0, (rng.random(len(idx)) - 0.5) * COPY_SPREAD_S)
    at = trace.arrival_s[idx] + shift
    if n:
        lo, hi = float(trace.arrival_s[0]), float(trace.arrival_s[-1])
        at = np.where(at < lo, 2 * lo - at, at)
        at = np.clip(np.where(at > hi, 2 * hi - at, at), lo, hi)
    return _make(
        trace.name,
        at,
        trace.input_tokens[idx],
        trace.output_tokens[idx],
        f"{trace.note}; rate x{factor:g}".strip("; "),
    )
