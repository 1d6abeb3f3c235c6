"""A model service: the classify API on Starlette/uvicorn over ONNX Runtime, with a model store,
routing between versions (A/B, canary, automatic rollback), a runner and a load generator.

  store    models_dir, save_model, versions, load_model -> Model, default_model, Faulty
  inputs   RequestError, from_base64, decode_image, pixels_array, softmax, top_k
  app      make_app(models, ...), Service, BodyLimit, from_env (for uvicorn --factory)
  routing  Router (sticky by user id), bucket, Canary (5 -> 25 -> 100 %), RollbackGuard
  runner   serve(port=None, host="127.0.0.1", ...) -> Server (a uvicorn subprocess), is_loopback
  loadgen  load(url, payloads, concurrency=, n=|duration_s=) -> LoadResult, percentile
  batching MicroBatcher (dynamic batching), closed_loop (clients in process, no HTTP), asgi_post
  robustness  corrupt(x, kind, severity), accuracy, curves, score
  gate     measure(models, x, y), Rules, decide(current, candidate) -> Decision (a release gate)

Serving needs no torch (the image runs ONNX Runtime alone); only default_model, which trains, does.
"""

from lablib.deploy.serving import gate, robustness
from lablib.deploy.serving.app import MAX_BODY, BodyLimit, Service, from_env, make_app
from lablib.deploy.serving.batching import MicroBatcher, asgi_post, closed_loop, run_closed_loop
from lablib.deploy.serving.inputs import (
    RequestError,
    decode_image,
    from_base64,
    pixels_array,
    respond,
    softmax,
    top_k,
)
from lablib.deploy.serving.loadgen import LoadResult, load, percentile, run_load
from lablib.deploy.serving.routing import Canary, RollbackGuard, Router, breaches, bucket
from lablib.deploy.serving.runner import Server, is_loopback, serve
from lablib.deploy.serving.store import (
    Faulty,
    Model,
    default_model,
    load_model,
    models_dir,
    save_model,
    versions,
)

__all__ = [
    "MAX_BODY", "BodyLimit", "Canary", "Faulty", "LoadResult", "MicroBatcher", "Model", "RequestError",
    "RollbackGuard", "Router", "Server", "Service", "asgi_post", "breaches", "bucket", "closed_loop", "decode_image",
    "default_model", "from_base64", "from_env", "gate", "is_loopback", "load", "load_model", "make_app",
    "models_dir", "percentile", "pixels_array", "respond", "robustness", "run_closed_loop", "run_load",
    "save_model", "serve", "softmax", "top_k", "versions",
]
