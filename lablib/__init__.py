"""lablib: the support package of the AI Engineering Lab. A lab imports what it needs by role:

  lablib.core     config (scale, device, seed, lab name), env, results (claims and records),
                  checks (self-checking exercises), show (source listings, tables), bench,
                  viz, cache (atomic files and checkpoint folders), compat (version shims only),
                  validate (argument checks), launch (torchrun from a notebook),
                  progress (the exercises you passed)
  lablib.data     datasets (digits, shapes, your image folder, loaders), augment, tables (bundled
                  tabular sets, fault injection), versioning (git + DVC in an isolated sandbox),
                  series (generated daily demand with its true components)
  lablib.nets     models, train (the one training loop: `fit` with a pluggable step)
  lablib.methods  one module per technique: distill, pruning, amp, fixmatch, diffusion,
                  stable_diffusion, quantize, mixup, imbalance, quality, tuning, monitoring,
                  efficient, transfer, continual, distributed, forecast, custom_op, pipeline (choosing
                  among compressed models: Pareto front, budget, compound ratios)
  lablib.deploy   onnx_export (export, ONNX Runtime sessions, parity), serving (the classify
                  service: model store, Starlette app, routing/canary/rollback, runner, load)

What a lab teaches is written in the lab; lablib keeps the tested reference it is checked
against, and the scaffolding no lab should rewrite. `show(fn)` prints any function's source.
"""

__version__ = "0.2.0"

# config first: it points torch's compile cache into the project's data/ (TORCHINDUCTOR_CACHE_DIR)
# before any lablib module imports diffusers, whose import creates that cache folder (in /tmp
# by default).
from lablib.core import config as _config  # noqa: E402, F401
from lablib.core.show import show, table  # noqa: E402

__all__ = ["show", "table", "__version__"]
