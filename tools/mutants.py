"""Mutation testing of the safety-critical code: would the tests notice if it broke?

A mutant is a copy of the project with one small deliberate bug: `<` made `<=`, a `raise` made
`pass`, the Makefile's lab bound to 0.0.0.0. The tests relevant to the mutated file run against
it; the mutant is *killed* when they fail (or run past a time limit) and *survives* when they
pass. A survivor is a regression the test suite would let through.

Two kinds of mutants:
  named      the regressions that once slipped through (issue 12), each a textual patch that
             must apply exactly once (the catalogue cannot rot silently) and must be killed;
  generated  every small change of a few kinds in the listed modules: comparisons swapped,
             and/or swapped, `not` dropped, numbers changed, `raise` -> `pass`, `return x` ->
             `return None` (from the Python syntax tree, patched at the exact source position
             so the rest of the file is unchanged), plus a few textual ones in the Makefile's
             lab target and the container entry point.

Why not mutmut: mutmut 3 cannot mutate a Makefile or a shell script, and its trampolines make a
mutated file hard to read. Here a survivor is reported as file:line and the change.

Each mutant runs in a scratch copy of the working tree under data/mutants/ (two are reused, one
per parallel job; the mutated file is restored after each run), with that copy first on sys.path
and PYTHONPATH, so its lablib is imported, not the editable install: every run checks this. The
runs are forks of a server that has imported torch & co. once (seconds per mutant, not ~10). The
tests of each file run once unmutated first: tests that already fail there are deselected (and
reported), so a red test never counts as a kill. Report: data/mutants/report.json. A full run
takes about 25-40 minutes on 2 cores; it is not part of `make test`.

    python tools/mutants.py [--named-only] [--module PATH] [--limit N] [--jobs N] [--list]
"""

from __future__ import annotations

import argparse
import ast
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from queue import Queue

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / "data" / "mutants"

# The tests that judge a mutant of each file: fast ones only (a missing file is skipped).
TESTS = {
    "lablib/core/results.py": ["tests/test_results.py"],
    "lablib/core/cache.py": ["tests/test_cache.py", "tests/test_safety.py", "tests/test_kill.py",
                             "tests/test_diffusion.py::test_cache_folder_is_keyed_by_settings"],
    "lablib/core/checks.py": ["tests/test_checks.py", "tests/test_safety.py"],
    "lablib/data/datasets.py": ["tests/test_data.py"],
    "lablib/methods/stable_diffusion.py": [
        "tests/test_safety.py", "tests/test_diffusion.py::test_sd_pipeline_choices"],
    "lablib/methods/diffusion.py": [
        "tests/test_safety.py", "tests/test_diffusion.py::test_unet_round_trips_through_save_pretrained",
        "tests/test_diffusion.py::test_checkpoint_without_the_completion_marker_is_not_trusted"],
    "Makefile": ["tests/test_packaging.py", "tests/test_server.py"],
    "docker/entrypoint.sh": ["tests/test_packaging.py", "tests/test_server.py"],
}
# The Python files whose mutants are generated: all of each, or only the functions named.
GENERATED_PY = {"lablib/core/results.py": None, "lablib/core/cache.py": None, "lablib/core/checks.py": None,
                "lablib/data/datasets.py": None, "lablib/methods/stable_diffusion.py": {"sd_pipeline"}}

