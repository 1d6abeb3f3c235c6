"""Argument checks shared by every public lablib function: a bad value gets a clear error that
names the argument, instead of a traceback from deep inside torch."""

from __future__ import annotations

from pathlib import Path


def positive_int(name: str, value) -> int:
    """`value` if it is an int >= 1 (bools are not ints here), else a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def existing_file(path, name: str = "path") -> Path:
    """`path` as a Path when it names a regular file, else a clear error naming the argument."""
    if not isinstance(path, (str, Path)):
        raise TypeError(f"{name} must be a path (str or Path), got {type(path).__name__}")
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{name} {str(p)!r} is not a file")
    return p
