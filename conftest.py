"""pytest hooks for running the labs under nbmake: tell each notebook's kernel which lab it is.

Jupyter Server does this for a notebook opened in JupyterLab (JPY_SESSION_NAME); nbmake starts
kernels itself, so the name is set here before each notebook's kernel starts.
"""

import os


def pytest_runtest_setup(item):
    if item.path.suffix == ".ipynb":
        os.environ["JPY_SESSION_NAME"] = str(item.path)


# `make cpu` keeps each executed notebook for the static site (tools/build_site.py) so the labs
# are not run twice: with LAB_EXECUTED_DIR set, a copy with its outputs is written there as
# <lab>.ipynb. The run itself is unchanged (same notebook, same working directory); labs/ is
# never written to (nbmake's --overwrite would put outputs into the committed notebooks).
def pytest_configure(config):
    out_dir = os.environ.get("LAB_EXECUTED_DIR")
    if not out_dir:
        return
    from pathlib import Path

    import nbformat
    from nbmake import nb_run

    execute = nb_run.NotebookRun.execute
    if getattr(execute, "_keeps_copy", False):
        return

    def execute_and_keep(self):
        res = execute(self)
        target = Path(out_dir).resolve() / Path(self.filename).name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".ipynb.tmp")
        nbformat.write(res.nb, str(tmp))
        tmp.replace(target)  # atomic: a half-written copy never replaces a good one
        return res

    execute_and_keep._keeps_copy = True
    nb_run.NotebookRun.execute = execute_and_keep
