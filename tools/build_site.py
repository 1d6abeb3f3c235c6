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
html_favicon = "_static/favicon.svg"  # else browsers ask for /favicon.ico and log a 404
exclude_patterns = ["_build"]
# setup.md shows Colab cells (`!git`, `%cd`) as python: the highlighter falls back, fine
suppress_warnings = ["mystnb.unknown_mime_type", "misc.highlighting_failure"]
'''
CSS = """\
/* long lines in code cells and outputs scroll instead of wrapping mid-token */
div.cell_output pre, div.cell_input pre { white-space: pre; overflow-x: auto; }
/* wide screens: more room for code and tables than the theme's 88rem */
.bd-page-width { max-width: 110rem; }
/* the slide gallery: each figure on its own, the file name under it */
figure.slide-figure { margin: 1.5rem 0; text-align: center; }
figure.slide-figure img { max-width: 100%; border: 1px solid #e0e0e0; }
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
    is viewed (offline rooms, file:// copies); a widget output keeps its text/plain form."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            output.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)


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


def index_page(labs: list[tuple[str, str]], docs: list[str], answers: list[str]) -> str:
    """labs: (name, sidebar title) pairs."""
    def tree(caption: str, entries: list[str]) -> str:
        return "```{toctree}\n:maxdepth: 1\n:caption: " + caption + "\n\n" + \
            "\n".join(entries) + "\n```\n"

    return ("# AI Engineering Lab\n\nA hands-on curriculum: each lab below is shown with the "
            "outputs of an executed run (the banner at the top of a lab says when and on what it "
            "ran). Use the search box to find a technique.\n\n"
            + tree("Labs", [f"{title} <labs/{name}>" for name, title in labs])
            + tree("Guides", [f"docs/{name}" for name in docs] + ["figures"])
            + tree("Answers (facilitator key)", [f"docs/answers/{name}" for name in answers]))


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
    for name in answers:
        text = (ROOT / "docs" / "answers" / f"{name}.md").read_text()
        (src / "docs" / "answers" / f"{name}.md").write_text(doc_page(text))
    if "README" in answers:  # the answers' own index page first
        answers.remove("README")
        answers.insert(0, "README")
    (src / "index.md").write_text(index_page(labs, docs, answers))
    (src / "conf.py").write_text(CONF)
    (src / "_static").mkdir()
    (src / "_static" / "custom.css").write_text(CSS)
    (src / "_static" / "favicon.svg").write_text(FAVICON)
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
