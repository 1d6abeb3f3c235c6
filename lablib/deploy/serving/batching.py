"""Dynamic (micro-)batching: requests that arrive close together share one model call.

  MicroBatcher(predict, max_batch=32, max_wait_s=0.0)
      await batcher.submit(x)  -> the model's output row for the one input x (C, H, W)
      batcher.batch_sizes      the size of every batch it ran, in order
  closed_loop(call, inputs, concurrency=8, n=1000) -> LoadResult
      `concurrency` clients in one event loop, each awaiting call(input) and sending the next as
      soon as it has the answer: the server's side of a load test, without HTTP
  await asgi_post(app, body) -> (status, body)
      one POST straight into an ASGI app (no socket, no server): what the framework costs

How it batches: the first request to arrive starts a batch; the batcher then waits up to
`max_wait_s` for more (or until `max_batch` are in), stacks them, calls `predict` once and hands
every caller its row. With max_wait_s=0 it never waits: it takes what has queued up while the
previous batch ran, so a lone request pays nothing extra. A wait window buys bigger batches at
the price of that wait on every request that arrives when the service is quiet.

It pays when one call on a batch of B costs much less than B calls on one input (a model whose
cost is reading its weights, or a GPU), and when requests arrive concurrently; it does not for a
model whose call costs less than the queueing around it.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import Callable

import numpy as np

from lablib.core.validate import integer, real
from lablib.deploy.serving.loadgen import MAX_CONCURRENCY, MAX_REQUESTS, LoadResult, run_in_thread


class MicroBatcher:
    """Collects single inputs into batches for `predict` (a function of a batch (B, ...) that
    returns one output row per input). Use it inside one asyncio event loop.

    max_batch   the most inputs one call gets
    max_wait_s  how long the first input of a batch waits for company (0: never)
    offload     run predict in a worker thread, so the event loop keeps accepting requests while
                a batch runs (pays for a slow model; costs a thread hand-off per batch)
    """

    def __init__(self, predict: Callable, max_batch: int = 32, max_wait_s: float = 0.0, offload: bool = False):
        if not callable(predict):
            raise TypeError(f"predict must be a function of a batch (e.g. model.predict), got {type(predict).__name__}")
        self.predict = predict
        self.max_batch = integer("max_batch", max_batch, 1, 65536)
        self.max_wait_s = real("max_wait_s", max_wait_s, 0, 10)
        if not isinstance(offload, bool):
            raise TypeError(f"offload must be True or False, got {offload!r}")
        self.offload = offload
        self.batch_sizes: list[int] = []
        self._pending: list[tuple[np.ndarray, asyncio.Future]] = []
        self._loop = self._worker = self._wake = self._full = None

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # the first call, or a new event loop (a rerun notebook cell)
            self._loop, self._pending = loop, []
            self._wake, self._full = asyncio.Event(), asyncio.Event()
            self._worker = loop.create_task(self._run())

    async def submit(self, x) -> np.ndarray:
        """The model's output for the one input `x` (no batch dimension), once its batch has run.
        An error of predict is raised in every caller of that batch."""
        if isinstance(x, (str, bytes)) or not hasattr(x, "__len__"):
            raise TypeError(f"x must be one input as an array (no batch dimension), got {type(x).__name__}")
        self._start()
        future = self._loop.create_future()
        self._pending.append((np.asarray(x), future))
        self._wake.set()
        if len(self._pending) >= self.max_batch:
            self._full.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if len(self._pending) < self.max_batch and self.max_wait_s > 0:
                try:
                    await asyncio.wait_for(self._full.wait(), self.max_wait_s)
                except asyncio.TimeoutError:
                    pass  # the window closed: run what has come
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            if len(self._pending) < self.max_batch:
                self._full.clear()
            if not self._pending:
                self._wake.clear()
            live = [(x, f) for x, f in batch if not f.cancelled()]
            if not live:
                continue
            self.batch_sizes.append(len(live))
            try:
                stacked = np.stack([x for x, _ in live])
                out = await asyncio.to_thread(self.predict, stacked) if self.offload else self.predict(stacked)
                out = np.asarray(out)
                if len(out) != len(live):
                    raise ValueError(f"predict returned {len(out)} rows for a batch of {len(live)}")
            except Exception as exc:  # every caller of this batch gets the error; the batcher goes on
                for _, f in live:
                    if not f.done():
                        f.set_exception(exc)
                continue
            for row, (_, f) in zip(out, live, strict=True):
                if not f.done():
                    f.set_result(row)

    def close(self) -> None:
        """Stop the worker task (pending callers are cancelled)."""
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
        for _, f in self._pending:
            f.cancel()
        self._pending = []

    def __repr__(self) -> str:
        mean = sum(self.batch_sizes) / len(self.batch_sizes) if self.batch_sizes else math.nan
        return (f"MicroBatcher(max_batch={self.max_batch}, max_wait_s={self.max_wait_s:g}, "
                f"{len(self.batch_sizes)} batches, mean size {mean:.1f})")


async def run_closed_loop(call: Callable, inputs, *, concurrency: int = 1, n: int = 100) -> LoadResult:
    """The closed-loop run as a coroutine (see closed_loop)."""
    if not callable(call):
        raise TypeError(f"call must be an async function of one input, got {type(call).__name__}")
    if isinstance(inputs, (str, bytes, dict)) or not hasattr(inputs, "__len__") or len(inputs) == 0:
        raise TypeError("inputs must be a non-empty list of inputs, cycled through by the clients")
    concurrency = integer("concurrency", concurrency, 1, MAX_CONCURRENCY)
    n = integer("n", n, 1, MAX_REQUESTS)
    result = LoadResult(concurrency)
    sent = 0
    start = time.perf_counter()

    async def client() -> None:
        nonlocal sent
        ready = time.perf_counter()
        while sent < n:
            i = sent
            sent += 1  # one event loop: no lock needed
            t0 = ready  # the request is due the moment the previous answer came in
            pending = call(inputs[i % len(inputs)])
            if not inspect.isawaitable(pending):
                raise TypeError(f"call must be an async function (returning an awaitable), got {type(pending).__name__} back")
            try:
                await pending
                status = 200
            except Exception as exc:
                status = 500
                result.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            ready = time.perf_counter()
            result.latencies_s.append(ready - t0)
            result.statuses.append(status)
            # let the other clients go first: a handler that never waits would otherwise serve
            # this client alone, and the queue a busy server builds up would never show
            await asyncio.sleep(0)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - start
    return result


def closed_loop(call: Callable, inputs, *, concurrency: int = 1, n: int = 100,
                setup: Callable | None = None) -> LoadResult:
    """`concurrency` clients in one fresh event loop, each awaiting `call(input)` (an async
    function) and sending its next request the moment it has the answer, `n` requests in all
    (inputs cycled); every request's latency, status 200 (or 500 when call raised) and the
    throughput, as a LoadResult like load()'s. No HTTP: what the service itself costs.

    A request's latency runs from the moment its client had the previous answer (it sends the
    next one at once) to its own answer, so the time it spends waiting for the event loop, as a
    request queued in a busy server would, is part of it. The clients take turns after every
    request, as a server's connections do.

    setup: a function called inside the loop first, returning the `call` to use (for objects
    that belong to one event loop, such as a MicroBatcher); then `call` may be None.
    Runs in a thread of its own, so it works in a notebook, where an event loop already runs."""
    if setup is not None and not callable(setup):
        raise TypeError(f"setup must be a function returning the call, got {type(setup).__name__}")

    async def main() -> LoadResult:
        fn = setup() if setup is not None else call
        return await run_closed_loop(fn, inputs, concurrency=concurrency, n=n)

    return run_in_thread(main)


async def asgi_post(app, body: bytes, path: str = "/api/v1/classify",
                    content_type: str = "application/json") -> tuple[int, bytes]:
    """POST `body` to the ASGI `app` in this process, as uvicorn would hand it over (one HTTP/1.1
    request, the whole body in one message), and return (status, response body). No socket and
    no server: timing it measures the app and its framework alone."""
    if not callable(app):
        raise TypeError(f"app must be an ASGI application, got {type(app).__name__}")
    if not isinstance(body, bytes):
        raise TypeError(f"body must be bytes (e.g. json.dumps(payload).encode()), got {type(body).__name__}")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"path must start with '/', got {path!r}")
    if not isinstance(content_type, str):
        raise TypeError(f"content_type must be a str, got {type(content_type).__name__}")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", content_type.encode()),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)}
    delivered = False
    status, chunks = [0], []

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # nothing more will come; a well-behaved app never asks
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            status[0] = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status[0], b"".join(chunks)
