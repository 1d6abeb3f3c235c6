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
import site_figures  # noqa: E402

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
        ' <a href="page.html#nowhere">bad anchor</a> <img src="plot.png" width="300" height="40">'
        ' <button class="primary-toggle">menu</button><dialog id="pst-primary-sidebar-modal">'
        'nav</dialog></body></html>')
    (tmp_path / "plot.png").write_bytes(_png(300, 200))
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
    assert "index.html: distorted image plot.png" in text
    assert "index.html (phone): the menu button does not open the navigation" in text


@browser
def test_built_site_opens_cleanly_in_chromium(tmp_path):
    """Build the site from the current tree (offline, ~10 s) into a scratch folder and open every
    page (`make site` does the same into build/site after the cpu run)."""
    site = tmp_path / "site"
    # no executed copies: the pages without outputs (the kit is tested above; `make site` builds it)
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "build_site.py"), "--out", str(site),
                           "--src", str(tmp_path / "src"), "--executed", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    labs = sorted(p.stem for p in build_site.lab_notebooks(ROOT / "labs"))
    assert sorted(p.stem for p in (site / "labs").glob("*.html")) == labs
    count, problems = check_site.check_site(site, search_for="quantization")
    assert problems == []
    assert count >= len(labs) + 10


# --- the slide kit: key figures and claims tables ----------------------------------------------


def _png(width: int, height: int) -> bytes:
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    FigureCanvasAgg(fig)
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def _image_output(png: bytes):
    import base64

    return nbformat.v4.new_output("display_data", data={
        "image/png": base64.b64encode(png).decode(), "text/plain": "<Figure>"})


def _marked(name, pngs):
    cell = nbformat.v4.new_code_cell("fig")
    cell.metadata["figure"] = name
    cell.outputs = [_image_output(p) for p in pngs]
    return cell


def _size(png: bytes) -> tuple[int, int]:
    import struct

    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


def test_key_figures_takes_each_marked_cells_image():
    a, b, c = _png(300, 200), _png(200, 100), _png(100, 100)
    nb = _executed("2026-12-02T14:21:30.0Z", "2026-12-02T14:22:05.0Z")
    nb.cells += [_marked("accuracy-vs-sparsity", [a]), nbformat.v4.new_code_cell("x"),
                 _marked("two-panels", [b, c])]
    nb.cells[-2].outputs = [_image_output(c)]  # an unmarked cell's image is not taken
    found, problems = site_figures.key_figures(nb)
    assert problems == []
    assert found == [("accuracy-vs-sparsity", a), ("two-panels-1", b), ("two-panels-2", c)]


@pytest.mark.parametrize("name, pngs, expected", [
    ("Accuracy_vs", ["x"], "not lowercase-kebab-case"),
    ("claims", ["x"], "not lowercase-kebab-case"),
    (["a"], ["x"], "not lowercase-kebab-case"),
    ("no-image", [], "displayed no image"),
])
def test_key_figures_names_what_is_wrong(name, pngs, expected):
    nb = _executed("2026-12-02T14:21:30.0Z", "2026-12-02T14:22:05.0Z")
    nb.cells.append(_marked(name, [_png(50, 50) for _ in pngs]))
    found, problems = site_figures.key_figures(nb)
    assert found == [] and len(problems) == 1 and expected in problems[0] and "cell 2" in problems[0]


def test_key_figures_refuses_a_repeated_name():
    nb = _executed("2026-12-02T14:21:30.0Z", "2026-12-02T14:22:05.0Z")
    nb.cells += [_marked("curves", [_png(50, 50)]), _marked("curves", [_png(60, 60)])]
    found, problems = site_figures.key_figures(nb)
    assert [n for n, _ in found] == ["curves"] and problems == ["cell 3: figure name 'curves' is used twice"]


def _claims(n):
    return [{"name": f"claim {i} " + "long words " * 8, "measured": 0.5 + i, "holds": i % 2 == 0,
             "condition": ">= 0.5", "asserted": i != 1} for i in range(n)]


