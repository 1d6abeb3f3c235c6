import matplotlib
import pytest

from lablib.core import checks, results

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test runs in its own folder at a fixed scale, so nothing it writes lands in the
    project's results/ and LAB_SCALE (or the solutions mode) from the caller's shell does not
    leak in. The claims and verdicts a kernel collects start empty."""
    monkeypatch.setenv("LAB_ROOT", str(tmp_path))
    monkeypatch.setenv("LAB_SCALE", "smoke")
    for name in ("LAB_DEVICE", "LAB_SOLUTIONS", "LAB_NAME", "JPY_SESSION_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(results, "CLAIMS", {})
    monkeypatch.setattr(checks, "VERDICTS", {})
    monkeypatch.setattr(checks, "AGREEMENTS", {})
    (tmp_path / "labs").mkdir()
    return tmp_path
