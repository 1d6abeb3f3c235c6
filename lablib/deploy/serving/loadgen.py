"""A bounded closed-loop load generator: raw HTTP/1.1 over keep-alive connections with asyncio.

    result = load(server.url, payloads, concurrency=8, n=2000)
    result.summary()   # {"n", "concurrency", "ok", "errors", "p50_ms", "p99_ms", "throughput_rps", ...}

Closed loop: `concurrency` clients, each sending its next request as soon as the previous answer
is in, until `n` requests have been sent or `duration_s` has passed. So the load adapts to the
server: latency and throughput are measured together, and nothing queues without bound.

Why not httpx or requests: on loopback the client itself was the bottleneck (an httpx-based one
topped out near 300 requests/s here); requests written once as bytes and answers read with a
minimal parser cost a few microseconds each. Why a thread: a notebook already runs an asyncio
event loop, and asyncio.run() cannot start a second one in the same thread.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from lablib.core.validate import integer, real
from lablib.deploy.serving.runner import is_loopback

MAX_REQUESTS = 1_000_000
MAX_DURATION_S = 600.0
MAX_CONCURRENCY = 1024


@dataclass
class LoadResult:
    """What a load run measured, one entry per request in the order they finished:
    latencies_s, statuses (0: no answer: connection error or time-out), and, with
    keep_bodies=True, the answers' bodies. wall_s: the run's duration."""

    concurrency: int
    latencies_s: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    bodies: list[bytes] | None = None
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def n(self) -> int:
        return len(self.statuses)

    @property
    def throughput_rps(self) -> float:
        """Answered requests per second of the run."""
        return self.n / self.wall_s if self.wall_s > 0 else math.nan

    def percentile_ms(self, q: float) -> float:
        return percentile(self.latencies_s, q) * 1e3

    def summary(self) -> dict:
        """The run in one row: counts, p50/p90/p99 latency in ms, throughput."""
        ok = sum(1 for s in self.statuses if 200 <= s < 300)
        return {"concurrency": self.concurrency, "n": self.n, "ok": ok, "errors": self.n - ok,
                "p50_ms": self.percentile_ms(50), "p90_ms": self.percentile_ms(90),
                "p99_ms": self.percentile_ms(99), "throughput_rps": self.throughput_rps,
                "wall_s": self.wall_s}


def percentile(values, q: float) -> float:
    """The q-th percentile (0-100) of `values`, interpolated between neighbours (NumPy's
    default); NaN for no values."""
    q = real("q", q, 0, 100)
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"values must be a list of numbers, got {type(values).__name__}")
    xs = sorted(real("values[i]", v, 0) for v in values)
    if not xs:
        return math.nan
    pos = q / 100 * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _target(url: str, allow_remote: bool) -> tuple[str, int, str]:
    if not isinstance(url, str):
        raise TypeError(f"url must be a str such as 'http://127.0.0.1:8000', got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        raise ValueError(f"url must be http://host:port, got {url!r}")
    if not is_loopback(parts.hostname) and not allow_remote:
        raise ValueError(f"url {url!r} is not on loopback: a load test hits a server hard; pass "
                         "allow_remote=True for a server you run elsewhere")
    return parts.hostname, parts.port, parts.netloc


def _requests(payloads, path: str, netloc: str, content_type: str) -> list[bytes]:
    """Each request written out once, as the bytes that go on the wire."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"path must start with '/', got {path!r}")
    if payloads is None:
        return [f"GET {path} HTTP/1.1\r\nHost: {netloc}\r\n\r\n".encode()]
    if isinstance(payloads, (dict, bytes)) or not isinstance(payloads, (list, tuple)) or not payloads:
        raise TypeError("payloads must be a non-empty list of request bodies (dicts sent as JSON, "
                        "or bytes), or None for GET requests")
    out = []
    for i, body in enumerate(payloads):
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        elif not isinstance(body, bytes):
            raise TypeError(f"payloads[{i}] must be a dict or bytes, got {type(body).__name__}")
        head = (f"POST {path} HTTP/1.1\r\nHost: {netloc}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")
        out.append(head.encode() + body)
    return out


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Read one HTTP/1.1 response: (status, body, whether the connection stays open)."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split(b" ", 2)[1])
    length, chunked, close = None, False, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value:
            chunked = True
        elif name == b"connection" and value == b"close":
            close = True
    if chunked:
        parts = []
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)  # the chunk and its CRLF
            if size == 0:
                break
            parts.append(data[:-2])
        body = b"".join(parts)
    elif length is not None:
        body = await reader.readexactly(length)
    else:  # the body runs until the server closes
        body, close = await reader.read(), True
    return status, body, not close


