import matplotlib
import pytest

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test runs in its own folder at a fixed scale, so nothing it writes lands in the
    project's results/ and LAB_SCALE from the caller's shell does not leak in."""
    monkeypatch.setenv("LAB_ROOT", str(tmp_path))
    monkeypatch.setenv("LAB_SCALE", "smoke")
    monkeypatch.delenv("LAB_DEVICE", raising=False)
    (tmp_path / "labs").mkdir()
    return tmp_path
