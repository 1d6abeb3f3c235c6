"""`show(fn)`: put the source of the tested lablib code a lab uses right in the notebook."""

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
        raise TypeError(f"show() needs a function, class or module defined in a file, got {obj!r}") from exc
    where = f"{file.parent.name}/{file.name}" if file.parent.name else file.name
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