_STRAIGHT_INTO_PLACE = """\
    folder = Path(folder)  # mutant a: written straight into place, no temporary folder
    folder.mkdir(parents=True, exist_ok=True)
    write(folder)
    manifest = getattr(cache, "_manifest", None)  # the completion marker, as cache writes it
    (folder / getattr(cache, "_MARKER", ".complete")).write_text(
        json.dumps(manifest(folder)) if manifest else "", encoding="utf-8")
    return folder
"""
_MKSTEMP = '    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{_TMP}{path.name}.")\n'
# id: (what the bug is, file, [(old text, new text)]); every old text must occur exactly once.
NAMED = {
    "a": ("save_unet not atomic (writes straight into its folder)", "lablib/methods/diffusion.py",
          [("    return cache.write_folder(folder, write)\n", _STRAIGHT_INTO_PLACE)]),
    "b": ("write_atomic not atomic (writes the file in place)", "lablib/core/cache.py",
          [(_MKSTEMP, '    path.write_text(text, encoding="utf-8")  # mutant b\n    return path\n' + _MKSTEMP)]),
    "c": ("downloads allowed by default (LAB_ALLOW_DOWNLOADS unset reads as 1)", "lablib/methods/stable_diffusion.py",
          [('os.environ.get("LAB_ALLOW_DOWNLOADS", "")', 'os.environ.get("LAB_ALLOW_DOWNLOADS", "1")')]),
    "c2": ("downloads allowed by default (allow_download=True)", "lablib/methods/stable_diffusion.py",
           [("allow_download: bool | None = None", "allow_download: bool | None = True")]),
    "d": ("make lab bound to 0.0.0.0", "Makefile",
          [("--ServerApp.ip=127.0.0.1", "--ServerApp.ip=0.0.0.0")]),
    "e": ("checks' comparison tolerance x1000", "lablib/core/checks.py",
          [("> atol + rtol * abs(expected):", "> 1000 * (atol + rtol * abs(expected)):"),
           ("atol=atol, rtol=rtol, equal_nan=True", "atol=1000 * atol, rtol=1000 * rtol, equal_nan=True")]),
    "e2": ("difference's default tolerance x1000", "lablib/core/checks.py",
           [("atol: float = 1e-5, rtol: float = 1e-4, where", "atol: float = 1e-2, rtol: float = 1e-1, where")]),
    "e3": ("check_value's default tolerance x1000", "lablib/core/checks.py",
           [("*, atol: float = 1e-5, rtol: float = 1e-4, hint", "*, atol: float = 1e-2, rtol: float = 1e-1, hint")]),
    "e4": ("check_function's default tolerance x1000", "lablib/core/checks.py",
           [("trials: int = 5,\n    atol: float = 1e-5,\n    rtol: float = 1e-4,",
             "trials: int = 5,\n    atol: float = 1e-2,\n    rtol: float = 1e-1,")]),
}
# Generated textual mutants of files that are not Python: (file, old, new, the change).
TEXTUAL = [
    ("docker/entrypoint.sh", 'if [ -z "${JUPYTER_TOKEN:-}" ]; then', "if false; then", "empty-token check dropped"),
    ("docker/entrypoint.sh", '[ -z "${JUPYTER_TOKEN:-}" ]', '[ -n "${JUPYTER_TOKEN:-}" ]', "empty-token check inverted"),
    ("docker/entrypoint.sh", "print(secrets.token_hex(24))", 'print("")', "generated token empty"),
    ("docker/entrypoint.sh", "export JUPYTER_TOKEN\n", "", "token not exported"),
    ("docker/entrypoint.sh", "--ServerApp.ip=0.0.0.0", "--ServerApp.ip=127.0.0.1", "container ip loopback (unreachable)"),
    ("Makefile", "$(if $(filter 0,$(shell id -u)),--allow-root)", "--allow-root", "lab: --allow-root always"),
    ("Makefile", "$(BIN)/jupyter lab --ServerApp.ip", "$(BIN)/jupyter lab --IdentityProvider.token= --ServerApp.ip",
     "lab: token disabled"),
    ("Makefile", "--ServerApp.root_dir=labs", "--ServerApp.root_dir=.", "lab: serves the whole project"),
]


@dataclass
class Mutant:
    id: str
    file: str
    line: int
    change: str
    text: str  # the whole mutated file
    named: bool = False
    status: str = "pending"  # killed, timeout (counts as killed), survived, no tests, baseline red
    seconds: float = 0.0
    detail: str = ""  # the first failing test


# --- making mutants ----------------------------------------------------------------------------


