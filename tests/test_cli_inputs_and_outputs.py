"""Inputs beyond files (standard input, URLs) and outputs beyond the table (CSV, crops)."""

from __future__ import annotations

import csv
import functools
import http.server
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from PIL import Image
from typer.testing import CliRunner

from agelens.cli.main import app

runner = CliRunner()


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut, grace_hopper_path) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(astronaut).save(folder / "astronaut.png")
    (folder / "hopper.jpg").write_bytes(grace_hopper_path.read_bytes())
    (folder / "nested").mkdir()
    # The same file name in another folder: outputs must not overwrite each other.
    Image.fromarray(astronaut[:, ::-1]).save(folder / "nested" / "astronaut.png")
    Image.new("RGB", (320, 240), (128, 128, 128)).save(folder / "wall.jpg")
    return folder


@pytest.fixture(scope="module")
def expected(photos: Path) -> dict[str, dict]:
    result = runner.invoke(app, ["predict", str(photos), "--json"])
    assert result.exit_code == 0, result.output
    return {
        Path(line["image"]).relative_to(photos).as_posix(): line
        for line in json_lines(result.stdout)
    }


@pytest.fixture(scope="module")
def web_server(photos: Path) -> Iterator[str]:
    """The photos folder over HTTP on loopback (404 for anything else)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(photos))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_csv_has_a_row_per_face_and_per_faceless_file_agreeing_with_json(
    photos: Path, expected: dict[str, dict], tmp_path: Path
):
    table = tmp_path / "ages.csv"
    result = runner.invoke(app, ["predict", str(photos), "--csv", str(table)])
    assert result.exit_code == 0, result.output
    with table.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [Path(row["image"]).relative_to(photos).as_posix() for row in rows] == list(expected)
    for row in rows:
        record = expected[Path(row["image"]).relative_to(photos).as_posix()]
        if not record["faces"]:
            assert row["face"] == "0" and row["age"] == ""
            continue
        face = record["faces"][int(row["face"]) - 1]
        assert float(row["age"]) == face["age"] and row["label"] == face["label"]
        assert row["group"] == face["group"]["label"]
        assert [float(row[f"box_{k}"]) for k in ("x1", "y1", "x2", "y2")] == face["box"]
        assert float(row["p_YOUNG"]) == face["groups"]["YOUNG"]


def test_save_crops_writes_each_face_upright_and_never_overwrites(photos: Path, tmp_path: Path):
    crops = tmp_path / "crops"
    result = runner.invoke(app, ["predict", str(photos), "--save-crops", str(crops)])
    assert result.exit_code == 0, result.output
    names = sorted(path.name for path in crops.iterdir())
    assert names == ["astronaut_face1-2.png", "astronaut_face1.png", "hopper_face1.png"]
    with Image.open(crops / "hopper_face1.png") as crop:
        assert crop.size == (224, 224)


def test_save_crops_refuses_the_photos_own_folder(photos: Path):
    result = runner.invoke(
        app, ["predict", str(photos / "hopper.jpg"), "--save-crops", str(photos)]
    )
    assert result.exit_code == 2 and "overwritten" in result.output


def test_standard_input_gives_what_the_file_gives(photos: Path, expected: dict[str, dict]):
    data = (photos / "hopper.jpg").read_bytes()
    result = runner.invoke(app, ["predict", "-", "--json"], input=data)
    assert result.exit_code == 0, result.output
    (line,) = json_lines(result.stdout)
    assert line["image"] == "-" and line["faces"] == expected["hopper.jpg"]["faces"]
    empty = runner.invoke(app, ["predict", "-"], input=b"")
    assert empty.exit_code == 1 and "empty" in empty.output
    twice = runner.invoke(app, ["predict", "-", "-"], input=data)
    assert twice.exit_code == 2 and "once" in twice.output


def test_urls_give_what_the_files_give_and_failures_are_reported(
    web_server: str, expected: dict[str, dict]
):
    good, missing = f"{web_server}/hopper.jpg", f"{web_server}/missing.jpg"
    result = runner.invoke(app, ["predict", missing, good, "--json"])
    assert result.exit_code == 1
    first, second = json_lines(result.stdout)
    assert first["image"] == missing and "404" in first["error"]
    assert second["image"] == good and second["faces"] == expected["hopper.jpg"]["faces"]
    refused = runner.invoke(app, ["predict", "http://127.0.0.1:9/x.jpg"])
    assert refused.exit_code == 1 and "could not be fetched" in refused.output
    assert "Traceback" not in refused.output


def test_gate_decides_each_photo_of_a_folder(photos: Path):
    result = runner.invoke(app, ["gate", str(photos), "--over", "18", "--buffer", "0", "--json"])
    lines = json_lines(result.stdout)
    decisions = {Path(line["image"]).name: line["decision"] for line in lines}
    assert len(lines) == 4 and decisions["wall.jpg"] == "no_face"
    # The astronaut's photo is sharp; Grace Hopper's is a grainy print, which is referred.
    assert decisions["astronaut.png"] == "pass" and decisions["hopper.jpg"] == "refer"
    # A folder's exit code is the most serious any photo got: refer (3) before no face (4).
    assert result.exit_code == 3
    text = runner.invoke(app, ["gate", str(photos)])
    assert "4 photos:" in text.output and "1 no face" in text.output


def _many_photos(folder: Path, astronaut, count: int) -> Path:
    folder.mkdir()
    Image.fromarray(astronaut).save(folder / "0000.jpg", quality=90)
    for index in range(1, count):
        os.link(folder / "0000.jpg", folder / f"{index:04d}.jpg")
    return folder


def test_two_runs_writing_one_csv_leave_one_runs_whole_file(astronaut, tmp_path: Path):
    folder = _many_photos(tmp_path / "photos", astronaut, 120)
    table = tmp_path / "ages.csv"
    command = [sys.executable, "-m", "agelens", "predict", str(folder), "--csv", str(table)]
    runs = [subprocess.Popen(command, stdout=subprocess.DEVNULL) for _ in range(2)]
    assert [run.wait(timeout=300) for run in runs] == [0, 0]
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 120 and len({row["image"] for row in rows}) == 120
    assert all(row["age"] and row["box_x2"] for row in rows)  # no cut or mixed line
    assert not list(tmp_path.glob(".ages.csv.*"))


def test_ctrl_c_mid_folder_keeps_the_csv_and_leaves_no_workers(astronaut, tmp_path: Path):
    folder = _many_photos(tmp_path / "photos", astronaut, 4000)
    table = tmp_path / "ages.csv"
    table.write_text("an earlier run's file\n")
    run = subprocess.Popen(
        [sys.executable, "-m", "agelens", "predict", str(folder), "--csv", str(table)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a terminal's
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(
        path.stat().st_size > 2000 for path in tmp_path.glob(".ages.csv.*")
    ):
        time.sleep(0.05)
    workers = psutil.Process(run.pid).children(recursive=True)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=30)
    assert run.returncode == 130 and "Traceback" not in stderr, stderr
    assert "ages.partial.csv" in stderr
    assert table.read_text() == "an earlier run's file\n"
    with (tmp_path / "ages.partial.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert 0 < len(rows) < 4000 and all(row["box_x2"] for row in rows)
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"worker processes left behind: {alive}"


def _raw_server(answer) -> Iterator[int]:
    """A socket server that answers each connection with ``answer(connection)``."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    connections: list = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connections.append(connection)
            threading.Thread(target=answer, args=(connection,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield port
    finally:
        listener.close()
        for connection in connections:
            connection.close()


def _after_request(connection, reply: bytes, trickle: float = 0.0) -> None:
    try:
        connection.recv(65536)
        if trickle:
            for byte in reply:
                connection.sendall(bytes([byte]))
                time.sleep(trickle)
        else:
            connection.sendall(reply)
    except OSError:
        pass


HOSTILE_ANSWERS = {
    "bad status line": b"garbage\r\n\r\n",
    "too many headers": b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 150 + b"\r\n",
    "cut body": b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\nshort",
    "line too long": b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",
}


@pytest.mark.parametrize("case", list(HOSTILE_ANSWERS))
def test_a_broken_server_is_that_urls_error_and_the_other_photos_go_on(
    case, photos: Path, monkeypatch
):
    reply = HOSTILE_ANSWERS[case]
    for port in _raw_server(lambda c: _after_request(c, reply)):
        url = f"http://127.0.0.1:{port}/a.jpg"
        result = runner.invoke(app, ["predict", url, str(photos / "astronaut.png"), "--json"])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        records = {r["image"]: r for r in json_lines(result.stdout)}
        assert records[url]["error"].startswith("could not be fetched")
        assert len(records[str(photos / "astronaut.png")]["faces"]) == 1


def test_a_trickling_server_cannot_hold_the_command(photos: Path, monkeypatch):
    from agelens.cli.files import sources

    monkeypatch.setattr(sources, "URL_DEADLINE_S", 1.5)
    slow = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000
    for port in _raw_server(lambda c: _after_request(c, slow, trickle=0.2)):
        started = time.monotonic()
        result = runner.invoke(app, ["predict", f"http://127.0.0.1:{port}/a.jpg", "--json"])
        assert time.monotonic() - started < 10
        assert "within 1.5 s" in json_lines(result.stdout)[0]["error"]


def test_redirects_are_followed_to_http_only(photos: Path):
    received: list[bytes] = []

    def ftp_listener(connection) -> None:
        connection.settimeout(2)
        try:
            connection.sendall(b"220 ready\r\n")
            received.append(connection.recv(1000))
        except OSError:
            pass

    for ftp_port in _raw_server(ftp_listener):
        redirect = (
            f"HTTP/1.1 302 Found\r\nLocation: ftp://127.0.0.1:{ftp_port}/a.jpg\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        for port in _raw_server(functools.partial(_after_request, reply=redirect)):
            result = runner.invoke(app, ["predict", f"http://127.0.0.1:{port}/a.jpg", "--json"])
            assert "ftp:// refused" in json_lines(result.stdout)[0]["error"]
    assert not any(received), received  # nothing reached the FTP listener


def test_awkward_file_names_are_written_and_shown_safely(astronaut, tmp_path: Path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(astronaut).save(folder / "plain.jpg", quality=90)
    awkward = [b"\xff\xfe-not-utf8.jpg", b"\x1b[31mred\x1b[0m.jpg", b"n" * 250 + b".jpg"]
    for name in awkward:
        os.link(folder / "plain.jpg", os.path.join(os.fsencode(folder), name))
    table, crops, annotated = tmp_path / "ages.csv", tmp_path / "crops", tmp_path / "annotated"
    arguments = ["predict", str(folder), "--csv", str(table), "--save-crops", str(crops)]
    result = runner.invoke(app, [*arguments, "--annotate", str(annotated)])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\\x1b[31mred" in result.output
    with table.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and all(row["age"] for row in rows)
    assert len(list(crops.iterdir())) == 4 and len(list(annotated.iterdir())) == 4


def test_a_url_ending_in_dot_dot_is_annotated_under_a_name_of_its_own(astronaut, tmp_path: Path):
    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, format="JPEG")
    reply = (
        f"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {len(buffer.getvalue())}"
        "\r\n\r\n"
    ).encode() + buffer.getvalue()
    for port in _raw_server(functools.partial(_after_request, reply=reply)):
        out = tmp_path / "annotated"
        url = f"http://127.0.0.1:{port}/photos/.."
        result = runner.invoke(app, ["predict", url, "--annotate", str(out)])
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
        assert [p.name for p in out.iterdir()] == ["image.png"]
