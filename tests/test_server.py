"""The REST API: answers, limits, every bad input as a 4xx with a message, privacy and access."""

from __future__ import annotations

import base64
import builtins
import contextlib
import io
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from agelens.server import ServerSettings, create_app


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(estimator):
    with TestClient(create_app(ServerSettings(), estimator=estimator)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def astronaut_jpeg(astronaut) -> bytes:
    return encode(Image.fromarray(astronaut), quality=92)


def upload(client: TestClient, data: bytes, path: str = "/v1/estimate", name="photo.jpg", **params):
    return client.post(path, params=params, files={"file": (name, data, "image/jpeg")})


def test_health_ready_and_models(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    models = client.get("/v1/models").json()
    assert models["serving"] == "cydral-v1"
    assert {row["task"] for row in models["models"]} == {"age", "face-detection", "gender"}


def test_estimate_answers_like_the_cli(client, astronaut_jpeg):
    response = upload(client, astronaut_jpeg)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (512, 512)
    (face,) = body["faces"]
    assert {"box", "score", "landmarks", "age", "interval", "group", "groups"} <= set(face)
    assert 30 <= face["age"] <= 55
    assert face["interval"][0] <= face["age"] <= face["interval"][1]
    assert face["group"]["label"] in face["groups"] and len(face["landmarks"]) == 5
    assert "distribution" not in face and "annotated_jpeg_base64" not in body


def test_json_base64_and_raw_bodies_give_the_same_answer(client, astronaut_jpeg):
    age = upload(client, astronaut_jpeg).json()["faces"][0]["age"]
    as_json = client.post(
        "/v1/estimate", json={"image_base64": base64.b64encode(astronaut_jpeg).decode()}
    )
    data_url = "data:image/jpeg;base64," + base64.b64encode(astronaut_jpeg).decode()
    as_data_url = client.post("/v1/estimate", json={"image_base64": data_url})
    raw = client.post(
        "/v1/estimate", content=astronaut_jpeg, headers={"content-type": "image/jpeg"}
    )
    for response in (as_json, as_data_url, raw):
        assert response.status_code == 200, response.text
        assert response.json()["faces"][0]["age"] == pytest.approx(age)


def test_options_annotate_distribution_groups_tta(client, astronaut_jpeg):
    body = upload(
        client, astronaut_jpeg, annotate=True, distribution=True, groups="decades", tta=False
    ).json()
    (face,) = body["faces"]
    assert len(face["distribution"]) == 81
    assert face["group"]["label"] in {"31-40", "41-50", "21-30", "51-60"}
    annotated = Image.open(io.BytesIO(base64.b64decode(body["annotated_jpeg_base64"])))
    assert annotated.format == "JPEG" and annotated.size == (512, 512)
    custom = upload(client, astronaut_jpeg, groups="13,31,51").json()["faces"][0]
    assert set(custom["groups"]) == {"0-12", "13-30", "31-50", "51+"}


def test_gate(client, astronaut_jpeg):
    passed = upload(client, astronaut_jpeg, "/v1/gate", over=18, buffer=7).json()
    assert passed["decision"] == "pass" and [f["decision"] for f in passed["faces"]] == ["pass"]
    assert (passed["over"], passed["buffer"], passed["pass_age"]) == (18, 7, 25)
    referred = upload(client, astronaut_jpeg, "/v1/gate", over=60, buffer=5).json()
    assert referred["decision"] == "refer" and referred["faces"][0]["decision"] == "refer"
    assert referred["faces"][0]["reasons"][0].endswith(", under 65")
    wall = encode(Image.new("RGB", (640, 480), (200, 200, 200)))
    empty = upload(client, wall, "/v1/gate").json()
    assert empty["decision"] == "no_face" and empty["faces"] == []


def test_the_gate_record_is_one_schema_in_the_cli_and_the_api(client, astronaut_jpeg, tmp_path):
    from typer.testing import CliRunner

    from agelens.cli.main import app

    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(astronaut_jpeg)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    arguments = ["gate", str(photo), str(tmp_path / "broken.jpg"), "--over", "18", "--json"]
    lines = CliRunner().invoke(app, arguments).stdout.splitlines()
    cli, broken = (json.loads(line) for line in lines)
    api = upload(client, astronaut_jpeg, "/v1/gate", over=18).json()
    assert set(cli) - {"image", "error"} == set(api) - {"width", "height"}
    assert set(cli["faces"][0]) == set(api["faces"][0])
    assert {k: cli[k] for k in ("decision", "over", "buffer", "pass_age", "rule")} == {
        k: api[k] for k in ("decision", "over", "buffer", "pass_age", "rule")
    }
    # An unreadable photo: the same record, with no decision, no faces and its error.
    assert set(broken) == set(cli) and broken["decision"] is None and broken["faces"] == []
    assert broken["error"] and cli["error"] is None


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (64, 64), colour) for colour in ("red", "green", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    return buffer.getvalue()


BAD_UPLOADS = {
    "zero bytes": (b"", 422, "empty"),
    "text file": (b"just some notes, not a photo\n", 415, "not an image"),
    "html renamed .jpg": (b"<!doctype html><html><body>hi</body></html>", 415, "not an image"),
    "animated gif": (_animated_gif(), 415, "animated"),
    "decompression bomb": (encode(Image.new("1", (12_000, 12_000)), "PNG"), 413, "pixels"),
    "11 MB upload": (os.urandom(11 * 2**20), 413, "limit"),
    "truncated jpeg": (None, 422, "truncated"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_uploads_get_a_4xx_with_a_message_and_the_server_keeps_serving(
    client, case, astronaut_jpeg
):
    data, status, words = BAD_UPLOADS[case]
    if data is None:
        data = astronaut_jpeg[: len(astronaut_jpeg) // 2]
    for path in ("/v1/estimate", "/v1/gate"):
        response = upload(client, data, path)
        assert response.status_code == status, response.text
        assert words in response.json()["error"]
    assert client.get("/healthz").status_code == 200
    assert len(upload(client, astronaut_jpeg).json()["faces"]) == 1


def test_awkward_but_valid_images_are_accepted(client, astronaut):
    pil = Image.fromarray(astronaut)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side: rotate 90 degrees clockwise to view
    cases = {
        "cmyk": encode(pil.convert("CMYK")),
        "alpha": encode(pil.convert("RGBA"), "PNG"),
        "16-bit": encode(Image.fromarray(astronaut[:, :, 0].astype(np.uint16) * 257), "PNG"),
        "exif rotated": encode(pil.rotate(90, expand=True), exif=exif),
    }
    for name, data in cases.items():
        response = upload(client, data)
        assert response.status_code == 200, (name, response.text)
        assert len(response.json()["faces"]) == 1, name


@pytest.mark.parametrize(
    ("request_options", "status", "words"),
    [
        ({"files": {"photo": ("a.jpg", b"123", "image/jpeg")}}, 422, "'file'"),
        ({"json": {"image_base64": "not base64!"}}, 422, "base64"),
        ({"json": {"picture": "abc"}}, 422, "image_base64"),
        ({"content": b"{oops", "headers": {"content-type": "application/json"}}, 422, "JSON"),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "content type"),
        ({"params": {"groups": "teens"}, "content": b"x"}, 422, "teens"),
        ({"params": {"tta": "maybe"}, "content": b"x"}, 422, "tta"),
    ],
)
def test_malformed_requests(client, request_options, status, words):
    response = client.post("/v1/estimate", **request_options)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_gate_parameters_are_checked(client, astronaut_jpeg):
    response = upload(client, astronaut_jpeg, "/v1/gate", over=-3)
    assert response.status_code == 422 and "over" in response.json()["error"]


def test_upload_limit_is_configurable(estimator, astronaut_jpeg):
    settings = ServerSettings(max_upload_bytes=len(astronaut_jpeg) - 1)
    with TestClient(create_app(settings, estimator=estimator)) as small:
        response = upload(small, astronaut_jpeg)
    assert response.status_code == 413 and "limit" in response.json()["error"]


def _files_under(folder: Path) -> set[tuple[str, float]]:
    found = set()
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root, name)
            with contextlib.suppress(OSError):
                found.add((str(path), path.stat().st_mtime))
    return found


def test_no_file_is_written_and_nothing_is_logged(
    client, astronaut, caplog, monkeypatch, tmp_path: Path
):
    # A 6 MB PNG: Starlette's own form parser would spool anything over 1 MB to a file.
    noisy = np.random.default_rng(1).integers(0, 256, (1400, 1400, 3), dtype=np.uint8)
    noisy[444:956, 444:956] = astronaut
    big = encode(Image.fromarray(noisy), "PNG", compress_level=0)
    assert len(big) > 5 * 2**20
    # Spool files are unlinked at once, so watch every file opened for writing too.
    writes: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file, mode="r", *args, **kwargs):
        if any(flag in str(mode) for flag in "wax+"):
            writes.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    def spy_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            writes.append(str(path))
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    folders = [tmp_path, Path.cwd()]
    before = [_files_under(folder) for folder in folders]
    with caplog.at_level(logging.DEBUG):
        monkeypatch.setattr(builtins, "open", spy_open)
        monkeypatch.setattr(os, "open", spy_os_open)
        response = upload(client, big, name="secret-holiday.png")
        as_json = client.post(
            "/v1/gate", json={"image_base64": base64.b64encode(big).decode("ascii")}
        )
        monkeypatch.undo()
    assert response.status_code == 200 and as_json.status_code == 200
    assert len(response.json()["faces"]) >= 1
    assert writes == []
    assert [_files_under(folder) for folder in folders] == before
    assert "secret-holiday" not in caplog.text
    assert base64.b64encode(big[:600]).decode()[:400] not in caplog.text


def test_api_key_guards_v1_only(estimator, astronaut_jpeg):
    settings = ServerSettings(api_key="s3cret")
    with TestClient(create_app(settings, estimator=estimator)) as guarded:
        assert guarded.get("/healthz").status_code == 200
        assert guarded.get("/").status_code == 200
        missing = guarded.get("/v1/models")
        assert missing.status_code == 401 and "API key" in missing.json()["error"]
        assert guarded.get("/v1/models", headers={"X-API-Key": "wrong"}).status_code == 401
        assert guarded.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
        bearer = {"Authorization": "Bearer s3cret"}
        assert upload(guarded, astronaut_jpeg).status_code == 401
        response = guarded.post(
            "/v1/estimate", files={"file": ("a.jpg", astronaut_jpeg)}, headers=bearer
        )
        assert response.status_code == 200


def test_cors_is_off_by_default_and_configurable(client, estimator):
    origin = {"Origin": "https://example.org"}
    assert "access-control-allow-origin" not in client.get("/v1/models", headers=origin).headers
    settings = ServerSettings(cors_origins=("https://example.org",))
    with TestClient(create_app(settings, estimator=estimator)) as open_client:
        allowed = open_client.get("/v1/models", headers=origin)
    assert allowed.headers["access-control-allow-origin"] == "https://example.org"


def test_page_is_self_contained_and_documented(client):
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    # Phones offer their camera and their gallery for a plain image input (no capture).
    assert 'accept="image/*"' in html and "capture=" not in html
    assert "not stored" in html
    assert "http://" not in html.replace('"http://www.w3.org', "") and "https://" not in html
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    assert "https://" not in client.get("/static/app.js").text
    docs = client.get("/docs")
    assert docs.status_code == 200 and "https://" not in docs.text  # no CDN: works offline
    assert client.get("/static/docs/swagger-ui-bundle.js").status_code == 200
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/estimate"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert {"413", "415", "422"} <= set(schema["paths"]["/v1/gate"]["post"]["responses"])


def test_a_camera_session_keeps_each_persons_track_across_frames(client, astronaut):
    frames = []
    for shift in (0, 6, 12, 18):
        moved = np.roll(astronaut, shift, axis=1)
        frames.append(encode(Image.fromarray(moved), quality=90))
    answers = [
        client.post(
            "/v1/stream",
            params={"session": "camera-test-1", "over": 18},
            content=frame,
            headers={"content-type": "image/jpeg"},
        ).json()
        for frame in frames
    ]
    assert [a["frame"] for a in answers] == [0, 1, 2, 3]
    assert {face["track"] for a in answers for face in a["faces"]} == {1}
    last = answers[-1]["faces"][0]
    assert last["age"] is not None and last["decision"] in ("pass", "refer")
    # Another session starts its own tracks.
    other = client.post(
        "/v1/stream",
        params={"session": "camera-test-2"},
        content=frames[0],
        headers={"content-type": "image/jpeg"},
    ).json()
    assert other["frame"] == 0 and "decision" not in other["faces"][0]


def test_a_camera_frame_that_comes_while_the_last_is_read_is_dropped_at_once(
    client, astronaut_jpeg
):
    def send() -> dict:
        return client.post(
            "/v1/stream",
            params={"session": "camera-late-1"},
            content=astronaut_jpeg,
            headers={"content-type": "image/jpeg"},
        ).json()

    first = send()
    assert first["frame"] == 0 and first["dropped"] == 0 and not first["late"]
    session = client.app.state.sessions.get("camera-late-1")
    with session.lock:  # the session is still reading an earlier frame
        late = [send(), send()]
    assert [a["late"] for a in late] == [True, True] and late[-1]["dropped"] == 2
    assert all(a["faces"] == [] and "frame" not in a for a in late)
    after = send()
    assert after["frame"] == 1 and after["dropped"] == 2 and after["faces"]


@pytest.mark.parametrize("session", ["short", "has space in it", "x" * 65, "../../etc"])
def test_a_bad_session_id_is_refused(client, astronaut_jpeg, session):
    answer = client.post(
        "/v1/stream",
        params={"session": session},
        content=astronaut_jpeg,
        headers={"content-type": "image/jpeg"},
    )
    assert answer.status_code == 422 and "session" in answer.json()["error"]