def named_mutants(only: str | None) -> list[Mutant]:
    out = []
    for key, (what, file, patches) in NAMED.items():
        text = (ROOT / file).read_text(encoding="utf-8")
        for old, new in patches:
            if text.count(old) != 1:  # the code moved on: update the catalogue, never skip
                sys.exit(f"named mutant {key}: {old!r} occurs {text.count(old)} times in {file}, not once")
            line = text[: text.index(old)].count("\n") + 1
            text = text.replace(old, new)
        if only in (None, file):
            out.append(Mutant(key, file, line, what, text, named=True))
    return out


_OPS = {ast.Lt: (rb"<(?!=)", b"<="), ast.LtE: (rb"<=", b"<"), ast.Gt: (rb">(?!=)", b">="),
        ast.GtE: (rb">=", b">"), ast.Eq: (rb"==", b"!="), ast.NotEq: (rb"!=", b"=="),
        ast.In: (rb"\bin\b", b"not in"), ast.NotIn: (rb"\bnot\s+in\b", b"in"),
        ast.Is: (rb"\bis\b", b"is not"), ast.IsNot: (rb"\bis\s+not\b", b"is")}


def _skipped(node: ast.AST) -> bool:
    """f-strings (message text, and positions there are unreliable) and `if TYPE_CHECKING:`."""
    if isinstance(node, ast.JoinedStr):
        return True
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _edits(node: ast.AST, at) -> list[tuple[int, int, bytes, str]]:
    """(start, end, replacement, change) byte edits for the mutations of one node."""
    out = []
    if isinstance(node, ast.Compare):
        for left, op, right in zip([node.left, *node.comparators[:-1]], node.ops, node.comparators, strict=True):
            pattern, new = _OPS[type(op)]
            start, end = at(left, "end"), at(right)
            if m := re.search(pattern, at.src[start:end]):
                out.append((start + m.start(), start + m.end(), new, f"{m.group().decode()} -> {new.decode()}"))
    elif isinstance(node, ast.BoolOp):
        word, new = (b"and", b"or") if isinstance(node.op, ast.And) else (b"or", b"and")
        spots = []
        for left, right in zip(node.values, node.values[1:], strict=False):
            start = at(left, "end")
            if m := re.search(rb"\b" + word + rb"\b", at.src[start:at(right)]):
                spots.append((start + m.start(), start + m.end(), new, f"{word.decode()} -> {new.decode()}"))
        if spots:  # all connectors of the expression at once: `a and b and c` -> `a or b or c`
            out.append(spots)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        out.append((at(node), at(node.operand), b"", "not x -> x"))
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
        v = node.value
        new = {0: 1, 1: 0}.get(v, v + 1) if type(v) is int else {0.0: 1.0, 1.0: 0.0}.get(v, v + 1)
        out.append((at(node), at(node, "end"), repr(new).encode(), f"{ast.unparse(node)} -> {new!r}"))
    elif isinstance(node, ast.Raise):
        out.append((at(node), at(node, "end"), b"pass", "raise -> pass"))
    elif isinstance(node, ast.Return) and node.value is not None:
        if not (isinstance(node.value, ast.Constant) and node.value.value is None):
            out.append((at(node.value), at(node.value, "end"), b"None", "return x -> return None"))
    return out


