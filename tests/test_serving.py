"""The model service (lablib.deploy.serving): the classify API and its error table, the body
limit, metrics per version, sticky routing, the canary ramp, the automatic rollback, the model
store, serving without torch, and one real uvicorn subprocess with the load generator."""

import asyncio
import base64
import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from lablib.data import datasets
from lablib.deploy import serving
from lablib.deploy.serving import app as app_module

ROOT = Path(__file__).resolve().parent.parent
CLASSIFY = "/api/v1/classify"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A model store with v1 (the default digits CNN, briefly trained) and v2 (the same file
    stored again under another version: enough to tell versions apart in routing)."""
    root = tmp_path_factory.mktemp("models")
    folder = serving.default_model("v1", root, epochs=3)
    meta = json.loads((folder / "meta.json").read_text())
    serving.save_model("v2", folder / "model.onnx", meta, root)  # same time: ordered by name
    return root


@pytest.fixture(scope="module")
def digits():
    test = datasets.digits().test
    return test.x[:, 0].numpy(), test.y.numpy()


@pytest.fixture(scope="module")
def v1(store):
    return serving.load_model("v1", store)


@pytest.fixture()
def client(v1):
    return TestClient(serving.make_app(v1))


def png(pixels: np.ndarray, size: int = 8, mode: str = "L", invert: bool = False) -> str:
    """A digit (8x8 in [0, 1], light ink on dark) as a base64 PNG of size x size pixels."""
    x = 1 - pixels if invert else pixels
    img = Image.fromarray((x * 255).round().astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.convert(mode).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def post(client, body, content_type="application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(CLASSIFY, content=data, headers={"content-type": content_type} if content_type else {})


# --- the answer ------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_is_descending_with_probabilities_and_version(client, digits, k):
    r = post(client, {"pixels": digits[0][0].tolist(), "top_k": k})
    assert r.status_code == 200
    body = r.json()
    assert body["version"] == "v1"
    probs = [p["probability"] for p in body["predictions"]]
    assert len(probs) == k and len({p["label"] for p in body["predictions"]}) == k
    assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
    assert sum(probs) <= 1 + 1e-5
    if k == 10:
        assert sum(probs) == pytest.approx(1, abs=1e-5)


def test_default_top_k_is_three(client, digits):
    assert len(post(client, {"pixels": digits[0][0].tolist()}).json()["predictions"]) == 3


def test_an_image_of_any_size_is_read_as_the_model_expects(client, digits):
    x = digits[0][1]
    want = post(client, {"pixels": x.tolist(), "top_k": 10}).json()["predictions"]
    for image in (png(x), png(x, 64), png(x, 40, "RGB"), png(x, 24, invert=True)):
        got = post(client, {"image_base64": image, "top_k": 10}).json()["predictions"]
        assert [p["label"] for p in got][:2] == [p["label"] for p in want][:2]
        assert got[0]["probability"] == pytest.approx(want[0]["probability"], abs=0.02)


def test_transparent_drawing_and_jpeg_are_read(client, digits):
    x = digits[0][2]
    want = post(client, {"pixels": x.tolist()}).json()["predictions"][0]["label"]
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = (x * 255).round().astype(np.uint8)  # black ink, transparent paper
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").resize((32, 32), Image.Resampling.NEAREST).save(buf, "PNG")
    r = post(client, {"image_base64": base64.b64encode(buf.getvalue()).decode()})
    assert r.json()["predictions"][0]["label"] == want
    buf = io.BytesIO()
    Image.fromarray((x * 255).astype(np.uint8)).resize((64, 64), Image.Resampling.NEAREST).save(buf, "JPEG", quality=95)
    r = post(client, {"image_base64": "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()})
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] == want


def test_served_accuracy_matches_the_stored_one(client, v1, digits):
    xs, ys = digits
    hits = [post(client, {"image_base64": png(x, 32)}).json()["predictions"][0]["label"] == str(y)
            for x, y in zip(xs[:80], ys[:80], strict=True)]
    assert np.mean(hits) >= v1.meta["accuracy"] - 0.1 and v1.meta["accuracy"] > 0.5


# --- the error table -------------------------------------------------------------------------------

PIXELS = [[0.0] * 8] * 8


def gif() -> str:
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "GIF")
    return base64.b64encode(buf.getvalue()).decode()


ERRORS = [
    ("bad base64", {"image_base64": "not base64!"}, 400),
    ("empty base64", {"image_base64": ""}, 400),
    ("not an image", {"image_base64": base64.b64encode(b"hello, world").decode()}, 400),
    ("a GIF", {"image_base64": gif()}, 400),
    ("bad JSON", b'{"pixels": [', 400),
    ("top_k 0", {"pixels": PIXELS, "top_k": 0}, 422),
    ("top_k 11", {"pixels": PIXELS, "top_k": 11}, 422),
    ("top_k a string", {"pixels": PIXELS, "top_k": "3"}, 422),
    ("top_k a bool", {"pixels": PIXELS, "top_k": True}, 422),
    ("top_k a float", {"pixels": PIXELS, "top_k": 2.0}, 422),
    ("no image", {"top_k": 3}, 422),
    ("both inputs", {"pixels": PIXELS, "image_base64": "aGk="}, 422),
    ("unknown field", {"pixels": PIXELS, "topk": 3}, 422),
    ("image a number", {"image_base64": 5}, 422),
    ("pixels wrong shape", {"pixels": [[0.0] * 7] * 8}, 422),
    ("pixels ragged", {"pixels": [[0.0] * 8] * 7 + [[0.0] * 3]}, 422),
    ("pixels strings", {"pixels": [["0"] * 8] * 8}, 422),
    ("pixels bools", {"pixels": [[True] * 8] * 8}, 422),
    ("pixels out of range", {"pixels": [[2.0] * 8] * 8}, 422),
    ("user_id a number", {"pixels": PIXELS, "user_id": 7}, 422),
    ("body a list", [1, 2], 422),
]


@pytest.mark.parametrize("framework", serving.app.FRAMEWORKS)
@pytest.mark.parametrize("case, body, status", ERRORS, ids=[e[0] for e in ERRORS])
def test_error_table(v1, framework, case, body, status):
    r = post(TestClient(serving.make_app(v1, framework=framework)), body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error", "detail"} and r.json()["error"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(client, content_type):
    r = post(client, {"pixels": PIXELS}, content_type=content_type)
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"


def test_json_with_a_charset_is_accepted(client):
    assert post(client, {"pixels": PIXELS}, "application/json; charset=utf-8").status_code == 200


@pytest.mark.parametrize("framework", serving.app.FRAMEWORKS)
def test_body_over_the_limit_is_413_with_or_without_content_length(v1, framework):
    c = TestClient(serving.make_app(v1, max_body=2000, framework=framework))
    at_limit = json.dumps({"pixels": PIXELS, "user_id": "u"}).encode()
    at_limit = at_limit[:-1] + b" " * (2000 - len(at_limit)) + b"}"
    assert len(at_limit) == 2000 and post(c, at_limit).status_code == 200
    assert post(c, at_limit + b" ").status_code == 413  # declared Content-Length
    chunks = (at_limit[i:i + 300] + (b" " if i == 0 else b"") for i in range(0, 2000, 300))
    r = c.post(CLASSIFY, content=chunks, headers={"content-type": "application/json"})  # chunked
    assert r.request.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.request.headers
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


def test_body_limit_stops_reading_at_the_first_chunk_past_it():
    """Straight through the ASGI middleware: a chunked body of 50 x 100 kB against 1 MiB."""
    seen = {"chunks": 0, "status": None, "reached_app": False}

    async def app(scope, receive, send):
        seen["reached_app"] = True
        while (await receive()).get("more_body"):
            pass

    async def receive():
        seen["chunks"] += 1
        return {"type": "http.request", "body": b"x" * 100_000, "more_body": seen["chunks"] < 50}

    async def send(message):
        if message["type"] == "http.response.start":
            seen["status"] = message["status"]

    scope = {"type": "http", "headers": [(b"transfer-encoding", b"chunked")], "path": CLASSIFY}
    asyncio.run(serving.BodyLimit(app, max_bytes=1 << 20)(scope, receive, send))
    assert seen["status"] == 413 and seen["chunks"] == 11  # 11 x 100 kB is the first past 1 MiB

    seen.update(chunks=0, status=None, reached_app=False)
    scope["headers"] = [(b"content-length", b"5000000")]
    asyncio.run(serving.BodyLimit(app, max_bytes=1 << 20)(scope, receive, send))
    assert seen["status"] == 413 and seen["chunks"] == 0 and not seen["reached_app"]


def test_unknown_route_and_method_answer_json(client):
    assert client.get("/nowhere").json()["error"] == "not_found"
    r = client.get(CLASSIFY)
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def test_fastapi_variant_answers_like_starlette(v1, digits):
    body = {"pixels": digits[0][3].tolist(), "top_k": 4}
    answers = [post(TestClient(serving.make_app(v1, framework=f)), body).json() for f in serving.app.FRAMEWORKS]
    assert answers[0] == answers[1]


# --- metrics and health ----------------------------------------------------------------------------


def samples(client, name):
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            if s.name == name:
                yield s


def test_metrics_count_requests_per_version(store, digits):
    models = [serving.load_model(v, store) for v in ("v1", "v2")]
    c = TestClient(serving.make_app(models, weights={"v1": 0.5, "v2": 0.5}))
    answered = [post(c, {"pixels": digits[0][0].tolist(), "user_id": f"user-{i}"}).json()["version"] for i in range(40)]
    post(c, {"pixels": digits[0][0].tolist(), "top_k": 99})  # a 422 after routing
    post(c, b"{", "text/plain")  # a 415 before routing
    counts = {(s.labels["version"], s.labels["status"]): s.value
              for s in samples(c, "serving_requests_total") if s.labels["route"] == CLASSIFY}
    assert {v: counts.get((v, "200"), 0) for v in ("v1", "v2")} == {v: answered.count(v) for v in ("v1", "v2")}
    assert 0 < answered.count("v2") < 40
    assert counts[("none", "415")] == 1 and sum(n for (_, s), n in counts.items() if s == "422") == 1
    latency = {s.labels["version"]: s.value for s in samples(c, "serving_request_duration_seconds_count")}
    assert latency["v1"] + latency["v2"] == 41  # the 200s and the routed 422


def test_each_app_has_its_own_registry(v1, digits):
    a, b = (TestClient(serving.make_app(v1)) for _ in range(2))
    post(a, {"pixels": digits[0][0].tolist()})
    assert sum(s.value for s in samples(b, "serving_requests_total") if s.labels["route"] == CLASSIFY) == 0


def test_health_reports_versions_and_routing(store):
    models = [serving.load_model(v, store) for v in ("v1", "v2")]
    body = TestClient(serving.make_app(models, weights={"v1": 3, "v2": 1})).get("/health").json()
    assert body["status"] == "ok" and body["weights"] == {"v1": 0.75, "v2": 0.25} and body["stable"] == "v1"
    assert set(body["versions"]) == {"v1", "v2"} and 0 < body["versions"]["v1"]["accuracy"] <= 1


# --- routing ---------------------------------------------------------------------------------------


def test_bucket_is_a_stable_hash_not_pythons_salted_one():
    expected = int.from_bytes(hashlib.sha256(b"alice").digest()[:8], "big") / 2**64
    assert serving.bucket("alice") == expected
    # another process with another salt for str hashes (torch kept out: a faster start)
    code = ("import sys; sys.modules['torch'] = None\n"
            "from lablib.deploy.serving.routing import bucket; print(repr(bucket('alice')), hash('alice'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"})
    theirs, their_hash = out.stdout.split()
    assert float(theirs) == expected and int(their_hash) != hash("alice")


def test_users_stick_to_a_version_while_the_weights_stay():
    router = serving.Router({"v1": 0.5, "v2": 0.5})
    first = {f"u{i}": router.choose(f"u{i}") for i in range(500)}
    for _ in range(3):
        assert {u: router.choose(u) for u in first} == first
    assert {u: serving.Router({"v1": 0.5, "v2": 0.5}).choose(u) for u in first} == first  # a restart too


@pytest.mark.parametrize("weights", [{"v1": 0.7, "v2": 0.3}, {"a": 1, "b": 1, "c": 2}, {"v1": 0.95, "v2": 0.05}])
def test_split_over_many_users_is_near_the_weights(weights):
    router = serving.Router(weights)
    n = 20_000
    chosen = [router.choose(f"user-{i}") for i in range(n)]
    for v, w in router.weights.items():
        assert chosen.count(v) / n == pytest.approx(w, abs=0.015)


def test_requests_without_user_id_split_by_weight():
    router = serving.Router({"v1": 0.8, "v2": 0.2}, seed=3)
    chosen = [router.choose() for _ in range(10_000)]
    assert chosen.count("v2") / 10_000 == pytest.approx(0.2, abs=0.02)


def test_zero_weight_version_gets_nothing():
    router = serving.Router({"v1": 1.0, "v2": 0.0})
    assert {router.choose(f"u{i}") for i in range(2000)} == {"v1"}


def test_canary_ramp_moves_users_one_way_and_promotes():
    router = serving.Router({"v1": 1.0})
    canary = serving.Canary(router, "v2")
    users = [f"u{i}" for i in range(5000)]
    previous: set[str] = set()
    for step, share in enumerate((0.05, 0.25, 1.0)):
        assert canary.advance() == share and canary.step == step
        on_canary = {u for u in users if router.choose(u) == "v2"}
        assert len(on_canary) / len(users) == pytest.approx(share, abs=0.02)
        assert previous <= on_canary  # nobody who saw the canary goes back
        previous = on_canary
    assert canary.done and router.stable == "v2" and router.weights == {"v2": 1.0}
    assert [e["kind"] for e in router.events] == ["start", "weights", "weights", "promote"]
    with pytest.raises(RuntimeError, match="already promoted"):
        canary.advance()


def test_routing_table_changes_at_run_time_and_keeps_stable():
    router = serving.Router({"v1": 1.0})
    router.set_weights({"v1": 0.5, "v2": 0.5}, reason="an A/B test")
    assert router.weights == {"v1": 0.5, "v2": 0.5} and router.events[-1]["reason"] == "an A/B test"
    with pytest.raises(ValueError, match="stable version 'v1'"):
        router.set_weights({"v2": 1.0})


@pytest.mark.parametrize("weights, error", [
    ({}, TypeError), ([("v1", 1)], TypeError), ({"v1": -1}, ValueError), ({"v1": 0}, ValueError),
    ({"v1": float("nan")}, ValueError), ({"v1": "1"}, TypeError), ({"v 1": 1}, ValueError), ({1: 1}, TypeError),
])
def test_router_refuses_bad_weights(weights, error):
    with pytest.raises(error):
        serving.Router(weights)


@pytest.mark.parametrize("steps", [(), (0.5, 0.25, 1.0), (0.05, 0.5), (0, 1.0), (0.5, 1.5)])
def test_canary_refuses_bad_steps(steps):
    with pytest.raises((TypeError, ValueError)):
        serving.Canary(serving.Router({"v1": 1.0}), "v2", steps)


# --- rollback --------------------------------------------------------------------------------------


def test_a_failing_canary_is_rolled_back_automatically(v1, digits):
    broken = serving.Faulty(v1, error_rate=1.0, version="v2")
    router = serving.Router({"v1": 1.0})
    guard = serving.RollbackGuard(router, max_error_rate=0.1, min_requests=5, window=50)
    c = TestClient(serving.make_app([v1, broken], router=router, guard=guard))
    canary = serving.Canary(router, "v2")
    canary.advance()
    canary.advance()  # 25 %
    statuses = {}
    for i in range(200):
        r = post(c, {"pixels": digits[0][0].tolist(), "user_id": f"u{i}"})
        statuses.setdefault(r.status_code, []).append(r.json().get("version") or r.json()["error"])
        if canary.rolled_back:
            break
    assert canary.rolled_back is not None, "the guard never rolled back"
    event = router.events[-1]
    assert event["kind"] == "rollback" and event["version"] == "v2" and "error rate" in event["reason"]
    assert event["n"] == 5 and event["error_rate"] == 1.0
    assert set(statuses[500]) == {"model_failed"} and len(statuses[500]) == 5 and set(statuses[200]) == {"v1"}
    assert router.weights == {"v1": 1.0, "v2": 0.0}
    after = {post(c, {"pixels": PIXELS, "user_id": f"u{i}"}).json()["version"] for i in range(50)}
    assert after == {"v1"}
    with pytest.raises(RuntimeError, match="rolled back"):
        canary.advance()
    failed = {s.labels["version"]: s.value for s in samples(c, "serving_requests_total") if s.labels["status"] == "500"}
    assert failed == {"v2": 5}


def test_a_slow_canary_is_rolled_back_on_p99(v1, digits):
    slow = serving.Faulty(v1, error_rate=0.0, delay_s=0.03, version="v2")
    router = serving.Router({"v1": 0.0, "v2": 1.0}, stable="v1")
    guard = serving.RollbackGuard(router, max_p99_s=0.02, min_requests=3, window=10)
    c = TestClient(serving.make_app([v1, slow], router=router, guard=guard))
    versions = [post(c, {"pixels": PIXELS}).json()["version"] for _ in range(5)]
    assert versions == ["v2", "v2", "v2", "v1", "v1"]
    assert "p99" in router.events[-1]["reason"] and router.events[-1]["p99_s"] >= 0.03


def test_guard_leaves_stable_alone_and_waits_for_enough_requests():
    router = serving.Router({"v1": 0.5, "v2": 0.5})
    guard = serving.RollbackGuard(router, max_error_rate=0.1, min_requests=10)
    for _ in range(50):
        assert guard.observe("v1", 0.001, ok=False) is None  # the stable version: no rollback to go to
    for _ in range(9):
        assert guard.observe("v2", 0.001, ok=False) is None
    assert guard.observe("v2", 0.001, ok=False)["kind"] == "rollback"
    assert guard.stats()["v1"]["error_rate"] == 1.0


def test_guard_window_forgets_old_requests():
    router = serving.Router({"v1": 0.5, "v2": 0.5})
    guard = serving.RollbackGuard(router, max_error_rate=0.25, min_requests=10, window=10)
    for ok in [False] * 2 + [True] * 8 + [False, False]:
        # counted from the start it would be 4 failures in 12 (33 %); the last 10 hold 2 (20 %)
        assert guard.observe("v2", 0.001, ok=ok) is None
    event = guard.observe("v2", 0.001, ok=False)  # now 3 of the last 10
    assert event["kind"] == "rollback" and event["error_rate"] == pytest.approx(0.3) and event["n"] == 10


def test_admin_route_changes_routing_when_enabled(store):
    models = [serving.load_model(v, store) for v in ("v1", "v2")]
    assert TestClient(serving.make_app(models)).get("/admin/routing").status_code == 404
    c = TestClient(serving.make_app(models, admin=True))
    assert c.put("/admin/routing", json={"weights": {"v1": 1, "v2": 1}}).json()["weights"] == {"v1": 0.5, "v2": 0.5}
    assert c.put("/admin/routing", json={"weights": {"v3": 1}}).status_code == 422
    assert c.put("/admin/routing", json={"rollback": "by hand"}).json()["events"][-1]["reason"] == "by hand"
    assert c.put("/admin/routing", json={"promote": "v2"}).json()["stable"] == "v2"


# --- the store -------------------------------------------------------------------------------------


def test_store_round_trip_and_order(store, v1):
    assert serving.versions(store) == ["v1", "v2"]
    again = serving.load_model("v2", store)
    x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    assert np.allclose(again.predict(x), v1.predict(x)) and again.version == "v2"
    assert v1.predict(x).sum(axis=1) == pytest.approx(np.ones(5), abs=1e-5)


def test_default_model_is_not_trained_twice(store):
    stamp = (store / "v1" / "model.onnx").stat().st_mtime_ns
    assert serving.default_model("v1", store, epochs=3) == store / "v1"
    assert (store / "v1" / "model.onnx").stat().st_mtime_ns == stamp


def test_damaged_or_half_written_versions_are_refused(store, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(store / "v1", root / "v1")
    with open(root / "v1" / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="incomplete or was changed"):
        serving.load_model("v1", root)
    (root / "v9").mkdir()
    assert serving.versions(root) == []
    with pytest.raises(ValueError, match="no model version 'v3'"):
        serving.load_model("v3", root)


def test_save_model_checks_its_arguments(store, tmp_path):
    onnx = store / "v1" / "model.onnx"
    meta = json.loads((store / "v1" / "meta.json").read_text())
    with pytest.raises(FileExistsError):
        serving.save_model("v1", onnx, meta, store)
    with pytest.raises(ValueError, match="classes"):
        serving.save_model("v3", onnx, {**meta, "classes": ["a"]}, tmp_path)
    with pytest.raises(ValueError, match="input_shape"):
        serving.save_model("v3", onnx, {**meta, "input_shape": [1, 8]}, tmp_path)
    with pytest.raises(ValueError, match="input"):  # the file's input is 1x8x8, not 1x16x16
        serving.save_model("v3", onnx, {**meta, "input_shape": [1, 16, 16]}, tmp_path)
    with pytest.raises(ValueError, match="version"):
        serving.save_model("../v3", onnx, meta, tmp_path)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot load"):
        serving.save_model("v3", tmp_path / "junk.onnx", meta, tmp_path)
    assert not (tmp_path / "v3").exists() and not list(tmp_path.glob(".tmp-*"))


def test_serving_needs_no_torch(store):
    """What the service's image runs: lablib and the app with torch (and the rest of the lab
    stack) impossible to import."""
    code = f"""
