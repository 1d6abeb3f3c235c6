"""The release gate: should a candidate model version replace the current one?

    # lab 16 stores its versions (v1, v2, v2-early) in data/16_serving/models
    python labs/16_serving/release_gate.py --current v1 --candidate v2 --models data/16_serving/models
    python labs/16_serving/release_gate.py --current v1 --candidate v2 --models data/16_serving/models \\
        --data held_out.npz --max-accuracy-drop 0.01 --json gate.json

Both versions come from the model store (data/serving/models by default; --models another), the
held-out set from --data (an .npz with x (N, C, H, W) floats in [0, 1] and y (N,) class indices;
default: the digits test split, which needs lablib's torch install). The gate measures accuracy,
a robustness score (mean accuracy over noisy, blurred, occluded and low-contrast copies), the p99
latency of one-image calls (the best of --rounds rounds) and the file size of both, prints a table, and says promote or reject
with the reasons. Exit code 0: promote; 1: reject; 2: a usage error (a missing version or file).
A CI/CD pipeline runs it after training and before the canary starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def held_out(path: str | None):
    """(x, y) from an .npz file, or the digits test split."""
    if path is None:
        from lablib.data import datasets

        test = datasets.digits().test
        return test.x.numpy(), test.y.numpy()
    with np.load(path) as data:
        if "x" not in data or "y" not in data:
            raise ValueError(f"{path} must hold arrays named x (images) and y (labels), has {sorted(data)}")
        return data["x"].astype(np.float32), data["y"].astype(np.int64)


def parse(argv=None) -> argparse.Namespace:
    from lablib.deploy.serving import gate

    d = gate.Rules()
    p = argparse.ArgumentParser(description="Validate a candidate model version against the current one: promote (exit 0) or reject (exit 1).")
    p.add_argument("--current", required=True, help="the version serving now, e.g. v1")
    p.add_argument("--candidate", required=True, help="the version to validate, e.g. v2")
    p.add_argument("--models", default=None, help="the model store folder (default: data/serving/models)")
    p.add_argument("--data", default=None, help="held-out set, an .npz with x and y (default: the digits test split)")
    p.add_argument("--latency-n", type=int, default=300, help="one-image calls timed per version and round (default 300)")
    p.add_argument("--rounds", type=int, default=3, help="latency rounds; each version's best round's p99 counts (default 3)")
    p.add_argument("--max-accuracy-drop", type=float, default=d.max_accuracy_drop, help=f"default {d.max_accuracy_drop}")
    p.add_argument("--max-robustness-drop", type=float, default=d.max_robustness_drop, help=f"default {d.max_robustness_drop}")
    p.add_argument("--max-p99-ratio", type=float, default=d.max_p99_ratio, help=f"default {d.max_p99_ratio}")
    p.add_argument("--p99-slack-ms", type=float, default=d.p99_slack_ms, help=f"default {d.p99_slack_ms}")
    p.add_argument("--max-size-ratio", type=float, default=d.max_size_ratio, help=f"default {d.max_size_ratio}")
    p.add_argument("--json", default=None, help="also write the decision and the measurements to this file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    from lablib import table
    from lablib.deploy.serving import gate, load_model

    try:
        rules = gate.Rules(args.max_accuracy_drop, args.max_robustness_drop, args.max_p99_ratio,
                           args.p99_slack_ms, args.max_size_ratio)
        models = {v: load_model(v, args.models) for v in (args.current, args.candidate)}
        x, y = held_out(args.data)
    except (OSError, ValueError, TypeError) as exc:
        print(f"release_gate: {exc}", file=sys.stderr)
        return 2
    measured = gate.measure(models, x, y, latency_n=args.latency_n, rounds=args.rounds)
    decision = gate.decide(measured[args.current], measured[args.candidate], rules)
    table([{**r, "passed": "yes" if r["passed"] else "NO"} for r in decision.rows],
          title=f"Release gate: candidate {args.candidate} against current {args.current} ({len(y)} held-out images)")
    print(f"{decision.verdict}: {args.candidate}" + ("" if decision.promote else " (" + "; ".join(decision.reasons) + ")"))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"current": args.current, "candidate": args.candidate,
                                               "measured": measured, **gate.as_dict(decision)}, indent=1))
    return 0 if decision.promote else 1


if __name__ == "__main__":
    sys.exit(main())
