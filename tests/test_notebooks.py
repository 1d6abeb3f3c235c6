"""The labs themselves: every labs/*.py has its .ipynb pair with the same cells, no committed
notebook carries outputs, and every lab follows the template (profiles, record, exercises)."""

from pathlib import Path

import jupytext
import pytest

LABS = Path(__file__).resolve().parent.parent / "labs"
SOURCES = sorted(LABS.glob("[0-9][0-9]_*.py"))


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_there_are_labs():
    assert SOURCES, "no labs/NN_topic.py found"


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_pair_in_sync_and_without_outputs(src):
    nb_path = src.with_suffix(".ipynb")
    assert nb_path.exists(), f"{src.name} has no paired {nb_path.name}: run `make sync`"
    py, ipynb = jupytext.read(src), jupytext.read(nb_path)
    assert _cells(py) == _cells(ipynb), f"{src.name} and {nb_path.name} differ: run `make sync`"
    outputs = sum(len(c.get("outputs", [])) for c in ipynb.cells if c.cell_type == "code")
    counts = [c.get("execution_count") for c in ipynb.cells if c.cell_type == "code"]
    assert outputs == 0 and not any(counts), f"{nb_path.name} carries outputs: run `make sync` before committing"


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_lab_follows_the_template(src):
    nb = jupytext.read(src)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    text = "\n".join(c.source for c in nb.cells)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# Lab "), "starts with a title cell"
    assert "config.profile(" in code[0], "the first code cell states the knobs per scale"
    assert "env.line()" in code[0], "the setup cell prints the environment line"
    assert f'results.record(\n    "{src.stem}"' in text or f'results.record("{src.stem}"' in text, "records its figures"
    assert "checks.check_" in text, "has at least one self-checking exercise"
    assert "## Going further" in text
