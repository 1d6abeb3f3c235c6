"""What a lab shows: `show(fn)` puts the source of the lablib code it uses in the notebook;
`table(rows)` prints a table of results (the one table printer)."""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path


def source(obj) -> str:
    """The source of a function, class or module, with a header line saying where it lives."""
    try:
        text = textwrap.dedent(inspect.getsource(obj))
        file = Path(inspect.getsourcefile(obj) or "?")
        line = inspect.getsourcelines(obj)[1] if not inspect.ismodule(obj) else 1
    except (TypeError, OSError) as exc:
        raise TypeError(f"show(obj): obj must be a function, class or module defined in a file, got {obj!r}") from exc
    package = Path(__file__).resolve().parents[2]  # the folder holding lablib/
    where = file.resolve().relative_to(package).as_posix() if file.resolve().is_relative_to(package) else file.name
    return f"# {where}, line {line}\n{text}"


def show(obj) -> None:
    """Display the source of `obj`, syntax-highlighted in a notebook, plain text elsewhere."""
    text = source(obj)
    try:
        from IPython import get_ipython
        from IPython.display import Code, display
    except ImportError:  # pragma: no cover - IPython ships with Jupyter
        print(text)
        return
    if get_ipython() is None:
        print(text)
    else:
        display(Code(text, language="python"))


def _cell(value) -> str:
    from lablib.core.results import fmt

    if value is None:
        return "—"
    if isinstance(value, (int, float, bool, str)):
        return fmt(value)
    if hasattr(value, "item"):
        return fmt(value.item())
    return str(value)


def table(rows, title: str | None = None, columns: list[str] | None = None) -> None:
    """Print rows as an aligned table, numbers formatted like the results report.

    rows: a list of dicts (one per row; keys are the columns), or a dict name -> dict, whose
    names become the first column. Text left-aligned, numbers right-aligned."""
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str, got {type(title).__name__} {title!r}")
    if columns is not None and (isinstance(columns, str) or not isinstance(columns, (list, tuple))):
        raise TypeError(f"columns must be a list of column names, got {type(columns).__name__} {columns!r}")
    if isinstance(rows, dict) and all(isinstance(v, dict) for v in rows.values()):
        rows = [{"": name, **values} for name, values in rows.items()]
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise ValueError("rows must be a non-empty list of dicts, or a dict of name -> dict")
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    numeric = [all(isinstance(r.get(c), (int, float)) or hasattr(r.get(c), "item") or r.get(c) is None for r in rows)
               for c in columns]
    widths = [max(len(str(c)), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    out = ([title] if title else []) + [line([str(c) for c in columns]), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    print("\n".join(out))
