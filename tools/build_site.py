"""Build the curriculum's static site: every lab with the outputs of an executed run, the docs.

    .venv/bin/python tools/build_site.py            # -> build/site/index.html

Sources are generated into build/site-src (labs, docs, an index page) and Sphinx + myst-nb turn
them into HTML in build/site; nothing is executed here and nothing is fetched from the network.
A lab's executed copy comes from build/executed/<lab>.ipynb (`make cpu` writes them through the
LAB_EXECUTED_DIR hook in conftest.py); without one the page shows the notebook without outputs
and says so. Each lab page opens with a one-line banner: when the copy ran and on what (the
environment stamp of the results/<lab>.<scale>.json written by that same run).
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import nbformat
import site_figures

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["setup", "facilitator", "agendas", "techniques", "results", "testing", "hub",
        "lab-template"]
# Docs links that point outside the site (source folders): shown as plain text instead.
OUTSIDE = re.compile(r"\[([^\]]+)\]\((?:\.\./)+(?:labs|lablib|tools|tests)/[^)]*\)")

CONF = '''\
project = "AI Engineering Lab"
author = "the AI Engineering Lab contributors"
# githubpages writes .nojekyll: GitHub Pages' Jekyll would hide _static/ and _images/
extensions = ["myst_nb", "sphinx.ext.githubpages"]
nb_execution_mode = "off"      # the labs ran under `make cpu`; the site only shows them
myst_heading_anchors = 3       # docs link to headings as page.md#some-heading
# Jupyter Book's theme: wide pages for notebook outputs, the labs in a left sidebar, the page's
# sections on the right, a search box; its fonts and icons ship in the package (nothing fetched)
html_theme = "sphinx_book_theme"
html_theme_options = {
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "use_download_button": True,     # the page's source (.ipynb with its outputs, .md)
    "use_fullscreen_button": False,
    "navigation_with_keys": False,
}
html_context = {"default_mode": "light"}  # else a first visit logs "invalid theme mode"
html_title = "AI Engineering Lab"
html_show_sourcelink = False
html_static_path = ["_static"]
html_extra_path = ["_extra"]   # figures/: the slide kit's PNGs and zip, copied as they are
html_css_files = ["custom.css"]
html_js_files = ["sidebar-fix.js"]
html_favicon = "_static/favicon.svg"  # else browsers ask for /favicon.ico and log a 404
exclude_patterns = ["_build"]
# setup.md shows Colab cells (`!git`, `%cd`) as python: the highlighter falls back, fine
suppress_warnings = ["mystnb.unknown_mime_type", "misc.highlighting_failure"]
'''
CSS = """\
/* long lines in code cells and outputs scroll instead of wrapping mid-token; a smaller font
   fits the labs' 120-character lines in more of the column */
