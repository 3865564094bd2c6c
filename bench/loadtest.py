"""Load test of ``agelens serve`` on loopback: throughput, latency percentiles, errors, memory.

Starts the server in its own process, then runs concurrent clients that each
upload a 640x480 one-face photo (scikit-image's astronaut on a plain background)
to ``/v1/estimate`` for a fixed time, each with a bounded number of requests.
The server's resident memory is read before and after (after a warm-up).

With ``--hostile``, the clients mix that photo with files that are not images and
seeded mutants of valid images (the fuzzer's), over multipart, base64 JSON and raw
bodies; a good photo must get 200 with its face, every other upload a 4xx, and any 5xx
or connection error counts as an error. ``--large-bursts N`` then sends N bursts of
40-megapixel photos, as many at once as clients, and reads the server's memory after
each burst and after it has been idle. ``--attackers N --idle M`` then measures one
ordinary client's latency while N clients send the dearest hostile requests (a tiny WebP
of 40 MP, a TIFF of 20,000 chained directories, JSON of a million objects) and M idle
connections are held open from as many addresses.

    python bench/loadtest.py --clients 8 --seconds 30 --out bench/results/server.json
    python bench/loadtest.py --clients 16 --seconds 60 --hostile --attackers 3 --idle 40 \
        --out bench/results/server_hostile.json
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
from fuzz_decode import chained_tiff, mutants, seeds  # the sibling script
from PIL import Image
from rich.console import Console
from rich.table import Table
from skimage import data

from agelens.pipeline.runtime import machine_record

#: A sent upload: (label, body bytes, how it is sent, whether it holds one face).
Upload = tuple[str, bytes, str, bool]


def astronaut_photo(
    size: tuple[int, int], face_side: int, at: tuple[int, int], quality: int
) -> bytes:
    """A JPEG of ``size`` on a plain background with the astronaut pasted at ``at``."""
    canvas = Image.new("RGB", size, (128, 138, 150))
    canvas.paste(Image.fromarray(data.astronaut()).resize((face_side, face_side)), at)
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def photo_640x480() -> bytes:
    return astronaut_photo((640, 480), 480, (80, 0), 90)


def photo_40_megapixels() -> bytes:
    """A 7296x5472 (39.9-megapixel) JPEG, under the 10 MB upload limit."""
    return astronaut_photo((7296, 5472), 2400, (2400, 1500), 80)


def tiny_huge_webp() -> bytes:
    """A lossless WebP of a few kB that decodes to 40 megapixels, with alpha and an EXIF
    orientation: cheap to send, dear to decode."""
    image = Image.new("RGBA", (7296, 5472), (120, 130, 140, 255))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", lossless=True, exif=exif)
    return buffer.getvalue()


def many_object_json() -> bytes:
    """About 3 MB of valid JSON made of a million small objects."""
    return b'{"x": [' + b",".join([b"{}"] * 1_000_000) + b'], "image_base64": ""}'


def attacks() -> list[Upload]:
    """The expensive hostile requests: each must get a 4xx (or a 200), never a 5xx."""
    return [
        ("tiny-huge-webp", tiny_huge_webp(), "raw", False),
        ("chained-tiff", chained_tiff(), "raw", False),
        ("many-object-json", many_object_json(), "raw-json", False),
    ]


def hostile_uploads(photo: bytes, seed: int = 0) -> list[Upload]:
    """Good photos, non-images and fuzzed images, each over one of the three upload forms."""
    rng = random.Random(seed)
    bodies: list[tuple[str, bytes, bool]] = [("photo", photo, True)] * 40
    bodies += [
        ("text", b"name,age\nx,3\n" * 20, False),
        ("html", b"<html><body>not a photo</body></html>", False),
        ("empty-pdf", b"%PDF-1.4\n%%EOF\n", False),
        ("zeros", bytes(5000), False),
    ]
    for number, (name, valid) in enumerate(seeds().items()):
        bodies += [(f"fuzzed-{name}", m, False) for m in mutants(valid, 25, seed * 100 + number)]
    forms = ("multipart", "json", "raw")
    uploads = [(label, body, rng.choice(forms), face) for label, body, face in bodies]
    # Hostile headers and URLs around a good photo: each must get a 4xx, never a 5xx.
    for form in ("long-boundary", "odd-boundary", "long-query"):
        uploads += [(f"photo-{form}", photo, form, form == "long-query")] * 5
    return uploads + attacks()


def send(session: httpx.Client, url: str, upload: Upload) -> httpx.Response:
    label, body, form, _ = upload
    if form in ("long-boundary", "odd-boundary"):
        boundary = "Z" * 257 if form == "long-boundary" else '"a b\u00e9"'
        content_type = f"multipart/form-data; boundary={boundary}"
        return session.post(url, content=body, headers={"Content-Type": content_type.encode()})
    if form == "long-query":
        return session.post(
            url, params={"q": "x" * 60_000}, files={"file": (f"{label}.jpg", body, "image/jpeg")}
        )
    if form == "raw-json":
        return session.post(url, content=body, headers={"Content-Type": "application/json"})
    if form == "json":
        return session.post(url, json={"image_base64": base64.b64encode(body).decode()})
    if form == "raw":
        return session.post(url, content=body, headers={"Content-Type": "application/octet-stream"})
    return session.post(url, files={"file": (f"{label}.jpg", body, "image/jpeg")})


def problem_with(response: httpx.Response, upload: Upload) -> str | None:
    """What is wrong with the answer to ``upload``; None when it is as it should be."""
    if upload[3]:
        if response.status_code == 200 and len(response.json()["faces"]) == 1:
            return None
    elif response.status_code < 500:  # a mutant may still decode: 200, with or without faces
        return None
    return f"{upload[0]} ({upload[2]}): {response.status_code}: {response.text[:120]}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(port: int, log: Path) -> subprocess.Popen:
    """The server, its output (the log) going to ``log``."""
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "agelens", "serve", "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
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


def run_clients(
    url: str, uploads: list[Upload], clients: int, seconds: float, per_client: int
) -> dict:
    """Each client sends requests back to back until time is up or its count is reached,
    cycling through ``uploads`` from its own starting point."""
    latencies: list[float] = []
    errors: list[str] = []
    statuses: dict[int, int] = {}
    connection_errors = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(number: int) -> None:
        nonlocal connection_errors
        start_at = number * len(uploads) // clients
        queue = itertools.cycle(uploads[start_at:] + uploads[:start_at])
        with httpx.Client(timeout=60) as session:
            for upload in itertools.islice(queue, per_client):
                if time.monotonic() >= stop_at:
                    return
                start = time.perf_counter()
                status = None
                try:
                    response = send(session, url, upload)
                    status = response.status_code
                    problem = problem_with(response, upload)
                except httpx.HTTPError as error:
                    problem = f"{upload[0]}: {type(error).__name__}: {error}"
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    if status is None:
                        connection_errors += 1
                    else:
                        statuses[status] = statuses.get(status, 0) + 1
                    if problem:
                        errors.append(problem)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
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
        "connection_errors": connection_errors,
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
        "error_examples": sorted(set(errors))[:5],
        "requests_per_s": round(len(latencies) / wall, 1),
        "latency_ms": {
            "p50": round(float(np.percentile(millis, 50)), 1),
            "p95": round(float(np.percentile(millis, 95)), 1),
            "p99": round(float(np.percentile(millis, 99)), 1),
            "max": round(float(millis.max()), 1),
        },
    }


class IdleConnections:
    """``count`` connections held open without a request, from as many addresses (each
    under the per-client cap), re-opened as the server's header deadline closes them."""

    def __init__(self, url: str, count: int) -> None:
        host, port = url.split("//")[1].split("/")[0].split(":")
        self.target, self.count = (host, int(port)), count
        self.done = threading.Event()
        self.opened = 0
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def __enter__(self) -> IdleConnections:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.thread.join()

    def _hold(self) -> None:
        import socket

        sockets: list = [None] * self.count
        while not self.done.is_set():
            for index, held in enumerate(sockets):
                if held is not None:
                    held.setblocking(False)
                    try:
                        if held.recv(1) == b"":  # closed by the server: open it again
                            held.close()
                            held = None
                    except BlockingIOError:
                        pass
                    except OSError:
                        held = None
                if held is None:
                    try:
                        held = socket.create_connection(
                            self.target, timeout=5, source_address=(f"127.0.0.{2 + index}", 0)
                        )
                        self.opened += 1
                    except OSError:
                        held = None
                sockets[index] = held
            self.done.wait(0.5)
        for held in sockets:
            if held is not None:
                held.close()


