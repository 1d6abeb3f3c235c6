"""The static site: lab banners, and the headless-browser check of every page of the built site."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import build_site  # noqa: E402
import check_site  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
browser = pytest.mark.skipif(
    shutil.which(check_site.CHROMIUM) is None or importlib.util.find_spec("playwright") is None,
    reason="needs /usr/bin/chromium and the playwright package",
)


def _executed(start: str, end: str):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Lab 99 — a title\n\nWhat it is about."),
                nbformat.v4.new_code_cell("print(1)")]
    nb.cells[1].metadata["execution"] = {"iopub.execute_input": start,
                                         "shell.execute_reply": end}
    return nb


def _record(results: Path, date: str, scale="cpu"):
    results.mkdir(exist_ok=True)
    env = {"date": date, "device": "cpu (test, 2 threads)",
           "versions": {"python": "3.11.7", "torch": "2.13.0+cpu", "lablib": "0.2.0"}}
    (results / f"99_lab.{scale}.json").write_text(
        json.dumps({"scale": scale, "wall_s": 42.4, "env": env}))


def test_banner_without_executed_copy_says_so(tmp_path):
    text = build_site.banner("99_lab", None, tmp_path)
    assert "without outputs" in text and "99_lab" in text


def test_banner_takes_the_stamp_of_the_same_run(tmp_path):
    _record(tmp_path / "results", "2026-12-02T14:22:01+00:00")
    nb = _executed("2026-12-02T14:21:30.0Z", "2026-12-02T14:22:05.0Z")
    text = build_site.banner("99_lab", nb, tmp_path / "results")
    assert "2026-12-02 14:21 UTC" in text
    for part in ("scale `cpu`", "cpu (test, 2 threads)", "torch 2.13.0+cpu", "42 s"):
        assert part in text


def test_banner_ignores_a_stamp_from_another_run(tmp_path):
    _record(tmp_path / "results", "2026-12-01T09:00:00+00:00")
    nb = _executed("2026-12-02T14:21:30.0Z", "2026-12-02T14:22:05.0Z")
    text = build_site.banner("99_lab", nb, tmp_path / "results")
    assert "no environment stamp" in text and "torch" not in text


def test_lab_page_puts_banner_under_title_and_drops_widgets(tmp_path):
    nb = _executed("2026-12-02T14:21:30.0Z", "2026-12-02T14:22:05.0Z")
    nb.metadata["widgets"] = {"state": {}}
    nb.cells[1].outputs = [nbformat.v4.new_output(
        "display_data", data={"text/plain": "100%", "application/vnd.jupyter.widget-view+json": {}})]
    (tmp_path / "executed").mkdir()
    nbformat.write(nb, str(tmp_path / "executed" / "99_lab.ipynb"))
    page, has_outputs = build_site.lab_page(tmp_path / "99_lab.ipynb", tmp_path / "executed",
                                            tmp_path / "results")
    assert has_outputs
    title, _, rest = page.cells[0].source.partition("\n")
    assert title == "# Lab 99 — a title" and rest.strip().startswith("*Outputs from")
    assert "widgets" not in page.metadata
    assert page.cells[1].outputs[0]["data"] == {"text/plain": "100%"}


def test_check_site_refuses_a_folder_without_a_site(tmp_path):
    with pytest.raises(ValueError, match="site"):
        check_site.check_site(tmp_path)


@browser
def test_check_site_finds_each_kind_of_fault(tmp_path):
    """The browser check is only worth something if it fails: one planted fault of each kind."""
    (tmp_path / "index.html").write_text(
        '<html><body><a href="page.html">ok</a> <a href="gone.html">gone</a>'
        ' <a href="page.html#nowhere">bad anchor</a></body></html>')
    (tmp_path / "page.html").write_text(
        '<html><body><h1 id="top">p</h1><img src="missing.png">'
        '<div class="output traceback">ZeroDivisionError: division by zero</div>'
        '<script>console.error("boom")</script></body></html>')
    count, problems = check_site.check_site(tmp_path)
    text = "\n".join(problems)
    assert count == 2
    assert "index.html: broken link to gone.html" in text
    assert "index.html: broken link to page.html#nowhere" in text
    assert "page.html: broken image missing.png" in text
    assert "page.html: error output cell (ZeroDivisionError: division by zero)" in text
    assert "page.html: console error: boom" in text


@browser
def test_built_site_opens_cleanly_in_chromium(tmp_path):
    """Build the site from the current tree (offline, ~10 s) into a scratch folder and open every
    page (`make site` does the same into build/site after the cpu run)."""
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "build_site.py"), "--out", str(site),
                           "--src", str(tmp_path / "src")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    labs = sorted(p.stem for p in build_site.lab_notebooks(ROOT / "labs"))
    assert sorted(p.stem for p in (site / "labs").glob("*.html")) == labs
    count, problems = check_site.check_site(site, search_for="quantization")
    assert problems == []
    assert count >= len(labs) + 10
