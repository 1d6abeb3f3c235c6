"""The serving lab's additions to lablib.deploy.serving: the micro-batcher and the in-process
closed loop, the robustness corruptions, the release gate (and its script), one image's answer,
the rollback rule, and that no server outlives an error in the code that started it."""

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest

from lablib.data import datasets
from lablib.deploy import serving
from lablib.deploy.serving import gate, robustness

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """v1 (briefly trained), v2 (the same, with noise augmentation) and 'early' (one epoch)."""
    root = tmp_path_factory.mktemp("models")
    serving.default_model("v1", root, epochs=4, dynamo=False)
    serving.default_model("v2", root, epochs=4, noise=0.2, dynamo=False)
    serving.default_model("early", root, epochs=1, width=2, dynamo=False)
    return root


@pytest.fixture(scope="module")
def held_out():
    test = datasets.digits().test
    return test.x.numpy(), test.y.numpy()


# --- one image's answer, the rollback rule ---------------------------------------------------------


def test_respond_is_softmax_then_top_k_with_the_version():
    logits = np.array([1.0, 3.0, 2.0, 3.0])
    answer = serving.respond(logits, ["a", "b", "c", "d"], 3, "v7")
    p = np.exp(logits - 3) / np.exp(logits - 3).sum()
    assert answer["version"] == "v7"
    assert [x["label"] for x in answer["predictions"]] == ["b", "d", "c"]  # a tie: the lower index first
    assert [x["probability"] for x in answer["predictions"]] == pytest.approx([p[1], p[3], p[2]], rel=1e-6)
    big = serving.respond(np.array([1000.0, 0.0]), ["x", "y"], 2, "v1")  # no overflow
    assert big["predictions"][0] == {"label": "x", "probability": pytest.approx(1.0)}
    for bad, err in [((np.zeros((2, 2)), ["a", "b"], 1, "v1"), ValueError), (([np.nan, 1.0], ["a", "b"], 1, "v1"), ValueError),
                     (([1.0, 2.0], ["a", "b"], 3, "v1"), ValueError), (([1.0, 2.0], ["a", "b"], 1, None), TypeError)]:
        with pytest.raises(err):
            serving.respond(*bad)


def test_rollback_rule_needs_enough_requests_and_a_strict_breach():
    ok = {"n": 50, "error_rate": 0.05, "p99_s": 0.2}
    assert serving.breaches(ok, 0.05, 0.2, 20) == []  # at the thresholds: not a breach
    assert serving.breaches({**ok, "error_rate": 0.06}, 0.05, 0.2, 20) == ["error rate 6.0% > 5.0%"]
    assert len(serving.breaches({**ok, "error_rate": 0.5, "p99_s": 0.3}, 0.05, 0.2, 20)) == 2
    assert serving.breaches({**ok, "n": 19, "error_rate": 1.0}, 0.05, 0.2, 20) == []  # too few to judge
    assert serving.breaches({**ok, "p99_s": float("nan")}, 0.05, 0.2, 20) == []
    with pytest.raises(TypeError, match="stats"):
        serving.breaches({"n": 3}, 0.05, 0.2, 20)
    with pytest.raises(ValueError, match="max_error_rate"):
        serving.breaches(ok, 1.5, 0.2, 20)


# --- the micro-batcher -----------------------------------------------------------------------------


def counting(calls):
    def predict(x):
        calls.append(len(x))
        return x.reshape(len(x), -1).sum(1, keepdims=True) * np.ones((1, 3))
    return predict


def test_batcher_answers_every_caller_its_own_row_and_batches_concurrent_ones():
    calls = []
    inputs = [np.full((1, 2, 2), i, dtype=np.float32) for i in range(40)]

    def setup():
        batcher = serving.MicroBatcher(counting(calls), max_batch=8)

        async def call(x):
            out = await batcher.submit(x)
            assert out.tolist() == [x.sum()] * 3  # its own row, not a neighbour's
            return out
        return call

    run = serving.closed_loop(None, inputs, concurrency=8, n=40, setup=setup)
    assert run.statuses == [200] * 40 and sum(calls) == 40
    assert max(calls) == 8 and len(calls) < 40  # concurrent callers shared calls, none over max_batch


