"""``agelens video`` and the tracker on clips made from still photos, whose truth is known."""

from __future__ import annotations

import csv
import itertools
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

av = pytest.importorskip("av")

from agelens.cli.main import app  # noqa: E402
from agelens.estimator import AgeEstimator  # noqa: E402
from agelens.pipeline.network import LIGHT_GAINS  # noqa: E402
from agelens.video import AgeTracker, VideoError, read_frames  # noqa: E402
from agelens.video.frames import Frame, LatestFrames  # noqa: E402
from agelens.video.reads import SETTLING_SECONDS, ReadBudget  # noqa: E402
from tools.make_test_clip import make_clip, sample_faces  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, list[list[dict]]]:
    """Three people for 3 s at 25 fps: two cross, one walks out and comes back."""
    path = tmp_path_factory.mktemp("clips") / "people.mp4"
    truth = make_clip(path, sample_faces(), seconds=3, size=(480, 270), fps=25)
    return path, truth


def _centre_inside(box: list[float], truth_box: list[float]) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return truth_box[0] <= cx <= truth_box[2] and truth_box[1] <= cy <= truth_box[3]


def test_each_person_keeps_one_track_and_one_steady_age(clip, tmp_path: Path):
    path, truth = clip
    frames_file, table = tmp_path / "frames.jsonl", tmp_path / "people.csv"
    arguments = ["video", str(path), "--json", "--frames", str(frames_file), "--csv", str(table)]
    result = runner.invoke(app, [*arguments, "--over", "18", "--out", str(tmp_path / "a.mp4")])
    assert result.exit_code == 0, result.output
    people = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(people) == 3
    assert set(people[0]) == {
        "track", "first_frame", "last_frame", "frames", "age", "interval", "label", "group",
        "decision",
    }  # fmt: skip
    rows = [json.loads(line) for line in frames_file.read_text().splitlines()]
    assert set(rows[0]) == {"frame", "time", "track", "box", "age", "interval", "frame_age"}
    # Each true person: the share of their visible frames held by their most common track.
    for person in (1, 2, 3):
        tracks = []
        for index, boxes in enumerate(truth):
            for true in boxes:
                if true["person"] == person and true["hidden"] <= 0.5:
                    tracks += [
                        r["track"]
                        for r in rows
                        if r["frame"] == index and _centre_inside(r["box"], true["box"])
                    ]
        assert tracks, person
        kept = max(tracks.count(t) for t in set(tracks)) / len(tracks)
        assert kept >= 0.8, (person, kept)
    # The shown age settles: after the first second it moves little from frame to frame,
    # far less than the estimates of the frames read.
    for track in {r["track"] for r in rows}:
        mine = [r for r in rows if r["track"] == track and r["time"] >= 1.0]
        shown = np.array([r["age"] for r in mine])
        own = np.array([r["frame_age"] for r in mine if r["frame_age"] is not None])
        if len(shown) > 5:
            assert np.abs(np.diff(shown)).mean() < 0.3
            assert np.abs(np.diff(shown)).mean() < np.abs(np.diff(own)).mean()
    assert len(table.read_text().splitlines()) == 4
    annotated = av.open(str(tmp_path / "a.mp4"))
    assert annotated.streams.video[0].frames == len(truth)


def test_the_interval_narrows_only_as_far_as_frames_are_different_views(clip):
    path, _ = clip
    estimator = AgeEstimator()
    tracker = AgeTracker(estimator)
    widths: dict[int, list[float]] = {}
    for frame in read_frames(str(path)):
        for face in tracker.update(frame):
            low, high = face.interval
            widths.setdefault(face.track, []).append(high - low)
    for series in widths.values():
        # Never below sqrt(shared share) of the first frame's, however many frames.
        assert min(series) >= 0.85 * series[0] * 0.9


def test_a_bundles_fitted_video_scale_widens_each_tracks_interval(clip, monkeypatch):
    estimator = AgeEstimator()
    frames = list(read_frames(str(clip[0])))[:10]

    def last_shown(scale: float):
        calibration = {
            **estimator.bundle.manifest["calibration"],
            "video": {"interval_scale": scale},
        }
        monkeypatch.setitem(estimator.bundle.manifest, "calibration", calibration)
        tracker = AgeTracker(estimator)
        for frame in frames:
            shown = tracker.update(frame)
        return min(shown, key=lambda face: face.track)

    one, two = last_shown(1.0), last_shown(2.0)
    assert two.age == pytest.approx(one.age)
    assert two.interval[1] - two.age == pytest.approx(2 * (one.interval[1] - one.age))
    assert two.age - two.interval[0] == pytest.approx(2 * (one.age - one.interval[0]))


