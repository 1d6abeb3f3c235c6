"""The classify service as an ASGI app: Starlette (or, for comparison, FastAPI) on uvicorn.

  make_app(models, ...)   the app: POST /api/v1/classify, GET /health, GET /metrics, and with
                          admin=True GET/PUT /admin/routing; app.state.service is the Service
  Service                 the framework-free part: request fields -> version -> top-k answer;
                          holds the models, the Router and the RollbackGuard
  BodyLimit               ASGI middleware: refuses a body over max_bytes with 413, counting the
                          bytes as they arrive (chunked bodies have no Content-Length to check)
  from_env()              the app built from SERVING_* environment variables: what
                          `uvicorn --factory lablib.deploy.serving.app:from_env` serves

The request: {"image_base64": "<PNG or JPEG>", "top_k": 3} or {"pixels": [[...]], "top_k": 3},
optionally "user_id" (routes the user to the same version every time). The answer:
{"version": "v1", "predictions": [{"label": "3", "probability": 0.97}, ...]}, most probable first.
Errors answer {"error": "<code>", "detail": ...}: 400 bad JSON, bad base64 or not an image;
413 body too large; 415 not application/json; 422 a field missing, ill-typed or out of range
(top_k outside 1..classes, unknown fields); 500 the model failed.

Why Starlette by default: for a model that costs tens of microseconds, the framework is most of
the time a request takes; FastAPI adds its dependency and validation layers on top of Starlette.
framework="fastapi" serves the same handler through a FastAPI route, so the two can be measured.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lablib.core.validate import integer
from lablib.deploy.serving.inputs import (
    RequestError,
    decode_image,
    from_base64,
    pixels_array,
    top_k,
)
from lablib.deploy.serving.routing import RollbackGuard, Router
from lablib.deploy.serving.store import Model, load_model, models_dir, versions

CLASSIFY, HEALTH, METRICS, ADMIN = "/api/v1/classify", "/health", "/metrics", "/admin/routing"
ROUTES = (CLASSIFY, HEALTH, METRICS, ADMIN)
MAX_BODY = 1 << 20  # 1 MiB: a 28x28 PNG is under 1 kB; a phone photo is a few MB and is refused
FIELDS = {"image_base64", "pixels", "top_k", "user_id"}
DEFAULT_TOP_K = 3  # the article's example request asks for 3
# latency buckets from half a millisecond (a tiny model on loopback) to seconds (overload)
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
FRAMEWORKS = ("starlette", "fastapi")


class ModelFailure(RuntimeError):
    """The model raised while answering: the service's fault, a 500."""

    status, error = 500, "model_failed"

    def __init__(self, version: str, exc: BaseException):
        super().__init__(f"model version {version!r} failed: {type(exc).__name__}: {exc}")
        self.version, self.detail = version, f"model version {version!r} failed ({type(exc).__name__})"