def test_claims_table_is_a_png_that_grows_with_its_claims():
    small = site_figures.claims_png({"claims": _claims(1)}, "Lab 99 — a title", "the run")
    large = site_figures.claims_png({"claims": _claims(6)}, "Lab 99 — a title", "the run")
    (w1, h1), (w6, h6) = _size(small), _size(large)
    assert w1 == w6 and h6 > h1 * 2
    with pytest.raises(ValueError, match="no claims"):
        site_figures.claims_png({"claims": []}, "t", "s")


def test_export_writes_the_kit_and_its_gallery(tmp_path):
    import zipfile

    nb = _executed("2026-12-02T14:21:30.0Z", "2026-12-02T14:22:05.0Z")
    nb.cells.append(_marked("curves", [_png(80, 60)]))
    labs = [{"name": "99_lab", "title": "Lab 99 — a title", "nb": nb, "stamp": "the run",
             "record": {"claims": _claims(2)}},
            {"name": "98_other", "title": "Lab 98 — not run", "nb": None, "record": None, "stamp": ""}]
    page, problems = site_figures.export(labs, tmp_path)
    assert problems == []
    assert sorted(p.name for p in (tmp_path / "figures" / "99_lab").iterdir()) == ["claims.png", "curves.png"]
    with zipfile.ZipFile(tmp_path / "figures" / "figures.zip") as zf:
        assert sorted(zf.namelist()) == ["99_lab/claims.png", "99_lab/curves.png"]
    assert 'src="figures/99_lab/curves.png"' in page and 'src="figures/99_lab/claims.png"' in page
    assert "## Lab 98 — not run" in page and "No executed run" in page


def test_export_reports_a_lab_without_key_figures(tmp_path):
    nb = _executed("2026-12-02T14:21:30.0Z", "2026-12-02T14:22:05.0Z")
    _, problems = site_figures.export([{"name": "99_lab", "title": "t", "nb": nb, "record": None,
                                        "stamp": ""}], tmp_path)
    assert problems == ['99_lab: no key figure (mark one: # %% figure="name")']


def test_nav_title_shortens_long_lab_titles():
    assert build_site.nav_title("Lab 03 — Pruning") == "Lab 03 — Pruning"
    assert build_site.nav_title("Lab 04 — Mixed precision: autocast, loss scaling") == "Lab 04 — Mixed precision"
    long = "Lab 12 — Watching training with TensorBoard, and fixing overfitting in a long title"
    assert build_site.nav_title(long) == "Lab 12 — Watching training with TensorBoard"


def test_progress_bars_show_their_final_state_not_the_first():
    # a tqdm bar's text/plain is the bar as it started; its last state is in the widget state
    def model(name, **state):
        return {"model_name": name, "state": state}

    state = {"box": model("HBoxModel", children=["IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"]),
             "l": model("HTMLModel", value="dense:\u2007100%"),
             "p": model("FloatProgressModel", value=800.0, max=800.0),
             "r": model("HTMLModel", value="\u2007800/800\u2007[00:06&lt;00:00,\u2007105it/s]"),
             "half": model("HBoxModel", children=["IPY_MODEL_l", "IPY_MODEL_q", "IPY_MODEL_r"]),
             "q": model("FloatProgressModel", value=400.0, max=800.0),
             "slider": model("IntSliderModel", value=3)}
    nb = _executed("2026-12-02T14:21:30.0Z", "2026-12-02T14:22:05.0Z")
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": state}}
    nb.cells[1].outputs = [nbformat.v4.new_output("display_data", data={
        "text/plain": "dense:   0%|          | 0/800", "application/vnd.jupyter.widget-view+json": {"model_id": m}})
        for m in ("box", "half", "slider", "gone")]
    build_site._drop_widgets(nb)
    texts = [o["data"] for o in nb.cells[1].outputs]
    assert texts[0] == {"text/plain": "dense: 100%|██████████| 800/800 [00:06<00:00, 105it/s]"}
    assert texts[1]["text/plain"].startswith("dense: 100%|█████     |")  # the bar is drawn from value/max
    assert texts[2] == texts[3] == {"text/plain": "dense:   0%|          | 0/800"}  # not a bar: left as it was
    assert "widgets" not in nb.metadata
