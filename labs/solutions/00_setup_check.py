"""Reference answer for lab 00 (the setup check)."""


def my_accuracy(logits, y):
    """Share of rows whose largest logit is at the true class, as a Python float."""
    return (logits.argmax(dim=1) == y).float().mean().item()