def generated_mutants(file: str, only: set | None = None) -> list[Mutant]:
    """Every mutation of the kinds above in one Python file (or its functions named in `only`),
    each a copy of the whole file."""
    src = (ROOT / file).read_bytes()
    starts = [0] + [m.end() for m in re.finditer(rb"\n", src)]  # ast offsets are UTF-8 bytes

    def at(node, which="start"):
        if which == "end":
            return starts[node.end_lineno - 1] + node.end_col_offset
        return starts[node.lineno - 1] + node.col_offset
    at.src = src

    found, seen = [], {src}

    def visit(node):
        if _skipped(node):
            if isinstance(node, ast.If):
                for child in node.orelse:
                    visit(child)
            return
        for edit in _edits(node, at):
            spots = edit if isinstance(edit, list) else [edit]
            text = src
            for start, end, new, _ in sorted(spots, reverse=True):
                text = text[:start] + new + text[end:]
            try:
                ast.parse(text)
            except SyntaxError:
                continue
            if text not in seen:  # the same text from two routes is one mutant
                seen.add(text)
                line = src[: spots[0][0]].count(b"\n") + 1
                found.append(Mutant(f"{Path(file).name}#{len(found) + 1}", file, line, spots[0][3], text.decode()))
        for child in ast.iter_child_nodes(node):
            visit(child)

    for node in ast.parse(src).body:
        if only is None or getattr(node, "name", None) in only:
            visit(node)
    lines = src.decode().splitlines()
    for m in found:  # the change and the line it was made in, as it reads unmutated
        m.change += f" in: {lines[m.line - 1].strip()[:90]}"
    return found


def textual_mutants(file: str) -> tuple[list[Mutant], list[str]]:
    text, out, missing = (ROOT / file).read_text(encoding="utf-8"), [], []
    for f, old, new, what in TEXTUAL:
        if f != file:
            continue
        if old not in text:
            missing.append(f"{file}: {what} ({old!r} not found)")
            continue
        line = text[: text.index(old)].count("\n") + 1
        out.append(Mutant(f"{Path(file).name}#{len(out) + 1}", file, line, what, text.replace(old, new, 1)))
    return out, missing


# --- running them ------------------------------------------------------------------------------


def copy_tree(dest: Path) -> None:
    """The working tree as git sees it (tracked files and new unignored ones), edits included."""
    shutil.rmtree(dest, ignore_errors=True)
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        if (ROOT / name).is_file():  # a tracked file deleted in the working tree is skipped
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


def environment(work: Path) -> dict:
    tmp = work.with_name(work.name + "-tmp")
    (tmp / "sys").mkdir(parents=True, exist_ok=True)
    return {"PYTHONPATH": str(work), "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": str(tmp / "sys")}


# Each pytest run is a fork of a server that has imported torch & co. once (multiprocessing's
# forkserver), not a fresh interpreter: that saves ~10 s of imports (torch, and pytest's plugins
# nbmake and hypothesis) per mutant. The server never imports lablib, so each run imports the
# mutated copy afresh.
_SERVER = multiprocessing.get_context("forkserver")
_PRELOAD = ["__main__", "pytest", "numpy", "torch", "matplotlib", "PIL.Image", "diffusers.models.unets.unet_2d",
            "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion",
            "nbformat", "hypothesis.strategies"]  # what pytest's plugins import; missing ones are skipped
WRONG_LABLIB = 99


def _run_pytest(work: str, args: list[str], log: str) -> None:
    """In the fork: run pytest in `work` on that copy's lablib, its output into `log`."""
    os.setsid()  # a process group of its own: a timeout kills the tests' children (servers) too
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.chdir(work)
    os.environ.update(environment(Path(work)))  # for the tests' subprocesses too
    tempfile.tempdir, sys.dont_write_bytecode = None, True  # a stale .pyc could hide a mutant
    sys.path.insert(0, work)
    if os.environ.pop("MUTANTS_QUIET", None):  # the server's preloads only: the tests get the default
        from transformers.utils import logging as hf_logging

        os.environ.pop("TRANSFORMERS_VERBOSITY")
        hf_logging.set_verbosity_warning()
    try:
        import lablib
    except Exception:  # a mutant that breaks the import: pytest reports it
        pass
    else:  # the whole point: the tests must see the mutant, not the editable install
        if not Path(lablib.__file__).is_relative_to(work):
            print(f"lablib was imported from {lablib.__file__}, not from {work}", flush=True)
            os._exit(WRONG_LABLIB)
    import pytest

    code = pytest.main(args)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(int(code))