import sys
for name in ("torch", "onnx", "onnxscript", "sklearn", "fastapi", "matplotlib", "pandas", "tqdm", "transformers"):
    sys.modules[name] = None  # import name -> ImportError
from starlette.testclient import TestClient
from lablib.deploy import serving
app = serving.from_env({{"SERVING_MODELS": {str(store)!r}, "SERVING_WEIGHTS": "v1=1,v2=1"}})
r = TestClient(app).post("/api/v1/classify", json={{"pixels": [[0.5] * 8] * 8, "top_k": 2}})
print(r.status_code, sorted(app.state.service.models), "torch" in sys.modules and sys.modules["torch"] is not None)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["200", "['v1',", "'v2']", "False"]


# --- the real server -------------------------------------------------------------------------------


def listening(pid: int) -> set[str]:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return {c.laddr.ip for p in procs for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


def raw_chunked(port: int, chunks: int, size: int) -> int:
    """POST a chunked body straight over a socket (no Content-Length); the answer's status."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"POST {CLASSIFY} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n".encode())
        try:
            for _ in range(chunks):
                s.sendall(f"{size:x}\r\n".encode() + b" " * size + b"\r\n")
            s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the whole body was sent
        return int(s.recv(4096).split(b" ", 2)[1])


def test_serve_runs_uvicorn_on_loopback_and_stops_it(store, digits):
    payloads = [{"pixels": x.tolist(), "top_k": 3, "user_id": f"u{i}"} for i, x in enumerate(digits[0][:16])]
    with serving.serve(models=store, weights={"v1": 0.5, "v2": 0.5}, timeout_s=90) as server:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.url) and server.alive()
        assert listening(server.pid) == {"127.0.0.1"}
        health = serving.load(server.url, None, path="/health", n=3, keep_bodies=True)
        assert health.statuses == [200] * 3 and json.loads(health.bodies[0])["stable"] == "v1"
        run = serving.load(server.url, payloads, concurrency=4, n=40, keep_bodies=True)
        assert run.statuses == [200] * 40 and not run.errors and len(run.latencies_s) == 40
        assert {json.loads(b)["version"] for b in run.bodies} == {"v1", "v2"}
        summary = run.summary()
        assert summary["ok"] == 40 and 0 < summary["p50_ms"] <= summary["p99_ms"] and summary["throughput_rps"] > 0
        big = serving.load(server.url, [b"{" + b" " * (2 << 20) + b"}"], n=2)
        assert big.statuses == [413, 413]
        assert raw_chunked(server.port, chunks=40, size=64 * 1024) == 413
        pid, log = server.pid, server.log_path
    assert not server.alive() and not log.exists()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_serve_checks_its_arguments_before_starting(store):
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        with pytest.raises(ValueError, match="not a loopback"):
            serving.serve(host=host, models=store)
    with pytest.raises(ValueError, match="port"):
        serving.serve(port=70000, models=store)
    with pytest.raises(ValueError, match="framework"):
        serving.serve(framework="flask", models=store)
    with pytest.raises(ValueError, match="app"):
        serving.serve(app="no_colon", models=store)
    assert serving.is_loopback("127.0.0.2") and serving.is_loopback("::1") and not serving.is_loopback("10.0.0.1")


def test_load_generator_checks_its_arguments():
    with pytest.raises(ValueError, match="loopback"):
        serving.load("http://10.1.2.3:80", None, path="/health", n=1)
    with pytest.raises(ValueError, match="must end"):
        serving.load("http://127.0.0.1:9", None, path="/health")
    with pytest.raises(ValueError, match="concurrency"):
        serving.load("http://127.0.0.1:9", None, path="/health", n=1, concurrency=0)
    with pytest.raises(TypeError, match="payloads"):
        serving.load("http://127.0.0.1:9", {"pixels": []}, n=1)
    with pytest.raises(ValueError, match="url"):
        serving.load("https://127.0.0.1:9", None, n=1)


def test_load_generator_counts_refused_connections_as_failures():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = serving.load(f"http://127.0.0.1:{port}", None, path="/health", n=3, timeout_s=2)
    assert run.statuses == [0, 0, 0] and len(run.errors) == 3 and run.summary()["errors"] == 3


def test_percentile_matches_numpy():
    values = list(np.random.default_rng(1).exponential(size=101))
    for q in (0, 50, 90, 99, 100):
        assert serving.percentile(values, q) == pytest.approx(np.percentile(values, q))
    assert np.isnan(serving.percentile([], 50))


# --- the app module, make serve, Docker ------------------------------------------------------------


def test_lab_app_module_serves_the_store(store, monkeypatch):
    monkeypatch.setenv("SERVING_MODELS", str(store))
    monkeypatch.setenv("SERVING_WEIGHTS", "v2")
    monkeypatch.syspath_prepend(str(ROOT / "labs" / "16_serving"))
    sys.modules.pop("app", None)
    import app  # labs/16_serving/app.py, as uvicorn imports it

    try:
        assert TestClient(app.app).get("/health").json()["weights"] == {"v2": 1.0}
    finally:
        sys.modules.pop("app", None)


def test_make_serve_starts_the_app_on_loopback():
    make = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^serve: setup\n((?:\t.*\n)+)", make, re.M).group(1)
    assert "app:app --app-dir labs/16_serving" in recipe and "--host 127.0.0.1" in recipe and "--port $(PORT)" in recipe
    assert re.search(r"^PORT \?= 8000$", make, re.M)
    assert "hadolint docker/serving.Dockerfile" in make


def test_from_env_refuses_an_empty_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model"):
        app_module.from_env({"SERVING_MODELS": str(tmp_path)})
    with pytest.raises(ValueError, match="version=number"):
        app_module.parse_weights("v1=a")


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith(("#", "-")):
            name, _, version = line.partition("==")
            found[name.split("[")[0].lower()] = version
    return found


def test_serving_image_is_small_non_root_and_pinned_like_the_lab():
    text = (ROOT / "docker" / "serving.Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.10-slim$", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "pip install -r requirements/serving.txt" in text and "HEALTHCHECK" in text and "/health" in text
    assert "COPY data/serving/models" in text and "EXPOSE 8000" in text
    serving_pins, cpu = pins(ROOT / "requirements" / "serving.txt"), pins(ROOT / "requirements" / "cpu.txt")
    assert "torch" not in serving_pins and "fastapi" not in serving_pins
    assert {n: cpu.get(n) for n in serving_pins} == serving_pins  # the same versions as the lab's stack
    ignore = (ROOT / "docker" / "serving.Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[1] == "*" and "!data/serving/models/" in ignore and "!lablib/" in ignore


def test_compose_file_runs_three_replicas_with_a_rolling_update():
    path = ROOT / "docker" / "docker-compose.yml"
    spec = yaml.safe_load(path.read_text())
    (service,) = spec["services"].values()
    deploy = service["deploy"]
    assert deploy["replicas"] == 3
    assert deploy["update_config"]["parallelism"] == 1 and deploy["update_config"]["order"] == "start-first"
    assert "/health" in " ".join(service["healthcheck"]["test"])
    assert service["ports"] and all(str(p).startswith("127.0.0.1:") for p in service["ports"])
    assert service["build"]["dockerfile"] == "docker/serving.Dockerfile" and service["build"]["context"] == ".."
    assert str(service.get("user", "")).split(":")[0] not in ("", "root", "0")
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        done = subprocess.run(["docker", "compose", "-f", str(path), "config", "--quiet"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
