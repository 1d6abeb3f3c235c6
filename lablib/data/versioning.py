"""Data versioning with DVC and git, run for real as subprocesses in a scratch folder, isolated.

    box = versioning.Sandbox(config.data_dir() / "dvc-lab")   # wiped and rebuilt
    box.show("git", "init")                                    # prints `$ git init` and its output
    box.show("dvc", "init")
    result = box.run("dvc", "push", ok=(0, 1))                 # a Result: output, code, seconds

Isolation, so that a lab contacts nothing and leaves nothing outside the project's data/:

* every command runs inside the sandbox's `repo/` with HOME, TMPDIR and the XDG folders
  pointed at the sandbox's `env/`; git reads no ~/.gitconfig and no system config
  (GIT_CONFIG_GLOBAL, GIT_CONFIG_NOSYSTEM) and takes its identity from GIT_AUTHOR_* /
  GIT_COMMITTER_*; DVC's global, system and site-cache folders are there too;
* DVC's telemetry and update check are off before its first command (DVC_NO_ANALYTICS=1, and
  `core.analytics false`, `core.check_update false` in the sandbox's global DVC config), and
  Studio is offline (DVC_STUDIO_OFFLINE=1);
* every command has a time-out; a failing one raises CommandFailed naming the command and
  quoting its output.

The sandbox folder must be inside the project's data/ folder: anything else is refused.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lablib.core import config
from lablib.core.validate import path as as_path
from lablib.core.validate import positive_int, real

TOOLS = ("git", "dvc")
IDENTITY = {"name": "Lab Learner", "email": "learner@lab.invalid"}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class CommandFailed(RuntimeError):
    """A git or dvc command exited with an unexpected code, or ran past its time-out."""


@dataclass
class Result:
    """One command as it ran: the words typed, its exit code, its output (stdout and stderr
    together, progress bars removed) and how long it took."""

    command: tuple[str, ...]
    code: int
    output: str
    seconds: float

    @property
    def line(self) -> str:
        """The command as typed in a terminal."""
        return "$ " + " ".join(_quote(w) for w in self.command)

    def trimmed(self, max_lines: int = 12) -> str:
        """The output, at most `max_lines` lines (the first and last ones, the middle elided)."""
        max_lines = positive_int("max_lines", max_lines)
        lines = self.output.splitlines()
        if len(lines) <= max_lines:
            return "\n".join(lines)
        head = max_lines // 2
        tail = max_lines - head - 1
        return "\n".join([*lines[:head], f"[... {len(lines) - head - tail} lines ...]", *lines[len(lines) - tail:]])

    def __str__(self) -> str:
        out = self.trimmed()
        return f"{self.line}\n{out + chr(10) if out else ''}[exit {self.code}, {self.seconds:.1f} s]"


def _quote(word: str) -> str:
    return word if re.fullmatch(r"[\w./:=@%+,-]+", word) else "'" + word.replace("'", "'\\''") + "'"


def clean_output(text: str) -> str:
    """Terminal output as a reader would see it at the end: colour codes removed, each line
    that a progress bar redrew with carriage returns kept in its final state, blank lines dropped."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    lines = []
    for raw in _ANSI.sub("", text).split("\n"):
        parts = [p for p in raw.split("\r") if p.strip()]
        if parts and "\u2800" <= parts[-1].lstrip()[0] <= "\u28ff":  # a spinner's frame ("⠋ Checking graph")
            continue
        if parts:
            lines.append(parts[-1].rstrip())
    return "\n".join(lines)


def md5(path) -> str:
    """The MD5 hex digest of a file's bytes: what DVC records in a .dvc file for it."""
    path = as_path("path", path)
    if not path.is_file():
        raise ValueError(f"path {str(path)!r} is not a file")
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recorded_md5(dvc_file) -> str:
    """The MD5 that a .dvc file records for its (single) output."""
    dvc_file = as_path("dvc_file", dvc_file)
    if dvc_file.suffix != ".dvc" or not dvc_file.is_file():
        raise ValueError(f"dvc_file {str(dvc_file)!r} must be an existing .dvc file")
    import yaml

    try:
        meta = yaml.safe_load(dvc_file.read_text(encoding="utf-8"))
        found = meta["outs"][0]["md5"]
    except (yaml.YAMLError, KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"dvc_file {str(dvc_file)!r} is not a .dvc file with an output's md5 ({exc})") from exc
    if not isinstance(found, str) or not re.fullmatch(r"[0-9a-f]{32}(\.dir)?", found):
        raise ValueError(f"dvc_file {str(dvc_file)!r} records no valid md5 (got {found!r})")
    return found


