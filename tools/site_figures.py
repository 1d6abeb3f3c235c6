"""The facilitator's slide kit, made by tools/build_site.py from the executed labs.

A lab marks its key plots with cell metadata, written in its .py as

    # %% figure="accuracy-vs-sparsity"

and the image that cell displayed in the executed run becomes figures/<lab>/<name>.png (the
labs draw at twice the shown pixels: lablib.core.config.sharp_figures). Each lab's claims from
that same run become figures/<lab>/claims.png, a table image for a slide. A gallery page lists
them all, and figures/figures.zip holds every PNG for one download.
"""

from __future__ import annotations

import base64
import io
import re
import struct
import textwrap
import zipfile
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lablib.core.results import fmt

NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
CLAIMS = "claims"  # the table image's name: no figure may take it


def key_figures(nb) -> tuple[list[tuple[str, bytes]], list[str]]:
    """([(name, PNG bytes)], problems) for the cells of an executed notebook marked figure=...;
    a marked cell that displayed no image, or a bad or repeated name, is a problem."""
    found, problems, seen = [], [], set()
    for index, cell in enumerate(nb.cells):
        name = cell.get("metadata", {}).get("figure")
        if name is None:
            continue
        if not isinstance(name, str) or not NAME.match(name) or name == CLAIMS:
            problems.append(f"cell {index}: figure name {name!r} is not lowercase-kebab-case "
                            f"(or is '{CLAIMS}', kept for the claims table)")
            continue
        if name in seen:
            problems.append(f"cell {index}: figure name {name!r} is used twice")
            continue
        seen.add(name)
        images = [base64.b64decode(out["data"]["image/png"]) for out in cell.get("outputs", [])
                  if "image/png" in out.get("data", {})]
        if not images:
            problems.append(f"cell {index}: marked figure={name!r} but displayed no image")
        for n, png in enumerate(images, 1):  # one image is the rule; more get a number each
            found.append((name if len(images) == 1 else f"{name}-{n}", png))
    return found, problems


def _verdict(claim: dict) -> tuple[str, str]:
    if claim.get("holds"):
        return "holds", "#1a7f37"
    return "does not hold" + ("" if claim.get("asserted", True) else " (not asserted)"), "#c62828"


def claims_png(record: dict, title: str, stamp: str) -> bytes:
    """The lab's claims (what was measured against what condition, and the verdict) as a PNG
    table, with the run's stamp underneath: a results slide that cannot drift from the run."""
    claims = record.get("claims") or []
    if not claims:
        raise ValueError("record has no claims to draw")
    widths = (60, 12, 40, 16)  # characters per column: claim, measured, condition, verdict
    header = ("claim", "measured", "condition", "verdict")
    rows = []
    for c in claims:
        verdict, colour = _verdict(c)
        cells = (c["name"], fmt(c["measured"]), c["condition"], verdict)
        rows.append(([textwrap.wrap(str(text), w) or [""] for text, w in zip(cells, widths,
                                                                             strict=True)], colour))
    line_in, pad_in = 0.21, 0.08  # inches per text line, and above/below each row
    x = [0.02, 0.50, 0.60, 0.88]  # column starts, as fractions of the width
    height = 0.9 + (1 + sum(max(len(c) for c in cells) for cells, _ in rows)) * line_in \
        + (len(rows) + 1) * 2 * pad_in
    fig = Figure(figsize=(13, height), dpi=150)
    FigureCanvasAgg(fig)
    y = height - 0.35  # inches from the bottom

    def put(xf, y_in, text, **kw):
        fig.text(xf, y_in / height, text, va="top", **({"fontsize": 10.5} | kw))

    put(0.02, y, title, fontsize=13, weight="bold")
    y -= 0.35 + pad_in
    for xf, text in zip(x, header, strict=True):
        put(xf, y, text, weight="bold", color="#444444")
    y -= line_in + pad_in
    for cells, colour in rows:
        fig.add_artist(_rule(fig, y / height))
        y -= pad_in
        for col, (xf, lines) in enumerate(zip(x, cells, strict=True)):
            put(xf, y, "\n".join(lines), color=colour if col == 3 else "black", linespacing=1.25)
        y -= max(len(c) for c in cells) * line_in + pad_in
    fig.add_artist(_rule(fig, y / height))
    put(0.02, y - pad_in, stamp, fontsize=8.5, color="#666666", style="italic")
    out = io.BytesIO()
    fig.savefig(out, format="png", facecolor="white")
    return out.getvalue()


def _rule(fig, y: float):
    from matplotlib.lines import Line2D

    return Line2D([0.02, 0.98], [y, y], transform=fig.transFigure, color="#cccccc", lw=0.8)


def export(labs: list[dict], out: Path) -> tuple[str, list[str]]:
    """Write figures/<lab>/*.png under `out` and figures/figures.zip; return the gallery page
    (Markdown) and the problems found. labs: dicts with name, title, nb (executed or None),
    record (the results record of that same run, or None) and stamp (a line naming the run)."""
    folder = out / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    problems, written = [], []
    page = ["# Figures for slides", "",
            "Each lab's key plots and its claims table, exported as PNG from the same executed run "
            "the lab pages show (twice the on-screen pixels). Click a figure for the full-size file; "
            "<a href=\"figures/figures.zip\">all of them in one zip</a>.", ""]
    for lab in labs:
        page += [f"## {lab['title']}", ""]
        if lab["nb"] is None:
            page += ["*No executed run of this lab was found when the site was built.*", ""]
            continue
        figures, found = key_figures(lab["nb"])
        problems += [f"{lab['name']}: {p}" for p in found]
        if not figures:
            problems.append(f"{lab['name']}: no key figure (mark one: # %% figure=\"name\")")
        if lab["record"] is not None and lab["record"].get("claims"):
            figures.append((CLAIMS, claims_png(lab["record"], lab["title"], lab["stamp"])))
        (folder / lab["name"]).mkdir(exist_ok=True)
        for name, png in figures:
            path = folder / lab["name"] / f"{name}.png"
            path.write_bytes(png)
            written.append(path)
            src = f"figures/{lab['name']}/{name}.png"
            shown = struct.unpack(">I", png[16:20])[0] // 2  # drawn at twice the shown size
            page += [f'<figure class="slide-figure"><a href="{src}"><img src="{src}" '
                     f'width="{shown}" alt="{lab["name"]}: {name}" loading="lazy"></a>'
                     f"<figcaption><code>{src}</code></figcaption></figure>", ""]
    with zipfile.ZipFile(folder / "figures.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for path in written:
            zf.write(path, path.relative_to(folder).as_posix())
    return "\n".join(page), problems