def run_tests(work: Path, tests: list[str], deselect=(), timeout: float = 900, first_failure=True):
    """(status, seconds, failures) of the tests in `work`: killed, timeout or survived."""
    tmp = work.with_name(work.name + "-tmp")
    (tmp / "sys").mkdir(parents=True, exist_ok=True)
    args = ["-q", "-p", "no:cacheprovider", f"--basetemp={tmp / 'pytest'}", *(["-x"] if first_failure else []),
            *[f"--deselect={d}" for d in deselect], *tests]
    start = time.monotonic()
    child = _SERVER.Process(target=_run_pytest, args=(str(work), args, str(tmp / "pytest.log")))
    child.start()
    child.join(timeout)
    if child.exitcode is None:
        os.killpg(child.pid, signal.SIGKILL)
        child.join()
        return "timeout", time.monotonic() - start, []
    out = (tmp / "pytest.log").read_text(encoding="utf-8", errors="replace")
    if child.exitcode == WRONG_LABLIB:
        raise RuntimeError(out)
    failures = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, re.M)
    if child.exitcode and not failures:
        failures = [out.strip().splitlines()[-1] if out.strip() else f"exit {child.exitcode}"]
    return ("killed" if child.exitcode else "survived"), time.monotonic() - start, failures


def tests_for(file: str) -> list[str]:
    return [t for t in TESTS.get(file, []) if (ROOT / t.split("::")[0]).is_file()]


def collect(args) -> tuple[list[Mutant], list[str]]:
    """The named mutants, then the generated ones (a sample with --limit), and the textual
    mutants whose text was not found."""
    mutants, missing = named_mutants(args.module), []
    generated = []
    for file in [] if args.named_only else [*GENERATED_PY, "Makefile", "docker/entrypoint.sh"]:
        if args.module in (None, file):
            if file in GENERATED_PY:
                generated += generated_mutants(file, GENERATED_PY[file])
            else:
                more, gone = textual_mutants(file)
                generated, missing = generated + more, missing + gone
    if args.limit is not None and args.limit < len(generated):
        keep = set(map(id, random.Random(0).sample(generated, args.limit)))
        generated = [m for m in generated if id(m) in keep]
    return mutants + generated, missing


class Workshop:
    """The scratch copies of the working tree, one per job, each lent to one run at a time."""

    def __init__(self, jobs: int):
        self.works, self.free = [SCRATCH / f"work-{n}" for n in range(max(1, jobs))], Queue()
        for work in self.works:
            copy_tree(work)
            self.free.put(work)

    def run(self, tests, deselect=(), timeout=900.0, first_failure=True, mutant: Mutant | None = None):
        work = self.free.get()
        original = (work / mutant.file).read_bytes() if mutant else None
        try:
            if mutant:
                (work / mutant.file).write_text(mutant.text, encoding="utf-8")
            return run_tests(work, list(tests), deselect, timeout, first_failure)
        finally:
            if mutant:
                (work / mutant.file).write_bytes(original)
            self.free.put(work)

    def remove(self):
        for work in self.works:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(work.with_name(work.name + "-tmp"), ignore_errors=True)


def baselines(shop: Workshop, suites, pool) -> dict:
    """Each suite unmutated first: a test that is already red is deselected (so it cannot fail
    for a kill); a suite still red then judges no mutant."""
    out = {}
    for suite, (status, seconds, failures) in zip(suites, pool.map(
            lambda s: shop.run(s, first_failure=False), suites), strict=True):
        if status == "killed":
            status, seconds, _ = shop.run(suite, failures)
        out[suite] = {"green": status == "survived", "seconds": round(seconds, 1),
                      "deselected": failures if status == "survived" else [], "timeout": max(60.0, 4 * seconds)}
        print(f"baseline {' '.join(suite)}: {'green' if status == 'survived' else 'RED'} in {seconds:.0f} s"
              + (f", deselected {failures}" if failures else ""), flush=True)
    return out


def tally(group: list[Mutant]) -> dict:
    judged = [m for m in group if m.status in ("killed", "timeout", "survived")]
    dead = sum(m.status != "survived" for m in judged)
    return {"mutants": len(group), "judged": len(judged), "killed": dead,
            "timeouts": sum(m.status == "timeout" for m in judged),
            "kill_rate": round(dead / len(judged), 3) if judged else None}