def inside_data(folder) -> Path:
    """`folder`, resolved, if it lies strictly inside the project's data/ folder; else ValueError."""
    folder = as_path("folder", folder).expanduser()
    data = config.data_dir().resolve()
    resolved = folder.resolve()
    if resolved == data or not resolved.is_relative_to(data):
        raise ValueError(f"folder {str(folder)!r} must be a folder inside the project's data/ ({data}); "
                         "the sandbox is wiped and rebuilt, so nothing else is allowed")
    return resolved


class Sandbox:
    """A scratch git + DVC workspace under data/: `repo/` (the git repository, where every command
    runs), `remote/` (a folder to use as a DVC remote) and `env/` (the home, temporary and config
    folders the commands see). fresh=True wipes the folder first."""

    def __init__(self, folder, timeout: float = 120.0, fresh: bool = True):
        self.root = inside_data(folder)
        self.timeout = real("timeout", timeout, 0, 3600, low_open=True)
        if not isinstance(fresh, bool):
            raise TypeError(f"fresh must be True or False, got {type(fresh).__name__} {fresh!r}")
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"folder {str(folder)!r} exists and is not a folder")
        if fresh and self.root.exists():
            shutil.rmtree(self.root)
        self.repo, self.remote, self.envdir = self.root / "repo", self.root / "remote", self.root / "env"
        self.home, self.tmp = self.envdir / "home", self.envdir / "tmp"
        for d in (self.repo, self.remote, self.home, self.tmp, self.envdir / "xdg-config", self.envdir / "xdg-cache",
                  self.envdir / "xdg-data", self.envdir / "xdg-state", self.envdir / "dvc-global",
                  self.envdir / "dvc-system", self.envdir / "dvc-site"):
            d.mkdir(parents=True, exist_ok=True)
        self.gitconfig = self.envdir / "gitconfig"
        if not self.gitconfig.exists():
            self.gitconfig.write_text("[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n"
                                      "[core]\n\tautocrlf = false\n", encoding="utf-8")
        self.history: list[Result] = []  # every command run, in order, with its time
        self.dvc_global_config = self.envdir / "dvc-global" / "config"
        if not self.dvc_global_config.exists():  # read by dvc before any repository exists: no update check at all
            self.dvc_global_config.write_text("[core]\n    analytics = false\n    check_update = false\n", encoding="utf-8")

    def environment(self) -> dict[str, str]:
        """The environment every command gets: the caller's, with every path a tool could write
        to (home, temporary files, caches, configs) moved under the sandbox, and git's and DVC's
        network-facing extras off."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("GIT_", "DVC_")) and k not in ("PYTHONSTARTUP",)}
        e = self.envdir
        bindir = str(Path(sys.executable).parent)  # the scripts a pipeline runs use this Python
        env |= {
            "HOME": str(self.home), "TMPDIR": str(self.tmp), "TMP": str(self.tmp), "TEMP": str(self.tmp),
            "XDG_CONFIG_HOME": str(e / "xdg-config"), "XDG_CACHE_HOME": str(e / "xdg-cache"),
            "XDG_DATA_HOME": str(e / "xdg-data"), "XDG_STATE_HOME": str(e / "xdg-state"),
            "MPLCONFIGDIR": str(e / "xdg-config" / "matplotlib"),
            "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONDONTWRITEBYTECODE": "1",
            "GIT_CONFIG_GLOBAL": str(self.gitconfig), "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": IDENTITY["name"], "GIT_AUTHOR_EMAIL": IDENTITY["email"],
            "GIT_COMMITTER_NAME": IDENTITY["name"], "GIT_COMMITTER_EMAIL": IDENTITY["email"],
            "GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "PAGER": "cat",
            "DVC_NO_ANALYTICS": "1", "DVC_STUDIO_OFFLINE": "1", "DVC_PAGER": "cat",
            "DVC_GLOBAL_CONFIG_DIR": str(e / "dvc-global"), "DVC_SYSTEM_CONFIG_DIR": str(e / "dvc-system"),
            "DVC_SITE_CACHE_DIR": str(e / "dvc-site"),
            "COLUMNS": "100", "NO_COLOR": "1",
        }
        env.pop("PYTHONSTARTUP", None)
        return env

    def _argv(self, words: tuple[str, ...]) -> list[str]:
        tool = words[0]
        if tool == "dvc":  # the dvc of this Python, whatever PATH says
            return [sys.executable, "-m", "dvc", *words[1:]]
        found = shutil.which(tool)
        if found is None:
            raise CommandFailed(f"`{tool}` is not installed (not found on PATH): install it to run `{' '.join(words)}`")
        return [found, *words[1:]]

    def run(self, *words: str, ok=(0,), timeout: float | None = None) -> Result:
        """Run one git or dvc command in the repository; return its Result. An exit code not in
        `ok`, or a run longer than `timeout` seconds (the sandbox's default if None), raises
        CommandFailed with the command and its output."""
        if not words or not all(isinstance(w, str) for w in words):
            raise TypeError(f"words must be the command's words as strings, e.g. run('dvc', 'add', 'x.csv'), got {words!r}")
        if words[0] not in TOOLS:
            raise ValueError(f"words must start with one of {', '.join(TOOLS)} (the tools this sandbox runs), got {words[0]!r}")
        if isinstance(ok, int) and not isinstance(ok, bool):
            ok = (ok,)
        if not isinstance(ok, (tuple, list)) or not ok or not all(isinstance(c, int) and not isinstance(c, bool) for c in ok):
            raise TypeError(f"ok must be the accepted exit codes, e.g. (0,) or (0, 1), got {ok!r}")
        limit = self.timeout if timeout is None else real("timeout", timeout, 0, 3600, low_open=True)
        argv = self._argv(words)
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=self.repo, env=self.environment(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=os.name == "posix")
        try:
            raw, _ = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raw, _ = proc.communicate()
            result = Result(tuple(words), -1, clean_output(raw.decode("utf-8", "replace")), time.perf_counter() - start)
            raise CommandFailed(f"`{' '.join(words)}` ran past its time-out of {limit:g} s and was stopped; "
                                f"its output so far:\n{result.trimmed(30)}") from None
        except BaseException:
            _kill_group(proc)
            raise
        result = Result(tuple(words), proc.returncode, clean_output(raw.decode("utf-8", "replace")),
                        time.perf_counter() - start)
        self.history.append(result)
        if result.code not in ok:
            raise CommandFailed(f"`{' '.join(words)}` failed with exit code {result.code} "
                                f"(expected {', '.join(map(str, ok))}); its output:\n{result.trimmed(30)}")
        return result

    def show(self, *words: str, ok=(0,), timeout: float | None = None, max_lines: int = 12) -> Result:
        """run(), then print the command and its trimmed output like a terminal would show them."""
        max_lines = positive_int("max_lines", max_lines)
        result = self.run(*words, ok=ok, timeout=timeout)
        out = result.trimmed(max_lines)
        print(f"{result.line}\n{out + chr(10) if out else ''}[exit {result.code}, {result.seconds:.1f} s]")
        return result

    def path(self, relative) -> Path:
        """A path inside the repository (refusing one that would leave it)."""
        rel = as_path("relative", relative)
        full = (self.repo / rel).resolve()
        if not full.is_relative_to(self.repo.resolve()):
            raise ValueError(f"relative {str(relative)!r} must stay inside the sandbox's repository")
        return full

    def write(self, relative, text: str) -> Path:
        """Write a text file inside the repository (folders made as needed)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        full = self.path(relative)
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(text, encoding="utf-8")
        return full

    def copy_in(self, source, relative=None) -> Path:
        """Copy a file (a pipeline's script, dvc.yaml) into the repository."""
        source = as_path("source", source)
        if not source.is_file():
            raise ValueError(f"source {str(source)!r} is not a file")
        target = self.path(source.name if relative is None else relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return target

    def timing(self) -> dict[str, float]:
        """How many commands ran, their total and slowest time in seconds (for a budget line)."""
        times = [r.seconds for r in self.history]
        return {"commands": len(times), "total_s": float(math.fsum(times)), "slowest_s": max(times, default=0.0)}

    def leftovers(self) -> list[Path]:
        """Files the commands left in the sandbox's home and temporary folders (should be none
        that matter; the sandbox keeps them in data/ either way)."""
        return sorted(p for d in (self.home, self.tmp) for p in d.rglob("*"))


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop a command and anything it started (its process group)."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # Windows: no process groups here
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not wait
        pass

