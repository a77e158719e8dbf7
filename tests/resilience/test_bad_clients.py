"""Resilience case on clients that misbehave at NGINX: slow, oversized and malformed
requests while `/health` keeps its latency (11).

Run by `molecule test -s resilience` on a converged target; knobs, helpers and the report
are in reslib.py.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

from reslib import (
    Case,
    Target,
    get,
    pct,
)


def raw_http(port: int, payload: bytes, wait: float = 15.0, drip: float = 0.0) -> str:
    """Send `payload` (one byte per `drip` s when > 0); the status code, 'closed' or 'timeout'."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        deadline = time.monotonic() + wait
        try:
            if drip:
                for byte in payload:
                    s.sendall(bytes([byte]))
                    time.sleep(drip)
                    if time.monotonic() > deadline:
                        return "timeout"
            else:
                s.sendall(payload)
            data = s.recv(4096)
        except TimeoutError:
            return "timeout"
        except OSError:
            return "closed"
    if not data:
        return "closed"
    return data.split(b"\r\n", 1)[0].split(b" ")[1].decode()


BAD_REQUESTS: dict[str, bytes] = {
    "oversized header (16 KiB)": b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 16384 + b"\r\n\r\n",
    "oversized URI (64 KiB)": b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "oversized body (2 MB declared)": b"POST / HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: 2000000\r\n\r\n" + b"a" * 1024,
    "unknown method": b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n",
    "invalid method": b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
    "TRACE": b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n",
    "path traversal": b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    "encoded traversal": b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    "garbage request line": b"GARBAGE\r\n\r\n",
    "HTTP/1.1 without Host": b"GET / HTTP/1.1\r\n\r\n",
    "invalid header line": b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    "bad chunked body": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
}


def health_latencies(url: str, n: int = 20) -> list[float]:
    out = []
    for _ in range(n):
        r = get(url + "/health")
        assert r.status == 200
        out.append(r.latency * 1000)
        time.sleep(0.2)
    return out


def test_11_bad_http(case: Case, target: Target, url: str) -> None:
    """11. Bad HTTP at NGINX."""
    port = int(urlparse(url).port or 80)
    baseline = health_latencies(url)
    slow_results: list[str] = []
    slow_payload = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40
    body_payload = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"a" * 5

    def slow(payload: bytes, drip: float) -> None:
        slow_results.append(raw_http(port, payload, wait=20, drip=drip))

    threads = [threading.Thread(target=slow, args=(slow_payload, 0.5)) for _ in range(10)]
    threads += [threading.Thread(target=slow, args=(body_payload, 0.0)) for _ in range(10)]
    for th in threads:
        th.start()
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = dict(
            zip(
                BAD_REQUESTS,
                pool.map(lambda p: raw_http(port, p), BAD_REQUESTS.values()),
            )
        )
    during = health_latencies(url)
    for th in threads:
        th.join(timeout=30)
    after = get(url + "/health")
    accepted = {a for a in answers.values() if not (a.startswith("4") or a in ("closed", "timeout"))}
    slow_ok = all(r.startswith("4") or r in ("closed", "timeout") for r in slow_results)
    case.done = (
        f"{len(BAD_REQUESTS)} bad requests ({', '.join(BAD_REQUESTS)}) and 20 slow clients "
        "(10 dripping headers, 10 stalled bodies)"
    )
    case.expected = "each a 4xx or a timeout; /health OK with unchanged latency"
    case.measured = (
        "; ".join(f"{k}: {v}" for k, v in answers.items())
        + f"; slow clients: {sorted(set(slow_results))}; /health p50 "
        f"{pct(baseline, 50):.1f}→{pct(during, 50):.1f} ms, max {max(baseline):.1f}→"
        f"{max(during):.1f} ms"
    )
    assert not accepted, answers
    assert len(slow_results) == 20 and slow_ok, slow_results
    assert after.status == 200
    assert pct(during, 50) < pct(baseline, 50) + 50