def test_batcher_without_wait_runs_a_lone_request_at_once_and_with_wait_holds_it():
    async def timed(wait):
        batcher = serving.MicroBatcher(lambda x: x, max_batch=4, max_wait_s=wait)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await batcher.submit(np.zeros(2))
        batcher.close()
        return loop.time() - t0, batcher.batch_sizes

    quick, sizes = asyncio.run(timed(0.0))
    slow, _ = asyncio.run(timed(0.05))
    assert sizes == [1] and quick < 0.04 and slow >= 0.045


def test_batcher_full_batch_does_not_wait_for_the_window():
    async def run():
        batcher = serving.MicroBatcher(lambda x: x, max_batch=4, max_wait_s=5.0)
        out = await asyncio.wait_for(asyncio.gather(*(batcher.submit(np.full(2, i)) for i in range(4))), 2.0)
        batcher.close()
        return out, batcher.batch_sizes

    out, sizes = asyncio.run(run())
    assert sizes == [4] and [o[0] for o in out] == [0, 1, 2, 3]


def test_batcher_passes_a_model_error_to_every_caller_and_keeps_going():
    state = {"fail": True}

    def predict(x):
        if state.pop("fail", False):
            raise RuntimeError("boom")
        return x

    async def run():
        batcher = serving.MicroBatcher(predict, max_batch=2, offload=True)
        first = await asyncio.gather(batcher.submit(np.zeros(1)), batcher.submit(np.ones(1)), return_exceptions=True)
        second = await batcher.submit(np.ones(1))
        batcher.close()
        return first, second

    first, second = asyncio.run(run())
    assert all(isinstance(e, RuntimeError) for e in first) and second.tolist() == [1.0]


