"""Reference answers of lab 19 (the capstone pipeline): one function per exercise, named as in
the lab. Under LAB_SOLUTIONS=1 they replace the learner's stubs."""

import math

from lablib.methods import pruning, quantize


def my_compound(base, final):
    """What the pipeline bought: base over final for parameters, bytes and latency (x), and the
    accuracy change in percentage points."""

    def ratio(key):
        top, bottom = float(base[key]), float(final[key])
        if bottom == 0:
            return math.inf if top > 0 else math.nan
        return top / bottom

    return {"fewer_params": ratio("params"), "smaller": ratio("size_kb"), "faster": ratio("latency_ms"),
            "accuracy_points": 100 * (final["accuracy"] - base["accuracy"])}


def my_quantize_then_prune(model, keep):
    """Round the weights to the INT8 grid first (fake-quantize, then bake it in), prune second."""
    rounded = quantize.freeze(quantize.qat(pruning.clone(model), bits=8))
    return pruning.structured_prune_mlp(rounded, keep)