def test_every_nth_frame_tracks_on_every_frame(clip):
    path, _ = clip
    result = runner.invoke(app, ["video", str(path), "--json", "--every", "5"])
    assert result.exit_code == 0, result.output
    people = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(people) == 3 and all(p["age"] is not None for p in people)


def _cut(path: Path, out: Path) -> Path:
    out.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])
    return out


def _audio_only(out: Path) -> Path:
    with av.open(str(out), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
    return out


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda clip, tmp: (tmp / "notes.mp4").write_text("not a video") and tmp / "notes.mp4",
         "not a video"),
        (lambda clip, tmp: _audio_only(tmp / "sound.wav"), "no video stream"),
        (lambda clip, tmp: _cut(clip, tmp / "cut.mp4"), ""),
        (lambda clip, tmp: tmp / "missing.mp4", "no such file"),
    ],
    ids=["text", "audio only", "truncated", "missing"],
)  # fmt: skip
def test_a_bad_video_gets_a_clear_error_and_a_non_zero_exit(clip, tmp_path, make, words):
    path = make(clip[0], tmp_path)
    result = runner.invoke(app, ["video", str(path), "--json"])
    assert result.exit_code != 0 or "cut or corrupt" in result.output
    assert "Traceback" not in result.output and words in " ".join(result.output.split())


def test_frames_too_large_are_refused(clip):
    with pytest.raises(VideoError, match="over the limit"):
        next(read_frames(str(clip[0]), max_pixels=1000))


def test_a_new_track_is_read_every_frame_then_a_few_times_a_second():
    budget = ReadBudget(reads_per_second=2)
    reads = []
    for frame in range(100):  # 4 s at 25 fps
        time = frame / 25
        if budget.due(7, time):
            reads.append((frame, budget.gains(7)))
            budget.read(7, time)
    frames = [frame for frame, _ in reads]
    dense = round(SETTLING_SECONDS * 25)
    assert frames[:dense] == list(range(dense))
    later = np.diff(frames[dense - 1 :])
    assert later.min() >= 12 and later.max() <= 13  # 2 a second at 25 fps
    assert [gains for _, gains in reads[:6]] == [(g,) for g in LIGHT_GAINS] * 2
    assert ReadBudget(every_light=True).gains(7) == LIGHT_GAINS
    budget.forget(7)
    assert budget.due(7, 4.0) and budget.gains(7) == (LIGHT_GAINS[0],)
    with pytest.raises(ValueError, match="above 0"):
        ReadBudget(reads_per_second=0)


def test_the_tracker_reads_each_face_as_its_budget_says(clip, estimator):
    path, truth = clip
    seconds = len(truth) / 25
    for budget, most in (
        (ReadBudget(reads_per_second=2), 25 * SETTLING_SECONDS + 2 * seconds + 1),
        (ReadBudget(math.inf, every_light=True), len(truth)),
    ):
        tracker = AgeTracker(estimator, budget=budget)
        rows = [face for frame in read_frames(str(path)) for face in tracker.update(frame)]
        by_track: dict[int, list] = {}
        for row in rows:
            by_track.setdefault(row.track, []).append(row)
        for mine in by_track.values():
            read = sum(row.frame_age is not None for row in mine)
            assert read <= most
            if math.isinf(budget.reads_per_second):
                assert read == len(mine)  # every frame the face is seen
        assert all(person.age is not None for person in tracker.finish())


def test_a_live_source_faster_than_the_machine_never_falls_behind(clip, estimator):
    """Frames sent at twice the rate the tracker reads them: the newest is taken each
    time, the rest are dropped and counted, and no answer is over a second late."""
    (first, *_) = list(itertools.islice(read_frames(str(clip[0])), 1))
    # Every face of every frame read at six copies: a cost that stays the same.
    tracker = AgeTracker(estimator, budget=ReadBudget(math.inf, every_light=True))
    tracker.update(Frame(0, 0.0, first.image))
    started = time.perf_counter()
    for index in range(1, 9):
        tracker.update(Frame(index, index / 25, first.image))
    cost = (time.perf_counter() - started) / 8
    sent: dict[int, float] = {}

    def camera() -> Iterator[Frame]:
        index = 0
        while time.perf_counter() - started < 3 * cost + 2.0:
            sent[index] = time.perf_counter()
            yield Frame(index, sent[index] - started, first.image)
            index += 1
            time.sleep(cost / 2)

    latest = LatestFrames(camera())
    late, done = [], 0
    for frame in latest:
        tracker.update(frame)
        late.append(time.perf_counter() - sent[frame.index])
        done += 1
    assert latest.received == len(sent) and latest.dropped + done == len(sent)
    assert latest.dropped >= len(sent) / 4 and done >= 2
    assert max(late) < 1.0


def test_a_live_source_that_fails_fails_in_the_caller():
    def broken() -> Iterator[Frame]:
        yield Frame(0, 0.0, np.zeros((8, 8, 3), np.uint8))
        raise VideoError("the stream stalled")

    with pytest.raises(VideoError, match="stalled"):
        list(LatestFrames(broken()))


