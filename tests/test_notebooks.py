"""The labs themselves: every lab source has its .ipynb pair with the same cells, no committed
notebook carries outputs, and every lab follows the v2 template (docs/lab-template.md)."""

import ast
import re
import sys
from pathlib import Path

import jupytext
import pytest

from lablib.core import config, progress

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import site_figures  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LABS = ROOT / "labs"
SOURCES = config.lab_sources(LABS)


def _cells(nb):
    return [(c.cell_type, c.source.strip(), c.metadata.get("figure")) for c in nb.cells]


def test_there_are_labs():
    assert len(SOURCES) >= 9, "labs/NN_topic.py (or labs/NN_topic/NN_topic.py) not found"


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_pair_in_sync_and_without_outputs(src):
    nb_path = src.with_suffix(".ipynb")
    assert nb_path.exists(), f"{src.name} has no paired {nb_path.name}: run `make sync`"
    py, ipynb = jupytext.read(src), jupytext.read(nb_path)
    assert _cells(py) == _cells(ipynb), f"{src.name} and {nb_path.name} differ: run `make sync`"
    outputs = sum(len(c.get("outputs", [])) for c in ipynb.cells if c.cell_type == "code")
    counts = [c.get("execution_count") for c in ipynb.cells if c.cell_type == "code"]
    assert outputs == 0 and not any(counts), f"{nb_path.name} carries outputs: run `make sync` before committing"


_exercise_names = progress.exercise_names


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_lab_follows_the_template(src):
    nb = jupytext.read(src)
    code_cells = [c.source for c in nb.cells if c.cell_type == "code"]
    code = "\n".join(code_cells)
    front = nb.cells[0].source
    text = "\n".join(c.source for c in nb.cells)
    assert nb.cells[0].cell_type == "markdown" and front.startswith("# Lab "), "starts with a title cell"
    for part in ("**Source", "**Objectives", "**Prerequisites", "**Time"):
        assert part in front, f"the front matter names {part.strip('*')}"
    assert re.search(r"[\u4e00-\u9fff]{4,}", front), "the front matter names the source article by its (Chinese) title"
    assert "config.profile(" in code_cells[0] and "env.line()" in code_cells[0], "the setup cell states the knobs and the environment"
    assert "results.record(" in code, "records its figures"
    assert re.search(r"results\.record\(\s*\"", code) is None, "the lab name comes from the notebook, not typed in"
    assert "## Going further" in text
    prose = "\n".join(re.sub(r"```.*?```", "", c.source, flags=re.S) for c in nb.cells
                       if c.cell_type == "markdown")
    titles = re.findall(r"^# .*", prose, flags=re.M)
    assert len(titles) == 1, f"one top-level heading, the title (the site lists each as a page): {titles}"
    figures = [c.metadata["figure"] for c in nb.cells if "figure" in c.metadata]
    assert figures, 'marks its key plots for the slide kit: # %% figure="name"'
    assert len(set(figures)) == len(figures), f"figure names repeat: {figures}"
    for name in figures:
        assert site_figures.NAME.match(name) and name != site_figures.CLAIMS, f"figure name {name!r}"
    for banned in ("DESIGN.md", "the issue", "issue #"):
        assert banned not in text, f"developer-facing text in the lab: {banned!r}"


@pytest.mark.parametrize("src", [s for s in SOURCES if s.stem != "00_setup_check"], ids=lambda p: p.stem)
def test_lab_teaches_in_the_lab_and_has_solvable_exercises(src):
    code = "\n".join(c.source for c in jupytext.read(src).cells if c.cell_type == "code")
    assert "checks.agrees(" in code, "the taught step is written in the lab and checked against lablib's reference"
    assert "results.claim(" in code, "states its headline as a claim"
    names = _exercise_names(code)
    assert len(names) >= 2, f"at least two exercises marked @checks.exercise / checks.answer, found {names}"
    solutions = LABS / "solutions" / f"{src.stem}.py"
    assert solutions.is_file(), f"{solutions.relative_to(ROOT)} holds the reference answers"
    defined = {n.name for n in ast.parse(solutions.read_text(encoding="utf-8")).body
               if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    defined |= {t.id for n in ast.parse(solutions.read_text(encoding="utf-8")).body if isinstance(n, ast.Assign)
                for t in n.targets if isinstance(t, ast.Name)}
    assert set(names) <= defined, f"no reference answer for {sorted(set(names) - defined)}"
    assert (ROOT / "docs" / "answers" / f"{src.stem}.md").is_file(), "the facilitator key answers its open questions"