def test_batcher_and_closed_loop_check_their_arguments():
    with pytest.raises(TypeError, match="predict"):
        serving.MicroBatcher(None)
    with pytest.raises(ValueError, match="max_batch"):
        serving.MicroBatcher(lambda x: x, max_batch=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        serving.MicroBatcher(lambda x: x, max_wait_s=-1)
    with pytest.raises(TypeError, match="offload"):
        serving.MicroBatcher(lambda x: x, offload="yes")
    with pytest.raises(TypeError, match="inputs"):
        serving.closed_loop(lambda x: asyncio.sleep(0), [], n=1)
    with pytest.raises(ValueError, match="concurrency"):
        serving.closed_loop(lambda x: asyncio.sleep(0), [1], concurrency=0, n=1)
    with pytest.raises(TypeError, match="async"):
        serving.closed_loop(lambda x: x, [1], n=1)  # a plain function: its result cannot be awaited


def test_closed_loop_counts_failures_as_500():
    async def flaky(i):
        if i % 2:
            raise RuntimeError("odd")

    run = serving.closed_loop(flaky, list(range(10)), concurrency=3, n=10)
    assert sorted(run.statuses) == [200] * 5 + [500] * 5 and run.summary()["errors"] == 5


# --- robustness ------------------------------------------------------------------------------------


def test_corruptions_keep_shape_and_range_and_zero_severity_is_identity(held_out):
    x = held_out[0][:20]
    for kind, severities in {**robustness.KINDS, "shift": (0, 1, 2)}.items():
        for s in severities:
            out = robustness.corrupt(x, kind, s, seed=3)
            assert out.shape == x.shape and out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
            if s == 0:
                assert np.array_equal(out, x)
    assert np.array_equal(robustness.corrupt(x, "noise", 0.2, seed=1), robustness.corrupt(x, "noise", 0.2, seed=1))
    flat = robustness.corrupt(x, "contrast", 1.0)
    assert np.allclose(flat, x.mean(axis=(1, 2, 3), keepdims=True) * np.ones_like(x), atol=1e-6)
    grey = np.full((2, 1, 8, 8), 0.4, dtype=np.float32)
    assert np.allclose(robustness.corrupt(grey, "blur", 1.5), grey)  # a weighted average: flat stays flat
    blurred = robustness.corrupt(x, "blur", 1.0)
    assert np.abs(np.diff(blurred, axis=3)).mean() < np.abs(np.diff(x, axis=3)).mean()  # and smoother
    shifted = robustness.corrupt(x, "shift", 1)
    assert np.array_equal(shifted[..., 1:], x[..., :-1]) and not shifted[..., 0].any()
    occluded = robustness.corrupt(x, "occlusion", 0.5)
    assert ((occluded == 0) & (x > 0)).sum(axis=(1, 2, 3)).max() <= 16  # at most a 4x4 square hidden


def test_corrupt_checks_its_arguments(held_out):
    x = held_out[0][:4]
    for kwargs, err, name in [({"kind": "rain", "severity": 0.1}, ValueError, "kind"),
                              ({"kind": "noise", "severity": -0.1}, ValueError, "severity"),
                              ({"kind": "occlusion", "severity": 1.5}, ValueError, "severity"),
                              ({"kind": "shift", "severity": 0.5}, ValueError, "severity"),
                              ({"kind": "noise", "severity": "0.1"}, TypeError, "severity")]:
        with pytest.raises(err, match=name):
            robustness.corrupt(x, **kwargs)
    with pytest.raises(ValueError, match="x must"):
        robustness.corrupt(x[0], "noise", 0.1)
    with pytest.raises(ValueError, match="y must"):
        robustness.accuracy(serving.Faulty.__new__(serving.Faulty), x, [0, 1])  # never reaches the model


def test_accuracy_falls_with_noise_and_the_score_leaves_out_clean_points(store, held_out):
    x, y = held_out
    v1 = serving.load_model("v1", store)
    assert robustness.accuracy(v1, x, y) == pytest.approx(v1.meta["accuracy"])
    curves = robustness.curves(v1, x, y, kinds={"noise": (0.0, 0.2, 0.6)})
    accs = [a for _, a in curves["noise"]]
    assert accs[0] > accs[2]  # heavy noise costs accuracy
    assert robustness.score(curves) == pytest.approx((accs[1] + accs[2]) / 2)
    with pytest.raises(ValueError, match="corrupted"):
        robustness.score({"noise": [(0.0, 0.9)]})


# --- the release gate ------------------------------------------------------------------------------


def test_decide_promotes_within_tolerance_and_rejects_with_reasons():
    cur = {"accuracy": 0.96, "robustness": 0.70, "p99_ms": 0.2, "size_kb": 60.0}
    good = gate.decide(cur, {**cur, "accuracy": 0.945, "p99_ms": 1.1})  # within 2 points and the 2 ms of slack
    assert good.promote and good.verdict == "promote" and not good.reasons and len(good.rows) == 4
    bad = gate.decide(cur, {**cur, "accuracy": 0.90, "size_kb": 200.0, "p99_ms": 5.0})
    assert not bad.promote and [r["metric"] for r in bad.rows if not r["passed"]] == ["accuracy", "p99_ms", "size_kb"]
    assert len(bad.reasons) == 3 and "accuracy 0.900" in bad.reasons[0]
    strict = gate.decide(cur, {**cur, "accuracy": 0.955}, gate.Rules(max_accuracy_drop=0.0))
    assert not strict.promote
    assert json.loads(json.dumps(gate.as_dict(bad)))["verdict"] == "reject"
    with pytest.raises(TypeError, match="candidate"):
        gate.decide(cur, {"accuracy": 0.9})
    with pytest.raises(ValueError, match="max_p99_ratio"):
        gate.Rules(max_p99_ratio=0.5)


def test_measure_and_the_script_promote_a_good_candidate_and_reject_a_bad_one(store, held_out, tmp_path):
    x, y = held_out
    measured = gate.measure({v: serving.load_model(v, store) for v in ("v1", "early")}, x, y, latency_n=20)
    assert measured["early"]["accuracy"] < measured["v1"]["accuracy"] - 0.1
    assert all(m["p99_ms"] > 0 and m["size_kb"] > 0 and 0 <= m["robustness"] <= 1 for m in measured.values())
    data = tmp_path / "held.npz"
    np.savez(data, x=x, y=y)
    script = ROOT / "labs" / "16_serving" / "release_gate.py"
    base = [sys.executable, str(script), "--current", "v1", "--models", str(store), "--data", str(data), "--latency-n", "20"]
    out = subprocess.run([*base, "--candidate", "early", "--json", str(tmp_path / "g.json")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1 and "reject: early" in out.stdout and "accuracy" in out.stdout
    assert json.loads((tmp_path / "g.json").read_text())["verdict"] == "reject"
    same = subprocess.run([*base, "--candidate", "v1"], capture_output=True, text=True, timeout=120)
    assert same.returncode == 0 and "promote: v1" in same.stdout
    missing = subprocess.run([*base, "--candidate", "v9"], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "v9" in missing.stderr


def test_noise_augmented_default_model_records_it(store):
    meta = json.loads((store / "v2" / "meta.json").read_text())
    assert meta["trained"]["noise"] == 0.2 and meta["trained"]["shift"] == 0
    with pytest.raises(ValueError, match="noise"):
        serving.default_model("v3", store, noise=2.0)
    with pytest.raises(TypeError, match="dynamo"):
        serving.default_model("v3", store, dynamo="no")


# --- no server survives ----------------------------------------------------------------------------


def port_free(port: int) -> bool:
    with socket.socket() as s:
        # SO_REUSEADDR: connections the server closed linger in TIME_WAIT on its port; only a
        # listener still holding it should make the bind fail
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_an_error_inside_the_with_block_stops_the_server_and_frees_its_port(store):
    with pytest.raises(RuntimeError, match="a failing cell"):
        with serving.serve(models=store, weights={"v1": 1.0}, timeout_s=90) as server:
            pid, port = server.pid, server.port
            assert not port_free(port) and server.alive()
            raise RuntimeError("a failing cell")
    assert not server.alive() and port_free(port)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


# --- the lab's exercise checks tell right from wrong -------------------------------------------------


def _solutions():
    import importlib.util

    spec = importlib.util.spec_from_file_location("solutions_16", ROOT / "labs" / "solutions" / "16_serving.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_labs_exercise_checks_pass_the_answers_and_fail_plausible_mistakes():
    import hashlib
    import math

    import torch

    from lablib.core import checks

    sol = _solutions()

    def batch_inputs(g):  # as in the lab
        n, kk = int(torch.randint(1, 6, (1,), generator=g)), int(torch.randint(2, 11, (1,), generator=g))
        scale = float([1.0, 1000.0][int(torch.randint(0, 2, (1,), generator=g))])
        logits = (torch.randn(n, kk, generator=g, dtype=torch.float64) * scale).round(decimals=1).numpy()
        return logits, [str(i) for i in range(kk)], int(torch.randint(1, kk + 1, (1,), generator=g)), "v2"

    def naive(logits, classes, k, version):  # no max subtracted: exp(1000) overflows
        with np.errstate(all="ignore"):
            e = np.exp(np.asarray(logits, dtype=np.float64))
            p = e / e.sum(axis=1, keepdims=True)
        return [{"version": version, "predictions": [{"label": classes[i], "probability": float(r[i])}
                                                     for i in np.argsort(-r, kind="stable")[:k]]} for r in p]

    ref = lambda lg, cl, k, v: [serving.respond(r, cl, k, v) for r in lg]  # noqa: E731
    kw = dict(make_inputs=batch_inputs, trials=10, quiet=True, _record=False)
    assert checks.check_function(sol.my_batch_responses, ref, **kw).status == "correct"
    assert checks.check_function(naive, ref, **kw).status == "wrong"

    def user_inputs(g):
        n = int(torch.randint(1, 20, (1,), generator=g))
        return "".join(chr(int(c)) for c in torch.randint(33, 0x3000, (n,), generator=g)),

    kw = dict(make_inputs=user_inputs, trials=20, atol=0, rtol=0, quiet=True, _record=False)
    assert checks.check_function(sol.my_bucket, serving.bucket, **kw).status == "correct"
    little = lambda u: int.from_bytes(hashlib.sha256(u.encode()).digest()[:8], "little") / 2.0**64  # noqa: E731
    assert checks.check_function(little, serving.bucket, **kw).status == "wrong"
    assert checks.check_function(lambda u: hash(u) % 1000 / 1000, serving.bucket, **kw).status == "wrong"

    def window_inputs(g):
        pick = lambda options: options[int(torch.randint(0, len(options), (1,), generator=g))]  # noqa: E731
        stats = {"n": pick([5, 19, 20, 100]), "error_rate": pick([0.0, 0.05, 0.06, 0.5]),
                 "p99_s": pick([0.01, 0.2, 0.21, float("nan")])}
        return stats, 0.05, 0.2, 20

    ref = lambda s, e, p, m: bool(serving.breaches(s, e, p, m))  # noqa: E731
    kw = dict(make_inputs=window_inputs, trials=40, quiet=True, _record=False)
    assert checks.check_function(sol.my_should_roll_back, ref, **kw).status == "correct"
    at_threshold = lambda s, e, p, m: s["n"] >= m and (s["error_rate"] >= e or s["p99_s"] >= p)  # noqa: E731
    no_minimum = lambda s, e, p, m: s["error_rate"] > e or (not math.isnan(s["p99_s"]) and s["p99_s"] > p)  # noqa: E731
    assert checks.check_function(at_threshold, ref, **kw).status == "wrong"
    assert checks.check_function(no_minimum, ref, **kw).status == "wrong"