def test_the_command_line_reports_what_a_live_reading_dropped(clip):
    path, truth = clip
    result = runner.invoke(app, ["video", str(path), "--json", "--live"])
    assert result.exit_code == 0, result.output
    *people, summary = [json.loads(line) for line in result.stdout.splitlines()]
    assert people and all("track" in person for person in people)
    assert summary["live"]["frames_received"] == len(truth)
    assert 0 <= summary["live"]["frames_dropped"] < len(truth)
    plain = runner.invoke(app, ["video", str(path), "--json"])
    assert all("live" not in json.loads(line) for line in plain.stdout.splitlines())


def test_bad_options_are_usage_errors(clip):
    assert runner.invoke(app, ["video", str(clip[0]), "--every", "0"]).exit_code == 2
    assert runner.invoke(app, ["video", str(clip[0]), "--reads-per-second", "0"]).exit_code == 2
    assert runner.invoke(app, ["video", str(clip[0]), "--buffer", "7"]).exit_code == 2


def test_the_api_takes_a_short_clip_and_answers_as_the_cli(clip, estimator):
    from fastapi.testclient import TestClient

    from agelens.server import ServerSettings, create_app

    path, _ = clip
    data = path.read_bytes()
    with TestClient(create_app(ServerSettings(), estimator=estimator)) as client:
        answer = client.post("/v1/video", files={"file": ("c.mp4", data, "video/mp4")})
        assert answer.status_code == 200, answer.text
        people = answer.json()["people"]
        cli = runner.invoke(app, ["video", str(path), "--json"]).stdout.splitlines()
        assert people == [json.loads(line) for line in cli]
        raw = client.post("/v1/video", content=data, headers={"content-type": "video/mp4"})
        assert raw.status_code == 200
        dense = client.post(
            "/v1/video",
            params={"reads_per_second": 12.5},
            content=data,
            headers={"content-type": "video/mp4"},
        ).json()["people"]
        cli = runner.invoke(app, ["video", str(path), "--json", "--reads-per-second", "12.5"])
        assert dense == [json.loads(line) for line in cli.stdout.splitlines()] != people
        for value in ("0", "nan", "x"):
            refused = client.post(
                "/v1/video",
                params={"reads_per_second": value},
                content=data,
                headers={"content-type": "video/mp4"},
            )
            assert refused.status_code == 422, value
        bad = {
            "text": (b"not a video at all", 415),
            "cut": (data[: len(data) // 3], 415),
        }
        for name, (body, status) in bad.items():
            answer = client.post("/v1/video", content=body, headers={"content-type": "video/mp4"})
            assert answer.status_code == status, (name, answer.text)
            assert answer.json()["error"]
        assert client.get("/healthz").status_code == 200


def test_the_python_api_iterates_a_video(clip, estimator):
    frames = list(estimator.video(str(clip[0]), every=2))
    assert len(frames) == len(clip[1]) and {f.track for faces in frames for f in faces} == {1, 2, 3}


def test_a_variable_frame_rate_gives_each_frame_its_own_time(tmp_path: Path):
    from fractions import Fraction

    stamps = [0, 40, 80, 200, 240, 500, 540]  # milliseconds: gaps of 40, 120 and 260
    path = tmp_path / "vfr.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for stamp in stamps:
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = stamp, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    assert [round(f.time * 1000) for f in read_frames(str(path))] == stamps


def test_standard_input_reads_an_mp4_whole_and_streams_a_long_input(clip, tmp_path, monkeypatch):
    from agelens.cli import video as video_command

    path, _ = clip
    whole = runner.invoke(app, ["video", "-", "--json"], input=path.read_bytes())
    assert whole.exit_code == 0, whole.output
    assert len(whole.stdout.splitlines()) == 3  # an MP4's index comes last: read whole
    # Past the size read whole, the input is decoded as it comes (a stream format).
    streamed_clip = tmp_path / "people.mkv"
    make_clip(streamed_clip, sample_faces(), seconds=2, size=(480, 270), fps=25)
    monkeypatch.setattr(video_command, "STDIN_WHOLE_BYTES", 1000)
    streamed = runner.invoke(app, ["video", "-", "--json"], input=streamed_clip.read_bytes())
    assert streamed.exit_code == 0, streamed.output
    assert len(streamed.stdout.splitlines()) >= 2


def test_a_phone_video_is_turned_upright(tmp_path: Path):
    upright_path = tmp_path / "upright.mp4"
    make_clip(upright_path, sample_faces(), seconds=0.2, size=(320, 180))
    upright = next(read_frames(str(upright_path))).image.astype(int)
    for degrees in (90, 180, 270):
        path = tmp_path / f"turned{degrees}.mp4"
        make_clip(path, sample_faces(), seconds=0.2, size=(320, 180), turned=degrees)
        with av.open(str(path)) as container:
            stored = next(container.decode(video=0)).to_ndarray(format="rgb24").astype(int)
        shown = next(read_frames(str(path))).image.astype(int)
        assert shown.shape == upright.shape
        assert np.abs(shown - upright).mean() < 3  # the same picture, but for compression
        if degrees == 180:  # stored upside down: far from the upright picture
            assert np.abs(stored - upright).mean() > 10
        else:
            assert stored.shape == (320, 180, 3)


def test_a_stream_that_stalls_is_given_up_with_a_clear_error(tmp_path: Path):
    import http.server
    import socketserver
    import threading
    import time

    path = tmp_path / "people.mkv"
    make_clip(path, sample_faces(), seconds=1, size=(320, 180))
    data, done = path.read_bytes(), threading.Event()

    class Stalling(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # half the video, then nothing
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            done.wait(30)

        def log_message(self, *args: object) -> None:
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Stalling)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/people.mkv"
        started = time.monotonic()
        result = runner.invoke(app, ["video", url, "--json", "--timeout", "1"])
        assert time.monotonic() - started < 10
        assert result.exit_code != 0 and "stalled: nothing for 1 s" in result.output
        assert "Traceback" not in result.output
    finally:
        done.set()
        server.shutdown()
        server.server_close()


def test_an_endless_stream_is_tracked_as_it_comes_in_bounded_memory(tmp_path: Path, estimator):
    import os
    import threading

    import psutil

    path = tmp_path / "people.mkv"
    make_clip(path, sample_faces(), seconds=1, size=(320, 180))
    pictures = [frame.image for frame in read_frames(str(path))]
    read_end, write_end = os.pipe()
    stop = threading.Event()

    def endless() -> None:
        """The clip again and again into the pipe, as MPEG-TS, until the test stops."""
        try:
            with os.fdopen(write_end, "wb") as pipe, av.open(pipe, "w", format="mpegts") as out:
                stream = out.add_stream("mpeg4", rate=25)
                stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
                index = 0
                while not stop.is_set():
                    picture = pictures[index % len(pictures)]
                    out.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
                    index += 1
        except (OSError, av.FFmpegError):
            pass  # the reader closed the pipe

    writer = threading.Thread(target=endless, daemon=True)
    writer.start()
    tracker, process, resident = AgeTracker(estimator, every=10), psutil.Process(), []
    with os.fdopen(read_end, "rb") as pipe:
        for frame in read_frames(pipe):
            tracker.update(frame)
            if frame.index % 100 == 0:
                resident.append(process.memory_info().rss)
            if frame.index == 700:
                break
        stop.set()
    writer.join(10)
    # 700 frames held would take 120 MB; streamed, the process hardly grows.
    assert resident[-1] - resident[1] < 40 * 2**20
    # The clip restarts every second, so people jump back: a track waits 4 s for its
    # person and then ends, giving back its pooled state.
    assert len(tracker.tracker.tracks) <= 3 * (1 + 4 + 1)
    assert set(tracker.ages) <= {track.number for track in tracker.tracker.tracks}


def test_each_person_gets_an_apparent_gender_pooled_over_their_track(clip, tmp_path: Path):
    path, _ = clip
    frames_file, table = tmp_path / "frames.jsonl", tmp_path / "people.csv"
    arguments = ["video", str(path), "--json", "--gender", "--frames", str(frames_file)]
    result = runner.invoke(app, [*arguments, "--csv", str(table)])
    assert result.exit_code == 0, result.output
    people = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(set(person["gender"]) == {"label", "probability", "probabilities"}
               for person in people if person["age"] is not None)  # fmt: skip
    # Two of the three people are the astronaut (once mirrored): a woman in her forties,
    # whom small, compressed frames may leave uncertain, but never called male.
    labels = [person["gender"]["label"] for person in people]
    likelier = [max(p["gender"]["probabilities"].items(), key=lambda kv: kv[1])[0] for p in people]
    assert likelier.count("female") >= 2, people
    rows = [json.loads(line) for line in frames_file.read_text().splitlines()]
    assert all("gender" in row for row in rows if row["age"] is not None)
    assert not any("race" in key or "ethnic" in key for row in rows for key in row)
    csv_rows = list(csv.DictReader(table.open()))
    assert [row["gender"] for row in csv_rows] == labels
    plain = runner.invoke(app, ["video", str(path), "--json"])
    assert all("gender" not in json.loads(line) for line in plain.stdout.splitlines())
    refused = runner.invoke(app, ["video", str(path), "--gender", "--gender-model", "cydral-v1"])
    assert refused.exit_code == 2 and "gender" in refused.output