def report(mutants: list[Mutant], baseline: dict, missing: list[str], seconds: float) -> None:
    named, generated = [m for m in mutants if m.named], [m for m in mutants if not m.named]
    modules = {f: tally([m for m in generated if m.file == f]) for f in dict.fromkeys(m.file for m in generated)}
    survivors = [f"{m.file}:{m.line} {m.change}" for m in generated if m.status == "survived"]
    SCRATCH.mkdir(parents=True, exist_ok=True)
    (SCRATCH / "report.json").write_text(json.dumps({
        "seconds": round(seconds), "baseline": {" ".join(k): v for k, v in baseline.items()},
        "named": [asdict(m) | {"text": None} for m in named], "modules": modules, "overall": tally(generated),
        "survivors": survivors, "textual_not_found": missing,
        "mutants": [asdict(m) | {"text": None} for m in generated]}, indent=1), encoding="utf-8")
    print("\nnamed mutants:")
    for m in named:
        print(f"  {m.id:<3} {m.status:<9} {m.change}" + (f"  <- {m.detail}" if m.detail else ""))
    if generated:
        print("\nsurviving generated mutants:")
        print("\n".join(f"  {s}" for s in survivors) or "  none")
        print("\nkill rate (timeouts count as killed):")
        for file, t in [*modules.items(), ("overall", tally(generated))]:
            rate = "n/a" if t["kill_rate"] is None else f"{100 * t['kill_rate']:.0f} %"
            print(f"  {file:<38} {t['killed']:>4}/{t['judged']:<4} {rate}")
    for line in missing:
        print(f"  not applied: {line}")
    print(f"\n{seconds:.0f} s; report in {(SCRATCH / 'report.json').relative_to(ROOT)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--named-only", action="store_true", help="only the named mutants")
    parser.add_argument("--module", help="only mutants of this file (e.g. lablib/core/cache.py)")
    parser.add_argument("--limit", type=int, help="a random sample of N generated mutants")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    args = parser.parse_args(argv)
    if args.module and args.module not in TESTS:
        parser.error(f"--module must be one of {sorted(TESTS)}")
    mutants, missing = collect(args)
    if args.list:
        print("\n".join(f"{m.id:>22}  {m.file}:{m.line}  {m.change}" for m in mutants))
        return 0

    started = time.monotonic()
    _SERVER.set_forkserver_preload(_PRELOAD)
    if "TRANSFORMERS_VERBOSITY" not in os.environ:  # no torchvision warnings from the server's imports
        os.environ.update(TRANSFORMERS_VERBOSITY="error", MUTANTS_QUIET="1")
    shop = Workshop(args.jobs)
    suite_of = {m.file: tuple(tests_for(m.file)) for m in mutants}  # fixed now: tests may appear meanwhile

    def judge(m: Mutant) -> None:
        suite = suite_of[m.file]
        if not suite or not baseline[suite]["green"]:
            m.status = "no tests" if not suite else "baseline red"
        else:
            m.status, seconds, failures = shop.run(suite, baseline[suite]["deselected"],
                                                   baseline[suite]["timeout"], mutant=m)
            m.seconds, m.detail = round(seconds, 1), (failures or [""])[0]
        print(f"[{sum(x.status != 'pending' for x in mutants):>4}/{len(mutants)}] {m.status:<9} "
              f"{m.id:>18} {m.file}:{m.line} {m.change[:100]}", flush=True)

    with ThreadPoolExecutor(len(shop.works)) as pool:
        baseline = baselines(shop, sorted(set(filter(None, suite_of.values()))), pool)
        list(pool.map(judge, mutants))
    shop.remove()  # scratch: rebuilt from the working tree on every run
    report(mutants, baseline, missing, time.monotonic() - started)
    return 1 if any(m.status not in ("killed", "timeout") for m in mutants if m.named) else 0


if __name__ == "__main__":
    sys.exit(main())
