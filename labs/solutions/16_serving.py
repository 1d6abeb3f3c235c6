"""Reference answers of lab 16 (serving a model): one function per exercise, named as in the lab.
Under LAB_SOLUTIONS=1 they replace the learner's stubs."""

import hashlib
import math

import numpy as np


def my_batch_responses(logits, classes, k, version):
    """Every row's answer at once: a stable softmax over the batch, each row's top-k (ties: the
    lower class first), the version."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    order = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return [{"version": version, "predictions": [{"label": classes[i], "probability": float(row[i])} for i in idx]}
            for row, idx in zip(p, order, strict=True)]


def my_bucket(user_id):
    """The user's fixed place in [0, 1): the first 8 bytes of the SHA-256 of the id, as a fraction."""
    digest = hashlib.sha256(user_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def my_should_roll_back(stats, max_error_rate, max_p99_s, min_requests):
    """Roll back when the window is large enough and a threshold is strictly exceeded."""
    if stats["n"] < min_requests:
        return False
    p99 = stats["p99_s"]
    return stats["error_rate"] > max_error_rate or (not math.isnan(p99) and p99 > max_p99_s)
