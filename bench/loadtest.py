"""Load test of ``agelens serve`` on loopback: throughput, latency percentiles, errors, memory.

Starts the server in its own process, then runs concurrent clients that each
upload a 640x480 one-face photo (scikit-image's astronaut on a plain background)
to ``/v1/estimate`` for a fixed time, each with a bounded number of requests.
The server's resident memory is read before and after (after a warm-up).

    python bench/loadtest.py --clients 8 --seconds 30 --out bench/results/server.json
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image
from rich.console import Console
from rich.table import Table
from skimage import data

from agelens.pipeline.runtime import machine_record


def photo_640x480() -> bytes:
    canvas = Image.new("RGB", (640, 480), (128, 138, 150))
    canvas.paste(Image.fromarray(data.astronaut()).resize((480, 480)), (80, 0))
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "agelens", "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not become ready within 60 s")


def run_clients(url: str, photo: bytes, clients: int, seconds: float, per_client: int) -> dict:
    """Each client sends requests back to back until time is up or its count is reached."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(timeout=30) as session:
            for _ in range(per_client):
                if time.monotonic() >= stop_at:
                    return
                start = time.perf_counter()
                try:
                    response = session.post(url, files={"file": ("photo.jpg", photo, "image/jpeg")})
                    ok = response.status_code == 200 and len(response.json()["faces"]) == 1
                    problem = None if ok else f"{response.status_code}: {response.text[:120]}"
                except httpx.HTTPError as error:
                    problem = f"{type(error).__name__}: {error}"
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    if problem:
                        errors.append(problem)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    millis = np.array(latencies) * 1000
    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "requests": len(latencies),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:5],
        "requests_per_s": round(len(latencies) / wall, 1),
        "latency_ms": {
            "p50": round(float(np.percentile(millis, 50)), 1),
            "p95": round(float(np.percentile(millis, 95)), 1),
            "p99": round(float(np.percentile(millis, 99)), 1),
            "max": round(float(millis.max()), 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--per-client", type=int, default=2000, help="request cap per client")
    parser.add_argument(
        "--memory-requests", type=int, default=2000, help="requests between the memory readings"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/server.json"))
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/estimate"
    photo = photo_640x480()
    server = start_server(port)
    try:
        process = psutil.Process(server.pid)
        run_clients(url, photo, args.clients, 60, 25)  # warm-up: 25 requests per client
        rss_before = process.memory_info().rss
        load = run_clients(url, photo, args.clients, args.seconds, args.per_client)
        served = load["requests"]
        while served < args.memory_requests:
            more = run_clients(url, photo, args.clients, 600, 50)
            served += more["requests"]
        rss_after = process.memory_info().rss
    finally:
        server.terminate()
        server.wait(timeout=30)
    results = {
        "machine": machine_record(),
        "photo": "640x480 JPEG, one face",
        "load": load,
        "memory": {
            "requests_between_readings": served,
            "rss_before_mb": round(rss_before / 2**20, 1),
            "rss_after_mb": round(rss_after / 2**20, 1),
            "growth_mb": round((rss_after - rss_before) / 2**20, 1),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    table = Table(title=f"{args.clients} clients, {load['seconds']} s, {results['photo']}")
    for column in ("req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "RSS growth MB"):
        table.add_column(column, justify="right")
    latency = load["latency_ms"]
    table.add_row(
        f"{load['requests_per_s']:.1f}",
        f"{latency['p50']:.0f}",
        f"{latency['p95']:.0f}",
        f"{latency['p99']:.0f}",
        str(load["errors"]),
        f"{results['memory']['growth_mb']:+.1f} over {served} requests",
    )
    Console().print(table)


if __name__ == "__main__":
    main()
