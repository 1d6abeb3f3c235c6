"""Reference answers of lab 12 (monitoring and overfitting): one function per exercise, named as
in the lab. Under LAB_SOLUTIONS=1 they replace the learner's stubs."""

import statistics


def my_explosion_step(norms, factor, window):
    """The first index whose norm exceeds factor x the median of the `window` norms before it."""
    for i in range(window, len(norms)):
        if norms[i] > factor * statistics.median(norms[i - window : i]):
            return i
    return None


def my_stall_step(losses, window, min_improvement):
    """The first index ending a window whose mean loss is not min_improvement below the previous window's."""
    for i in range(2 * window - 1, len(losses)):
        last = statistics.fmean(losses[i - window + 1 : i + 1])
        previous = statistics.fmean(losses[i - 2 * window + 1 : i - window + 1])
        if last > (1 - min_improvement) * previous:
            return i
    return None


def my_early_stopping(val_losses, patience):
    """(index of the lowest loss, first index `patience` evaluations after it), or (best, None)."""
    best = None
    for i, loss in enumerate(val_losses):
        if best is None or loss < val_losses[best]:
            best = i
        elif i - best >= patience:
            return best, i
    return best, None
