"""pytest hooks for running the labs under nbmake: tell each notebook's kernel which lab it is.

Jupyter Server does this for a notebook opened in JupyterLab (JPY_SESSION_NAME); nbmake starts
kernels itself, so the name is set here before each notebook's kernel starts.
"""

import os


def pytest_runtest_setup(item):
    if item.path.suffix == ".ipynb":
        os.environ["JPY_SESSION_NAME"] = str(item.path)
