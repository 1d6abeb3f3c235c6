"""Regenerate each lab's .ipynb from its .py (the source: labs/NN_topic.py or
labs/NN_topic/NN_topic.py), without outputs and with cell ids numbered in order, so a sync that
changes nothing leaves the .ipynb byte-identical."""

import sys
from pathlib import Path

import jupytext

from lablib.core import config


def sync(src: Path) -> bool:
    nb = jupytext.read(src)
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:03d}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    target = src.with_suffix(".ipynb")
    text = jupytext.writes(nb, fmt="ipynb")
    if target.exists() and target.read_text(encoding="utf-8") == text:
        return False
    target.write_text(text, encoding="utf-8")
    return True


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent / "labs"
    sources = [Path(p) for p in sys.argv[1:]] or config.lab_sources(root)
    for src in sources:
        print(f"{'wrote  ' if sync(src) else 'in sync'} {src.with_suffix('.ipynb').name}")