class Service:
    """The classify logic without a web framework: checks the request's fields, picks the
    version (router), makes the input, runs the model, and reports each request to the guard."""

    def __init__(self, models: Mapping[str, Model], router: Router, guard: RollbackGuard | None = None):
        if not isinstance(models, Mapping) or not models:
            raise TypeError(f"models must be a non-empty dict {{version: Model}}, got {type(models).__name__}")
        for v, m in models.items():
            if not callable(getattr(m, "predict", None)) or not hasattr(m, "classes") or not hasattr(m, "input_shape"):
                raise TypeError(f"models[{v!r}] must be a Model (predict, classes, input_shape), got {type(m).__name__}")
        if not isinstance(router, Router):
            raise TypeError(f"router must be a Router, got {type(router).__name__}")
        missing = sorted(set(router.weights) - set(models))
        if missing:
            raise ValueError(f"the routing table (weights, stable) names version(s) {missing} that models "
                             f"lacks; models: {sorted(models)}")
        if guard is not None and not isinstance(guard, RollbackGuard):
            raise TypeError(f"guard must be a RollbackGuard or None, got {type(guard).__name__}")
        self.models, self.router, self.guard = dict(models), router, guard

    def classify(self, payload) -> dict:
        """The answer to one request's JSON `payload`; RequestError for a bad request,
        ModelFailure when the model raises."""
        if not isinstance(payload, dict):
            raise RequestError(422, "invalid_body", "the body must be a JSON object")
        unknown = sorted(set(payload) - FIELDS)
        if unknown:
            raise RequestError(422, "unknown_field", f"unknown field(s) {unknown}; the fields are {sorted(FIELDS)}")
        given = [f for f in ("image_base64", "pixels") if f in payload]
        if len(given) != 1:
            raise RequestError(422, "missing_field" if not given else "invalid_field",
                               "give exactly one of image_base64 (a PNG or JPEG) and pixels (a nested list)")
        user = payload.get("user_id")
        if user is not None and (not isinstance(user, str) or not 1 <= len(user) <= 256):
            raise RequestError(422, "invalid_field", "user_id must be a string of 1 to 256 characters")
        version = self.router.choose(user)
        model = self.models.get(version)
        if model is None:  # the table was changed at run time to a version this service never loaded
            raise ModelFailure(version, LookupError("no model is loaded for this version"))
        try:
            k = payload.get("top_k", min(DEFAULT_TOP_K, len(model.classes)))
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(model.classes):
                raise RequestError(422, "invalid_field", f"top_k must be an integer from 1 to {len(model.classes)}, got {k!r}")
            start = time.perf_counter()
            if given == ["pixels"]:
                x = pixels_array(payload["pixels"], list(model.input_shape))
            else:
                c, h, w = model.input_shape
                if c != 1:
                    raise RequestError(422, "invalid_field", f"model {version!r} takes {c} channels: send pixels")
                x = decode_image(from_base64(payload["image_base64"]), (h, w),
                                 model.meta.get("preprocessing", {}).get("invert", "auto"))[None]
        except RequestError as exc:
            exc.version = version
            raise
        try:
            probs = model.predict(x[None])[0]
        except Exception as exc:
            self._observe(version, time.perf_counter() - start, ok=False)
            raise ModelFailure(version, exc) from exc
        self._observe(version, time.perf_counter() - start, ok=True)
        return {"version": version, "predictions": top_k(probs, model.classes, k)}

    def _observe(self, version: str, seconds: float, ok: bool) -> None:
        if self.guard is not None:
            self.guard.observe(version, seconds, ok)

    def describe(self) -> dict:
        """The versions, their accuracy, and the routing table: what /health reports."""
        return {"versions": {v: {"accuracy": m.meta.get("accuracy"), "classes": len(m.classes)}
                             for v, m in self.models.items()},
                "weights": self.router.weights, "stable": self.router.stable}


# --- metrics ---------------------------------------------------------------------------------------


class Metrics:
    """Prometheus metrics in a registry of this app's own (two apps in one process, as in a
    test or a notebook, would otherwise share and double-count): requests by route, status and
    model version, and the latency of classify requests per version."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("serving_requests", "HTTP requests answered", ["route", "status", "version"],
                                registry=self.registry)
        self.latency = Histogram("serving_request_duration_seconds", "Time to answer a classify request",
                                 ["version"], buckets=BUCKETS, registry=self.registry)


class Observe:
    """ASGI middleware, outermost: times each request and counts it by route, status and the
    model version the handler left in the request's state."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]
        state = scope.setdefault("state", {})  # Request.state reads and writes this same dict

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope["path"] if scope["path"] in ROUTES else "other"
            version = state.get("model_version") or "none"
            self.metrics.requests.labels(route, str(status[0]), version).inc()
            if route == CLASSIFY and version != "none":
                self.metrics.latency.labels(version).observe(time.perf_counter() - start)


