"""A lab's claims and figures: stated once, printed, recorded, asserted, gathered into docs/results.md.

    results.claim("student keeps the teacher's accuracy", retained, holds=retained >= 0.95,
                  condition=">= 0.95", source="230M -> 12M parameters at 92 %")
    ...
    results.record({"teacher params": 1234, ...})

`claim` prints the verdict beside the source's figure the moment it is measured. `record`, the
lab's last step, writes results/<lab>.<scale>.json (the claims, the figures, the exercise
verdicts, the environment) and then, at `cpu` and `gpu` scale, fails the run if a claim did not
hold. `python -m lablib.core.results --scale cpu` renders docs/results.md from those files.
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import statistics
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from lablib.core import checks, config, env, validate
from lablib.core.cache import write_atomic
from lablib.core.validate import integer
from lablib.core.validate import path as as_path


class ClaimFailed(AssertionError):
    """A lab's claim did not hold at a scale where it is asserted."""


@dataclass
class Claim:
    name: str
    measured: float | int | str | bool
    holds: bool
    condition: str
    source: str
    asserted: bool

    def __bool__(self) -> bool:
        return self.holds

    def _ipython_display_(self) -> None:
        """claim() already printed the verdict; as a cell's last value it would show again."""


# The claims stated in this kernel so far, by name (rerunning a cell replaces its claim).
CLAIMS: dict[str, Claim] = {}


def _plain(value):
    """numpy / torch scalars as plain Python values (JSON)."""
    if hasattr(value, "item") and not isinstance(value, (bool, str, int, float)):
        try:
            return value.item()
        except (RuntimeError, ValueError):  # more than one element: left for _check_value to refuse
            return value
    return value


def _check_value(name: str, value) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name!r} is {value}: record only finite numbers")
    if not isinstance(value, (int, float, str, bool)):
        raise TypeError(f"{name!r} must be a number, bool or str, got {type(value).__name__}")


def mean_sd(values) -> tuple[float, float]:
    """The mean and the sample standard deviation of a measurement repeated over seeds (a list,
    a generator or a tensor of numbers); the sd is 0.0 for a single value."""
    values = validate.series("values", list(values) if hasattr(values, "__next__") else values)
    if not values:
        raise ValueError("values must hold at least one number")
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def claim(name: str, measured, *, holds, condition: str, source: str = "", asserted: bool = True) -> Claim:
    """State one of the lab's claims: what was measured, the condition it is held to, and the
    source's own figure. Prints the verdict now; `record` saves it and, at `cpu`/`gpu` scale,
    fails the run if it does not hold. asserted=False (timings, which a loaded machine can
    flip) reports the verdict without ever failing the run. Returns the Claim, true when it holds."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    measured, holds = _plain(measured), _plain(holds)
    _check_value(name, measured)
    if not isinstance(holds, bool):
        raise TypeError(f"holds must be a bool (the claim's test, computed from the measurement), got {type(holds).__name__}")
    for arg, text in (("condition", condition), ("source", source)):
        if not isinstance(text, str):
            raise TypeError(f"{arg} must be a str, got {type(text).__name__}")
    if not isinstance(asserted, bool):
        raise TypeError(f"asserted must be True or False, got {type(asserted).__name__} {asserted!r}")
    stated = CLAIMS[name] = Claim(name, measured, holds, condition, source, bool(asserted))
    smoke = config.scale() == "smoke"
    mark = "[·]" if smoke else "[✓]" if holds else "[✗]" if asserted else "[~]"
    verdict = "holds" if holds else "does NOT hold"
    line = f"{mark} {name}: {fmt(measured)} ({condition}: {verdict}"
    line += ", not asserted at smoke scale)" if smoke else ")" if asserted else ", reported, not asserted)"
    print(line + (f"\n    source: {source}" if source else ""))
    return stated


def record(metrics: dict | None = None, *, notes: str = "", scale: str | None = None, lab: str | None = None) -> None:
    """Save the lab's claims, its other headline figures (`metrics`), the exercise verdicts and
    the environment to results/<lab>.<scale>.json; then, at `cpu`/`gpu` scale, raise ClaimFailed
    if an asserted claim did not hold. The lab's name comes from the notebook (config.lab_name)."""
    lab = config.lab_name() if lab is None else lab
    if not isinstance(lab, str) or not config.LAB_NAME.match(lab):
        raise ValueError(f"lab must look like '01_bn_residual' (NN_snake_case), got {lab!r}")
    metrics = {} if metrics is None else metrics
    if not isinstance(metrics, dict):
        raise TypeError(f"metrics must be a dict of name -> value, got {type(metrics).__name__}")
    metrics = {k: _plain(v) for k, v in metrics.items()}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"metric names must be non-empty strings, got {name!r}")
        _check_value(name, value)
    if not metrics and not CLAIMS:
        raise ValueError("nothing to record: state a claim or pass metrics")
    if not isinstance(notes, str):
        raise TypeError(f"notes must be a str, got {type(notes).__name__}")
    scale = config.scale() if scale is None else scale
    if scale not in config.SCALES:
        raise ValueError(f"scale must be one of {', '.join(config.SCALES)}, got {scale!r}")
    entry = {
        "lab": lab,
        "scale": scale,
        "claims": [asdict(c) for c in CLAIMS.values()],
        "metrics": metrics,
        "exercises": dict(checks.VERDICTS),
        "taught_steps": dict(checks.AGREEMENTS),
        "solutions_mode": config.solutions(),
        "notes": notes,
        "wall_s": round(time.time() - config.STARTED, 1),
        "env": env.stamp() | {"scale": scale},
    }
    path = config.results_dir() / f"{lab}.{scale}.json"
    write_atomic(path, json.dumps(entry, indent=2) + "\n")
    print(f"Recorded {len(CLAIMS)} claims, {len(metrics)} figures and {len(checks.VERDICTS)} exercise verdicts to {path}")
    failed = [c for c in CLAIMS.values() if c.asserted and not c.holds]
    if failed and scale != "smoke":
        raise ClaimFailed("; ".join(f"{c.name}: {fmt(c.measured)} fails {c.condition}" for c in failed))


