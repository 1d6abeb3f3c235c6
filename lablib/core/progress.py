"""A learner's progress: which exercises of which labs they have passed on this machine.

Every check that says `[✓] correct` (your own answer, not the reference answers of
LAB_SOLUTIONS=1) notes the exercise in results/progress.json, with the date it first passed.

    python -m lablib.core.progress        # a table: each lab, its exercises passed, what is left

Lab 00 shows the same table at its end. Delete the file to start again.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
from pathlib import Path

from lablib.core import config
from lablib.core.cache import write_atomic

FILE = "progress.json"


def path() -> Path:
    return config.results_dir() / FILE


def _name(arg: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"{arg} must be a non-empty str, got {value!r}")
    return value


def load() -> dict[str, dict[str, str]]:
    """{lab: {exercise: the date it first passed}}. A missing or unreadable file is no progress
    yet; the next passed exercise writes a fresh one."""
    try:
        data = json.loads(path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {lab: {str(k): str(v) for k, v in done.items()}
            for lab, done in data.items() if config.LAB_NAME.match(str(lab)) and isinstance(done, dict)}


def remember(lab: str, exercise: str) -> bool:
    """Note that `exercise` of `lab` passed; True if it had not passed before."""
    if not config.LAB_NAME.match(_name("lab", lab)):
        raise ValueError(f"lab must be a lab's name, NN_topic (e.g. 02_distillation), got {lab!r}")
    _name("exercise", exercise)
    data = load()
    if exercise in data.get(lab, {}):
        return False
    data.setdefault(lab, {})[exercise] = dt.date.today().isoformat()
    write_atomic(path(), json.dumps(data, indent=1, sort_keys=True))  # atomic: a reader never sees half
    return True


def exercise_names(code: str) -> list[str]:
    """The exercises of a lab's source code: functions and classes decorated @checks.exercise,
    and values asked for with checks.answer("name", ...)."""
    names = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            if any(ast.unparse(d) == "checks.exercise" for d in node.decorator_list):
                names.append(node.name)
        elif isinstance(node, ast.Call) and ast.unparse(node.func) == "checks.answer" and node.args:
            if isinstance(node.args[0], ast.Constant):
                names.append(node.args[0].value)
    return names


def summary(labs_dir: Path | None = None) -> list[dict]:
    """A row per lab: how many of its exercises passed, and which are left."""
    done = load()
    rows = []
    for source in config.lab_sources(labs_dir):
        # a lab's source is jupytext's percent format: its markdown cells are comments, so the
        # whole file parses as Python
        names = exercise_names(source.read_text(encoding="utf-8"))
        if not names:
            continue
        passed = [n for n in names if n in done.get(source.stem, {})]
        rows.append({"lab": source.stem, "passed": f"{len(passed)}/{len(names)}",
                     "left": ", ".join(n for n in names if n not in passed) or "—"})
    return rows


def main(argv=None) -> int:
    argparse.ArgumentParser(prog="python -m lablib.core.progress", description=__doc__.split("\n")[0]).parse_args(argv)
    from lablib.core.show import table

    rows = summary()
    if not rows:  # a folder of notebooks without the project's labs/ (a hub user's copy, say)
        print(f"no lab with exercises found in {config.project_root() / 'labs'}")
        return 0
    total = sum(int(r["passed"].split("/")[0]) for r in rows)
    table(rows, title=f"your exercises on this machine ({path()}): {total} passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