async def run_load(url: str, payloads=None, *, concurrency: int = 1, n: int | None = None,
                   duration_s: float | None = None, path: str = "/api/v1/classify",
                   content_type: str = "application/json", timeout_s: float = 10.0,
                   keep_bodies: bool = False, allow_remote: bool = False) -> LoadResult:
    """The load run, as a coroutine (for code already inside an event loop); see load()."""
    host, port, netloc = _target(url, allow_remote)
    wire = _requests(payloads, path, netloc, content_type)
    concurrency = integer("concurrency", concurrency, 1, MAX_CONCURRENCY)
    if n is None and duration_s is None:
        raise ValueError("give n (requests) or duration_s (seconds), or both: a load run must end")
    n = MAX_REQUESTS if n is None else integer("n", n, 1, MAX_REQUESTS)
    duration_s = MAX_DURATION_S if duration_s is None else real("duration_s", duration_s, 0, MAX_DURATION_S, low_open=True)
    timeout_s = real("timeout_s", timeout_s, 0, 300, low_open=True)
    if not isinstance(keep_bodies, bool):
        raise TypeError(f"keep_bodies must be True or False, got {keep_bodies!r}")
    result = LoadResult(concurrency, bodies=[] if keep_bodies else None)
    sent = 0
    start = time.perf_counter()
    deadline = start + duration_s

    async def client() -> None:
        nonlocal sent
        reader = writer = None
        try:
            while sent < n and time.perf_counter() < deadline:
                i = sent
                sent += 1  # one event loop thread: no lock needed between clients
                t0 = time.perf_counter()
                try:
                    if writer is None:
                        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
                    writer.write(wire[i % len(wire)])
                    status, body, keep = await asyncio.wait_for(_response(reader), timeout_s)
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
                    status, body, keep = 0, b"", False
                    result.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                result.latencies_s.append(time.perf_counter() - t0)
                result.statuses.append(status)
                if keep_bodies:
                    result.bodies.append(body)
                if not keep and writer is not None:  # closed by the server (e.g. after a 413): reconnect
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - start
    return result


def load(url: str, payloads=None, *, concurrency: int = 1, n: int | None = None, duration_s: float | None = None,
         path: str = "/api/v1/classify", content_type: str = "application/json", timeout_s: float = 10.0,
         keep_bodies: bool = False, allow_remote: bool = False) -> LoadResult:
    """Send requests to the server at `url` from `concurrency` keep-alive connections at once,
    closed loop, until `n` requests or `duration_s` seconds (whichever comes first; at most
    1,000,000 requests and 600 s); return every request's latency and status.

    payloads  request bodies, cycled: dicts (sent as JSON) or bytes; None sends GET `path`
    timeout_s per request: a request not answered in time counts as status 0
    Runs in a thread of its own, so it works in a notebook, where an event loop already runs."""
    kwargs = dict(concurrency=concurrency, n=n, duration_s=duration_s, path=path, content_type=content_type,
                  timeout_s=timeout_s, keep_bodies=keep_bodies, allow_remote=allow_remote)
    return run_in_thread(lambda: run_load(url, payloads, **kwargs))


def run_in_thread(make_coro):
    """asyncio.run(make_coro()) in a thread of its own, returning its result or raising its
    exception here: a notebook's kernel already runs an event loop, where asyncio.run refuses."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["result"] = asyncio.run(make_coro())
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="lablib-asyncio", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