# What render and exercise_problems read from a record: the keys it must have, and those it may have
_REQUIRED = {"lab": str, "wall_s": (int, float), "env": dict}
_OPTIONAL = {"claims": list, "metrics": dict, "exercises": dict, "notes": str}
_FIGURE = (int, float, str, bool)


def _record_problem(entry) -> str | None:
    """Why `entry`, read from a results file, is not a record as `record` writes it, or None."""
    if not isinstance(entry, dict):
        return f"a JSON {type(entry).__name__}, not an object"
    for key, kind in _REQUIRED.items():
        if not isinstance(entry.get(key), kind):
            return f"{key!r} is missing or of the wrong type"
    for key, kind in _OPTIONAL.items():
        if key in entry and not isinstance(entry[key], kind):
            return f"{key!r} is not a {kind.__name__}"
    if not {"date", "device"} <= set(entry["env"]) or not isinstance(entry["env"].get("versions", {}), dict):
        return "'env' lacks its date, device or versions"
    claim_keys = {f.name for f in fields(Claim)}
    if not all(isinstance(c, dict) and claim_keys <= set(c) and isinstance(c["measured"], _FIGURE)
               for c in entry.get("claims", [])):
        return f"a claim lacks one of {sorted(claim_keys)}"
    if not all(isinstance(v, _FIGURE) for v in entry.get("metrics", {}).values()):
        return "a metric is not a number, bool or str"
    return None


def load_records(scale: str = "cpu", folder: Path | None = None) -> dict[str, dict]:
    """Every recorded lab at `scale`, keyed by lab name. A file that is not a record says which."""
    if scale not in config.SCALES:
        raise ValueError(f"scale must be one of {', '.join(config.SCALES)}, got {scale!r}")
    if folder is not None and not as_path("folder", folder).is_dir():
        raise ValueError(f"folder {str(folder)!r} is not a folder of results")
    folder = config.results_dir() if folder is None else Path(folder)
    out = {}
    for file in sorted(folder.glob(f"*.{scale}.json")):
        if not file.is_file():  # a folder, a FIFO (reading one would wait forever), a broken link
            raise ValueError(f"{file} is not a lab record (not a regular file); delete it and rerun its lab")
        try:
            entry = json.loads(file.read_text(encoding="utf-8"))
        except ValueError as exc:  # not JSON, or not UTF-8 text
            raise ValueError(f"{file} is not a lab record ({exc}); delete it and rerun its lab") from exc
        if problem := _record_problem(entry):
            raise ValueError(f"{file} is not a lab record ({problem}); delete it and rerun its lab")
        out[entry["lab"]] = entry
    return out


def fmt(value) -> str:
    """A figure as the reports print it: thousands separated, 4 significant digits."""
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not isinstance(value, numbers.Real):
        raise TypeError(f"value must be a number, bool or str, got {type(value).__name__}")
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"


def lab_names(labs_dir: Path | None = None) -> list[str]:
    """Every lab in labs/: NN_topic.py, or a folder NN_topic/ holding NN_topic.py."""
    return sorted(p.stem for p in config.lab_sources(labs_dir))