div.cell_output pre, div.cell_input pre { white-space: pre; overflow-x: auto; font-size: 0.8em; }
/* outputs' images carry width and height; when the column is narrower, keep their shape */
.bd-article img { height: auto; }
/* wide screens: more room for code and tables than the theme's 88rem */
.bd-page-width { max-width: 110rem; }
/* the slide gallery: each figure on its own, the file name under it */
figure.slide-figure { margin: 1.5rem 0; text-align: center; }
figure.slide-figure img { max-width: 100%; height: auto; border: 1px solid #e0e0e0; }
"""
# pydata-sphinx-theme >= 0.17 wires its sidebar pop-ups to the *first* .primary-toggle and
# .secondary-toggle on the page; sphinx-book-theme shows second ones, which did nothing (on a
# phone the lab list could not be opened: pydata/pydata-sphinx-theme#2451). Route their clicks.
SIDEBAR_FIX = """\
document.addEventListener("click", (event) => {
  for (const kind of [".primary-toggle", ".secondary-toggle"]) {
    const first = document.querySelector(kind);
    const clicked = event.target.closest(kind);
    if (first && clicked && clicked !== first) {
      event.preventDefault();
      event.stopPropagation();
      first.click();
      return;
    }
  }
}, true);
"""
FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
           '<rect width="16" height="16" rx="3" fill="#2a6f97"/></svg>\n')


def lab_notebooks(labs: Path) -> list[Path]:
    """labs/NN_topic.ipynb and labs/NN_topic/NN_topic.ipynb, in lab order."""
    found = list(labs.glob("[0-9][0-9]_*.ipynb")) + list(labs.glob("[0-9][0-9]_*/[0-9][0-9]_*.ipynb"))
    return sorted(found, key=lambda p: p.name)


def _when_ran(nb) -> tuple[datetime, datetime] | None:
    """First and last cell execution times that nbclient recorded in the executed notebook."""
    stamps = []
    for cell in nb.cells:
        timing = cell.get("metadata", {}).get("execution", {})
        for key in ("iopub.execute_input", "shell.execute_reply"):
            if key in timing:
                stamps.append(datetime.fromisoformat(timing[key].replace("Z", "+00:00")))
    return (min(stamps), max(stamps)) if stamps else None


def _stamp_of_that_run(lab: str, ran: tuple[datetime, datetime], results: Path) -> dict | None:
    """The results record written by the same run: its env date falls inside the run's window."""
    for scale in ("cpu", "smoke", "gpu"):
        path = results / f"{lab}.{scale}.json"
        try:
            record = json.loads(path.read_text())
            date = datetime.fromisoformat(record["env"]["date"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if ran[0] - timedelta(minutes=1) <= date <= ran[1] + timedelta(minutes=1):
            return record
    return None


def run_of(lab: str, executed, results: Path) -> tuple[str, dict | None]:
    """(a line saying when and on what the executed copy ran, the results record of that run)."""
    if executed is None:
        return (f"no executed copy of {lab} was found when the site was built (`make cpu` writes them)",
                None)
    ran = _when_ran(executed)
    if ran is None:
        return "an executed run (its date was not recorded)", None
    when = ran[0].strftime("%Y-%m-%d %H:%M UTC")
    record = _stamp_of_that_run(lab, ran, results)
    if record is None:
        return f"a run on {when}; no environment stamp of that run was found", None
    env = record["env"]
    versions = env.get("versions", {})
    parts = [f"scale `{record.get('scale')}`", env.get("device", "?"),
             f"Python {versions.get('python', '?')}", f"torch {versions.get('torch', '?')}",
             f"lablib {versions.get('lablib', '?')}"]
    if record.get("wall_s") is not None:
        parts.append(f"{record['wall_s']:.0f} s")
    return f"the run on {when}: {', '.join(parts)}", record


def banner(lab: str, executed, results: Path) -> str:
    """The one line at the top of a lab page: when and on what its outputs were produced."""
    line, _ = run_of(lab, executed, results)
    if executed is None:
        return f"*This page shows the notebook **without outputs**: {line}.*"
    return f"*Outputs from {line}.*"


def lab_page(source: Path, executed_dir: Path, results: Path) -> tuple[object, object]:
    """(the notebook to publish, with the banner under its title; the executed copy or None)."""
    lab = source.stem
    copy = executed_dir / source.name
    executed = None
    if copy.exists():
        try:
            executed = nbformat.read(str(copy), as_version=4)
        except Exception as err:  # a corrupt copy: publish the plain notebook, say why
            print(f"  {copy}: unreadable ({err}); using the notebook without outputs")
    nb = executed if executed is not None else nbformat.read(str(source), as_version=4)
    _drop_widgets(nb)
    line = banner(lab, executed, results)
    first = nb.cells[0] if nb.cells else None
    if first is not None and first.cell_type == "markdown" and first.source.startswith("# "):
        title, _, rest = first.source.partition("\n")  # the banner goes right under the title
        first.source = f"{title}\n\n{line}\n\n{rest}"
    else:
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(line))
    return nb, executed


def _drop_widgets(nb) -> None:
    """Progress bars as text: live widgets would load their JavaScript from a CDN when the page
    is viewed (offline rooms, file:// copies). A widget's text/plain form is the bar as it
    started (0 %), so the text is rebuilt from the final state the notebook saved."""
    widgets = nb.metadata.pop("widgets", {})
    state = widgets.get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            view = output.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)
            text = _progress_text(view.get("model_id"), state) if isinstance(view, dict) else None
            if text is not None:
                output["data"]["text/plain"] = text


def _progress_text(model_id, state: dict) -> str | None:
    """A tqdm bar's last state ("dense: 100%|██████████| 800/800 [00:06<00:00, ...]"), from
    its three widgets (label, progress, counts); None for any other widget."""
    box = state.get(model_id, {})
    children = [state.get(str(c).removeprefix("IPY_MODEL_"), {})
                for c in box.get("state", {}).get("children", [])]
    if [c.get("model_name") for c in children] != ["HTMLModel", "FloatProgressModel", "HTMLModel"]:
        return None
    left, bar, right = (c.get("state", {}) for c in children)
    try:
        filled = round(10 * float(bar.get("value", 0)) / float(bar.get("max") or 1))
    except (TypeError, ValueError):
        return None
    plain = lambda v: html.unescape(str(v or "")).replace("\u2007", " ")  # noqa: E731
    return f"{plain(left.get('value'))}|{'█' * max(0, min(10, filled)):<10}|{plain(right.get('value'))}"


def nav_title(title: str, limit: int = 48) -> str:
    """A lab's title short enough for the sidebar: "Lab 12 — Watching training with TensorBoard,
    and fixing overfitting" -> "Lab 12 — Watching training with TensorBoard"."""
    short = title.split(":")[0].strip()
    if len(short) > limit:
        short = short.split(", ")[0].strip()
    return short


def doc_page(text: str) -> str:
    text = OUTSIDE.sub(r"\1", text)
    return text.replace("](answers/)", "](answers/README.md)")


def index_page(labs: list[dict], docs: list[str], answers: list[str]) -> str:
    """The home page: what this is, where to start, the labs with the compute time of the run
    shown; the navigation trees are hidden here (the sidebar shows them).
    labs: dicts with name, title (short) and record (the run's results record or None)."""
    def tree(caption: str, entries: list[str]) -> str:
        return "```{toctree}\n:hidden:\n:maxdepth: 1\n:caption: " + caption + "\n\n" + \
            "\n".join(entries) + "\n```\n"

    titles = {lab["name"]: lab["title"] for lab in labs}

    def answer_entry(name: str) -> str:
        lab = titles.get(name)
        return f"{lab.split(' — ')[0]} — answers <docs/answers/{name}>" if lab else f"docs/answers/{name}"

    def wall(lab: dict) -> str:
        seconds = (lab["record"] or {}).get("wall_s")
        return "—" if seconds is None else (f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min")

    rows = "\n".join(f"| [{lab['title']}](labs/{lab['name']}.ipynb) | {wall(lab)} |" for lab in labs)
    return ("# AI Engineering Lab\n\n"
            "A hands-on curriculum of deep-learning engineering: each lab takes one technique from "
            "the problem to a result you measure on your own machine. This site shows every lab "
            "with the outputs of one executed run (the banner under each lab's title says when and "
            "on what it ran); your own run gives your machine's figures.\n\n"
            "**Start here:** [Setting up](docs/setup.md), then [Lab 00](labs/00_setup_check.ipynb), "
            "which checks your machine in a minute. **Facilitators:** the "
            "[facilitator guide](docs/facilitator.md), the [agendas](docs/agendas.md) and the "
            "[figures for slides](figures.md).\n\n"
            "| lab | compute time of the run shown |\n| --- | --- |\n" + rows + "\n\n"
            + tree("Labs", [f"{lab['title']} <labs/{lab['name']}>" for lab in labs])
            + tree("Guides", [f"docs/{name}" for name in docs] + ["figures"])
            + tree("Answers (facilitator key)", [answer_entry(name) for name in answers]))


def generate(src: Path, executed_dir: Path, results: Path) -> dict:
    if src.exists():
        shutil.rmtree(src)
    (src / "labs").mkdir(parents=True)
    (src / "docs" / "answers").mkdir(parents=True)
    labs, kit = [], []
    for source in lab_notebooks(ROOT / "labs"):
        nb, executed = lab_page(source, executed_dir, results)
        nbformat.write(nb, str(src / "labs" / source.name))
        first = nb.cells[0].source.partition("\n")[0] if nb.cells else ""
        title = nav_title(first.removeprefix("# ")) if first.startswith("# ") else source.stem
        labs.append((source.stem, title))
        line, record = run_of(source.stem, executed, results)
        kit.append({"name": source.stem, "title": title, "nb": executed, "record": record,
                    "stamp": f"{source.stem}, measured by {line.replace('`', '')}"})
    # the slide kit: build/site/figures/ (copied verbatim: html_extra_path) and its gallery page
    gallery, problems = site_figures.export(kit, src / "_extra")
    (src / "figures.md").write_text(gallery)
    docs = [name for name in DOCS if (ROOT / "docs" / f"{name}.md").exists()]
    for name in docs:
        text = (ROOT / "docs" / f"{name}.md").read_text()
        (src / "docs" / f"{name}.md").write_text(doc_page(text))
    answers = sorted(p.stem for p in (ROOT / "docs" / "answers").glob("*.md"))
    titles = dict(labs)
    for name in answers:
        text = doc_page((ROOT / "docs" / "answers" / f"{name}.md").read_text())
        if name in titles and text.startswith("# "):  # "# 03_pruning — answers": name the lab
            text = f"# {titles[name]}: answers (facilitator key)" + text[text.index("\n"):]
        (src / "docs" / "answers" / f"{name}.md").write_text(text)
    if "README" in answers:  # the answers' own index page first
        answers.remove("README")
        answers.insert(0, "README")
    (src / "index.md").write_text(index_page(kit, docs, answers))
    (src / "conf.py").write_text(CONF)
    (src / "_static").mkdir()
    (src / "_static" / "custom.css").write_text(CSS)
    (src / "_static" / "favicon.svg").write_text(FAVICON)
    (src / "_static" / "sidebar-fix.js").write_text(SIDEBAR_FIX)
    return {"labs": len(labs), "with_outputs": sum(lab["nb"] is not None for lab in kit),
            "docs": len(docs) + len(answers), "figures": len(list((src / "_extra").rglob("*.png"))),
            "problems": problems}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executed", type=Path, default=ROOT / "build" / "executed",
                        help="folder of executed lab notebooks (default build/executed)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "site",
                        help="HTML output folder (default build/site)")
    parser.add_argument("--src", type=Path, default=ROOT / "build" / "site-src",
                        help="folder for the generated sources (default build/site-src)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    src = args.src
    counts = generate(src, args.executed, ROOT / "results")
    print(f"sources: {counts['labs']} labs ({counts['with_outputs']} with outputs), "
          f"{counts['docs']} doc pages, {counts['figures']} slide figures -> {src}")
    for problem in counts["problems"]:
        print(f"  key figure: {problem}")
    # -E: no stale pickles from an earlier build; -q: warnings only. Offline: nothing fetched.
    cmd = [sys.executable, "-m", "sphinx", "-E", "-q", "-b", "html", "-j", "auto",
           str(src), str(args.out)]
    done = subprocess.run(cmd, check=False)
    if done.returncode != 0:
        return done.returncode
    pages = len([p for p in args.out.rglob("*.html") if "_static" not in p.parts])
    print(f"site: {pages} HTML pages in {args.out} ({time.perf_counter() - start:.0f} s)")
    return 1 if counts["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
