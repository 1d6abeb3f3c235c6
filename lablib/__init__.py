"""lablib: the support package of the AI Engineering Lab.

Modules, one concern each: config (scale, device, seed), data, augment, models, train, viz,
bench, results, checks, compat, env; one per technique: distill, prune, amp, fixmatch, diffusion,
onnx_export, quantize. `show(fn)` prints the source of the code a lab uses.
"""

__version__ = "0.1.0"

from lablib.source import show  # noqa: E402

__all__ = ["show", "__version__"]