def under_attack(url: str, photo: bytes, attackers: int, idle: int, seconds: float) -> dict:
    """One ordinary client's latency while ``attackers`` send the expensive hostile
    requests back to back and ``idle`` connections are held open (below the cap)."""
    done = threading.Event()
    attack_statuses: dict[int, int] = {}

    def attacker() -> None:
        with httpx.Client(timeout=120) as session:
            for upload in itertools.cycle(attacks()):
                if done.is_set():
                    return
                try:
                    status = send(session, url, upload).status_code
                except httpx.HTTPError:
                    status = 0
                attack_statuses[status] = attack_statuses.get(status, 0) + 1

    threads = [threading.Thread(target=attacker) for _ in range(attackers)]
    with IdleConnections(url, idle):
        for thread in threads:
            thread.start()
        time.sleep(2)  # the attack is under way
        ordinary = run_clients(url, [("photo", photo, "multipart", True)], 1, seconds, 10_000)
        done.set()
        for thread in threads:
            thread.join()
    return {
        "attackers": attackers,
        "idle_connections": idle,
        "ordinary_client": ordinary,
        "attack_statuses": {str(k): v for k, v in sorted(attack_statuses.items())},
    }


def large_bursts(url: str, process: psutil.Process, bursts: int, clients: int) -> dict:
    """RSS after each burst of 40-megapixel uploads, ``clients`` at once, and after idling."""
    photo = photo_40_megapixels()
    upload: Upload = ("40-megapixel photo", photo, "multipart", True)
    after: list[float] = []
    problems = 0
    for _ in range(bursts):
        burst = run_clients(url, [upload], clients, 600, 1)
        problems += burst["errors"]
        after.append(round(process.memory_info().rss / 2**20, 1))
    time.sleep(10)
    return {
        "photo_mb": round(len(photo) / 2**20, 2),
        "uploads_per_burst": clients,
        "errors": problems,
        "rss_after_each_burst_mb": after,
        "rss_idle_after_10_s_mb": round(process.memory_info().rss / 2**20, 1),
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
    parser.add_argument("--hostile", action="store_true", help="mix in non-images and mutants")
    parser.add_argument("--large-bursts", type=int, default=0, help="bursts of 40 MP uploads")
    parser.add_argument(
        "--attackers", type=int, default=0, help="then: clients sending dear hostile requests"
    )
    parser.add_argument("--idle", type=int, default=0, help="with --attackers: idle connections")
    parser.add_argument("--out", type=Path, default=Path("bench/results/server.json"))
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/estimate"
    photo = photo_640x480()
    good: list[Upload] = [("photo", photo, "multipart", True)]
    uploads = hostile_uploads(photo) if args.hostile else good
    log = Path(tempfile.mkdtemp()) / "server.log"
    server = start_server(port, log)
    try:
        process = psutil.Process(server.pid)
        warm = run_clients(url, uploads, args.clients, 60, 25)  # warm-up: 25 a client
        rss_before = process.memory_info().rss
        # Idle connections held open through the load too, below the cap with the clients.
        with IdleConnections(url, args.idle):
            load = run_clients(url, uploads, args.clients, args.seconds, args.per_client)
        served = load["requests"]
        while served < args.memory_requests:
            more = run_clients(url, uploads, args.clients, 600, 50)
            served += more["requests"]
        rss_after = process.memory_info().rss
        bursts = large_bursts(url, process, args.large_bursts, args.clients)
        attacked = (
            under_attack(url, photo, args.attackers, args.idle, args.seconds)
            if args.attackers
            else None
        )
        alive = httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
    lines = log.read_bytes().splitlines()
    log_figures = {
        "bytes": sum(len(line) + 1 for line in lines),
        "longest_line_bytes": max((len(line) for line in lines), default=0),
    }
    log_figures["bytes_per_request"] = round(log_figures["bytes"] / (warm["requests"] + served))
    log.unlink()
    results = {
        "machine": machine_record(),
        "photo": "640x480 JPEG, one face",
        "uploads": (
            f"{len(uploads)} kinds: the photo, non-images and fuzzed images, "
            "multipart, base64 JSON and raw bodies; long boundaries and queries; a tiny WebP "
            "of 40 MP, a TIFF of 20,000 chained directories, JSON of a million objects"
            if args.hostile
            else "the photo, multipart"
        ),
        "load": load,
        "memory": {
            "requests_between_readings": served,
            "rss_before_mb": round(rss_before / 2**20, 1),
            "rss_after_mb": round(rss_after / 2**20, 1),
            "growth_mb": round((rss_after - rss_before) / 2**20, 1),
        },
        "server_alive_at_end": alive,
        # Every request of the run is in the log: its size a request, and its longest line.
        "log": log_figures,
    }
    if args.large_bursts:
        results["large_bursts"] = bursts
    if attacked:
        results["under_attack"] = attacked
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    table = Table(title=f"{args.clients} clients, {load['seconds']} s, {results['uploads']}")
    for column in ("req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "5xx", "RSS growth MB"):
        table.add_column(column, justify="right")
    latency = load["latency_ms"]
    server_errors = sum(v for k, v in load["status_counts"].items() if k.startswith("5"))
    table.add_row(
        f"{load['requests_per_s']:.1f}",
        f"{latency['p50']:.0f}",
        f"{latency['p95']:.0f}",
        f"{latency['p99']:.0f}",
        str(load["errors"]),
        str(server_errors),
        f"{results['memory']['growth_mb']:+.1f} over {served} requests",
    )
    Console().print(table)
    if attacked:
        latency = attacked["ordinary_client"]["latency_ms"]
        Console().print(
            f"under attack ({args.attackers} attackers, {args.idle} idle connections): "
            f"ordinary p50 {latency['p50']:.0f} ms, p95 {latency['p95']:.0f} ms; "
            f"attack answers {attacked['attack_statuses']}"
        )
    if args.large_bursts:
        Console().print(f"40 MP bursts: {bursts}")


if __name__ == "__main__":
    main()