def _md(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(scales=("cpu",), folder: Path | None = None, labs_dir: Path | None = None) -> str:
    """docs/results.md as text: per lab and scale, its claims (measured, condition, verdict,
    the source's figure), its other figures, and the environment it ran in."""
    lines = [
        "# Results",
        "",
        "Generated by `python -m lablib.core.results` from what each lab recorded when it last ran",
        "(`make test` runs every lab at `cpu` scale and regenerates this page). Every figure is measured,",
        "never typed in; the line under each lab says where and when.",
        "",
    ]
    if not isinstance(scales, (list, tuple)):
        raise TypeError(f"scales must be a list of scales, e.g. ['cpu'], got {type(scales).__name__} {scales!r}")
    for scale in scales:
        entries = load_records(scale, folder)
        lines += [f"## Scale `{scale}`", ""]
        for lab in sorted(set(lab_names(labs_dir)) | set(entries)):
            lines += [f"### {lab}", ""]
            entry = entries.get(lab)
            if entry is None:
                lines += ["_Not run at this scale yet._", ""]
                continue
            if entry.get("claims"):
                lines += ["| claim | measured | condition | verdict | source |", "| --- | --- | --- | --- | --- |"]
                for c in entry["claims"]:
                    verdict = "holds" if c["holds"] else "does not hold" + ("" if c["asserted"] else " (not asserted)")
                    lines.append(f"| {_md(c['name'])} | {fmt(c['measured'])} | {_md(c['condition'])} | {verdict} | {_md(c['source']) or '—'} |")
                lines.append("")
            if entry.get("metrics"):
                lines += ["| figure | measured |", "| --- | --- |"]
                lines += [f"| {_md(k)} | {fmt(v)} |" for k, v in entry["metrics"].items()]
                lines.append("")
            e = entry["env"]
            versions = e["versions"]
            lines.append(
                f"_{e['date']} · {e['device']} · torch {versions.get('torch', '?')} · "
                f"Python {versions.get('python', '?')} · notebook wall time {entry['wall_s']:.0f} s"
                + (" · CI" if e.get("ci") else "") + "_"
            )
            if entry.get("notes"):
                lines += ["", entry["notes"]]
            lines.append("")
    return "\n".join(lines)


def exercise_problems(scale: str, minimum: int, exempt=(), folder: Path | None = None) -> list[str]:
    """What is wrong with the exercise verdicts recorded at `scale` by a solutions-mode run: a lab
    with fewer than `minimum` checked exercises (labs in `exempt` aside), or a check not correct."""
    integer("minimum", minimum, 0)
    problems = []
    for lab, entry in load_records(scale, folder).items():
        verdicts = entry.get("exercises", {})
        if not entry.get("solutions_mode"):
            problems.append(f"{lab}: recorded without LAB_SOLUTIONS=1")
        if lab not in exempt and len(verdicts) < minimum:
            problems.append(f"{lab}: {len(verdicts)} checked exercises, at least {minimum} expected")
        problems += [f"{lab}: {name} is {status}" for name, status in verdicts.items() if status != checks.CORRECT]
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lablib.core.results", description=__doc__.split("\n")[0])
    parser.add_argument("--scale", action="append", choices=config.SCALES, help="scale(s) to report (default: the active one)")
    parser.add_argument("--out", type=Path, default=None, help="output file (default: docs/results.md)")
    parser.add_argument("--require-all", action="store_true", help="fail when a lab in labs/ has no record at the scale")
    parser.add_argument("--exercises", type=int, default=None, metavar="N",
                        help="check a solutions-mode run instead of rendering: every lab has >= N exercises, all correct")
    parser.add_argument("--exempt", action="append", default=[], help="a lab the --exercises minimum does not apply to")
    args = parser.parse_args(argv)
    scales = args.scale or [config.scale()]
    missing = [f"{lab} ({s})" for s in scales for lab in lab_names() if lab not in load_records(s)]
    if args.exercises is not None:
        problems = [p for s in scales for p in exercise_problems(s, args.exercises, args.exempt)]
        problems += [f"no record for {m}" for m in missing]
        for p in problems:
            print("error:", p, file=sys.stderr)
        if not problems:
            print(f"every lab's exercises were checked and correct in solutions mode ({', '.join(scales)})")
        return 1 if problems else 0
    out = args.out or config.project_root() / "docs" / "results.md"
    write_atomic(out, render(scales))
    print(f"wrote {out} ({', '.join(scales)})")
    if missing:
        print(("error: " if args.require_all else "note: ") + "no record for " + ", ".join(missing), file=sys.stderr)
        return 1 if args.require_all else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