# --- the body limit --------------------------------------------------------------------------------


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"the body is over the limit of {limit:,} bytes")


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` gets 413. A declared Content-Length over the
    limit is refused before a byte is read; otherwise the bytes are counted as they arrive, and
    reading stops at the first chunk past the limit (a chunked upload has no length to check,
    and uvicorn itself sets no limit)."""

    def __init__(self, app, max_bytes: int = MAX_BODY):
        self.app, self.max_bytes = app, integer("max_bytes", max_bytes, 1)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await _send_error(send, 400, "invalid_header", "Content-Length must be a number")
            if int(declared) > self.max_bytes:
                return await _send_error(send, 413, "payload_too_large", BodyTooLarge(self.max_bytes).detail)
        received, started = 0, [False]

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)  # the handler's exception handler answers 413
            return message

        async def sending(message):
            if message["type"] == "http.response.start":
                started[0] = True
            await send(message)

        try:
            await self.app(scope, limited, sending)
        except BodyTooLarge as exc:  # raised where no exception handler sits: answer here
            if started[0]:
                raise
            await _send_error(send, 413, "payload_too_large", exc.detail)


async def _send_error(send, status: int, error: str, detail) -> None:
    response = JSONResponse({"error": error, "detail": detail}, status_code=status)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


# --- handlers --------------------------------------------------------------------------------------

ERRORS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
          415: "unsupported_media_type", 422: "unprocessable"}


def _error(request: Request, exc: Exception) -> JSONResponse:
    if getattr(exc, "version", None):
        request.state.model_version = exc.version
    if isinstance(exc, (RequestError, ModelFailure)):
        return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status)
    if isinstance(exc, HTTPException):
        return JSONResponse({"error": ERRORS.get(exc.status_code, "http_error"), "detail": exc.detail},
                            status_code=exc.status_code, headers=exc.headers)
    return JSONResponse({"error": "internal", "detail": type(exc).__name__}, status_code=500)


def _classify_handler(offload: bool):
    async def classify(request: Request) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise RequestError(415, "unsupported_media_type",
                               f"send the request as application/json, not {ctype or 'no content type'}")
        body = await request.body()
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
            raise RequestError(400, "invalid_json", f"the body is not valid JSON: {exc}"[:300]) from None
        service: Service = request.app.state.service
        # offload: run in a worker thread, so a slow model does not stall the event loop; for a
        # model of microseconds the hand-off costs more than it frees
        answer = await run_in_threadpool(service.classify, payload) if offload else service.classify(payload)
        request.state.model_version = answer["version"]
        return JSONResponse(answer)

    return classify


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok", **request.app.state.service.describe()})


async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def routing(request: Request) -> Response:
    """GET: the routing table, its history and the guard's windows. PUT {"weights": {...}} |
    {"promote": "v2"} | {"rollback": "why"}: change it at run time."""
    service: Service = request.app.state.service
    if request.method == "PUT":
        try:
            change = json.loads(await request.body())
        except (ValueError, RecursionError):
            raise RequestError(400, "invalid_json", "the body is not valid JSON") from None
        if not isinstance(change, dict) or len(change) != 1 or not set(change) <= {"weights", "promote", "rollback"}:
            raise RequestError(422, "invalid_body", 'send one of {"weights": {...}}, {"promote": "v2"}, {"rollback": "why"}')
        (what, value), = change.items()
        try:
            if what == "weights":
                missing = sorted(set(value) - set(service.models)) if isinstance(value, dict) else []
                if missing:
                    raise ValueError(f"no model for version(s) {missing}")
                service.router.set_weights(value, reason="changed through /admin/routing")
            elif what == "promote":
                if value not in service.models:
                    raise ValueError(f"no model for version {value!r}")
                service.router.promote(value, reason="promoted through /admin/routing")
            else:
                service.router.rollback(value)
        except (TypeError, ValueError) as exc:
            raise RequestError(422, "invalid_field", str(exc)) from None
    guard = service.guard.stats() if service.guard is not None else None
    return JSONResponse({"weights": service.router.weights, "stable": service.router.stable,
                         "events": service.router.events[-50:], "windows": guard})


# --- the app ---------------------------------------------------------------------------------------


def make_app(models, *, weights: dict | None = None, stable: str | None = None, router: Router | None = None,
             guard: RollbackGuard | bool = True, framework: str = "starlette", max_body: int = MAX_BODY,
             admin: bool = False, offload: bool = False):
    """The service as an ASGI app (app.state.service is its Service).

    models     a Model, a list of them, or {version: Model}
    weights    the routing table {version: weight}; default: everything to `stable`
    stable     the version rollbacks return to; default: the heaviest in weights, else the first model
    router     a Router of your own, instead of weights/stable
    guard      True: a RollbackGuard with its default thresholds; False: none; or your own
    framework  "starlette" or "fastapi" (the same handler behind a FastAPI route)
    max_body   bytes a request body may have (413 above)
    admin      serve GET/PUT /admin/routing (off by default: it changes the routing unauthenticated)
    offload    run the model in a worker thread (pays for a slow model, costs for a tiny one)
    """
    models = _models(models)
    if router is None:
        first = stable if stable is not None else next(iter(models))
        router = Router(weights if weights is not None else {first: 1.0}, stable=stable)
    elif weights is not None or stable is not None:
        raise ValueError("pass either router or weights/stable, not both")
    if guard is True:
        guard = RollbackGuard(router)
    elif guard is False:
        guard = None
    elif not isinstance(guard, RollbackGuard) or guard.router is not router:
        raise ValueError("guard must be True, False, or a RollbackGuard watching this app's router")
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")
    integer("max_body", max_body, 1)
    for name, flag in (("admin", admin), ("offload", offload)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    service = Service(models, router, guard)
    telemetry = Metrics()
    middleware = [Middleware(Observe, metrics=telemetry), Middleware(BodyLimit, max_bytes=max_body)]
    handlers = {RequestError: _error, ModelFailure: _error, HTTPException: _error, Exception: _error}
    classify = _classify_handler(offload)
    plain = [Route(HEALTH, health, methods=["GET"]), Route(METRICS, metrics, methods=["GET"])]
    if admin:
        plain.append(Route(ADMIN, routing, methods=["GET", "PUT"]))
    if framework == "starlette":
        app = Starlette(routes=[Route(CLASSIFY, classify, methods=["POST"]), *plain],
                        middleware=middleware, exception_handlers=handlers)
    else:
        from fastapi import FastAPI  # only this variant needs it

        app = FastAPI(routes=plain, middleware=middleware, exception_handlers=handlers,
                      openapi_url=None, docs_url=None, redoc_url=None)
        app.add_api_route(CLASSIFY, classify, methods=["POST"])  # a FastAPI route, same handler
    app.state.service, app.state.metrics = service, telemetry
    return app


def _models(models) -> dict:
    if isinstance(models, Model) or (hasattr(models, "predict") and hasattr(models, "version")):
        models = [models]
    if isinstance(models, (list, tuple)):
        if not models:
            raise ValueError("models is empty: give at least one Model")
        out = {}
        for i, m in enumerate(models):
            if not hasattr(m, "version"):
                raise TypeError(f"models[{i}] must be a Model, got {type(m).__name__}")
            if m.version in out:
                raise ValueError(f"two models have the version {m.version!r}")
            out[m.version] = m
        return out
    if isinstance(models, Mapping):
        if not models:
            raise ValueError("models is empty: give at least one Model")
        return dict(models)
    raise TypeError(f"models must be a Model, a list of Models or a dict {{version: Model}}, got {type(models).__name__}")


# --- built from the environment (what uvicorn and the Docker image serve) --------------------------


def parse_weights(text: str) -> dict[str, float]:
    """'v1=0.9,v2=0.1' -> {'v1': 0.9, 'v2': 0.1}; 'v1' -> {'v1': 1.0}."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"weights must look like 'v1=0.9,v2=0.1', got {text!r}")
    out = {}
    for part in text.split(","):
        name, _, weight = part.strip().partition("=")
        try:
            out[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"weights: {part.strip()!r} is not version=number (in {text!r})") from None
    return out


def from_env(environ: Mapping[str, str] | None = None, train_if_empty: bool = False):
    """The app configured by environment variables (for uvicorn --factory, serve() and Docker):

    SERVING_MODELS     the model store (default data/serving/models)
    SERVING_WEIGHTS    'v1=0.9,v2=0.1' (default: the newest stored version gets everything)
    SERVING_STABLE     the stable version (default: the heaviest)
    SERVING_FRAMEWORK  starlette | fastapi;  SERVING_MAX_BODY bytes;  SERVING_THREADS ORT threads
    SERVING_ADMIN      1 serves /admin/routing;  SERVING_OFFLOAD 1 runs the model in a thread

    train_if_empty: with no model stored, train and export the default one first (needs torch)."""
    env = os.environ if environ is None else environ
    root = env.get("SERVING_MODELS") or models_dir()
    if train_if_empty and not versions(root):
        from lablib.deploy.serving.store import default_model

        print(f"no model in {root}: training and exporting the default one ...", flush=True)
        default_model(root=root)
    stored = versions(root)
    if not stored:
        raise FileNotFoundError(f"no model in {str(root)!r}: export one first (make serve does, or "
                           "lablib.deploy.serving.default_model())")
    try:
        weights = parse_weights(env["SERVING_WEIGHTS"]) if env.get("SERVING_WEIGHTS") else {stored[-1]: 1.0}
    except ValueError as exc:
        raise ValueError(f"SERVING_WEIGHTS: {exc}") from None
    missing = sorted(set(weights) - set(stored))
    if missing:
        raise ValueError(f"SERVING_WEIGHTS names version(s) {missing} not in {str(root)!r}; stored: {stored}")
    framework = env.get("SERVING_FRAMEWORK") or "starlette"
    if framework not in FRAMEWORKS:
        raise ValueError(f"SERVING_FRAMEWORK must be one of {FRAMEWORKS}, got {framework!r}")
    flags = {}
    for name in ("admin", "offload"):
        flag = env.get(f"SERVING_{name.upper()}") or "0"
        if flag not in ("0", "1"):
            raise ValueError(f"SERVING_{name.upper()} must be 0 or 1, got {flag!r}")
        flags[name] = flag == "1"
    threads = _env_int(env, "SERVING_THREADS", 1, 256)
    stable = env.get("SERVING_STABLE") or None
    if stable is not None and stable not in weights:
        raise ValueError(f"SERVING_STABLE={stable!r} is not in SERVING_WEIGHTS {sorted(weights)}")
    return make_app({v: load_model(v, root, threads) for v in weights}, weights=weights, stable=stable,
                    framework=framework, max_body=_env_int(env, "SERVING_MAX_BODY", MAX_BODY, 2**40), **flags)


def _env_int(env, name: str, default: int, high: int) -> int:
    text = env.get(name) or str(default)
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= high:
        raise ValueError(f"{name} must be a whole number from 1 to {high}, got {text!r}")
    return int(text)
