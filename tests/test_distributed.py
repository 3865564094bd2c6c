"""The Ray engine on a local Ray: same rows as the local pool, errors as rows, a killed
actor costing nothing, and resuming. CI runs these on one machine, without a cluster."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from agelens.batch import collect_images, estimate_files  # noqa: E402
from agelens.distributed import job  # noqa: E402
from agelens.estimator import AgeEstimator  # noqa: E402
from agelens.records import flat_rows  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut, grace_hopper_path) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(astronaut).save(folder / "astronaut.png")
    (folder / "hopper.jpg").write_bytes(grace_hopper_path.read_bytes())
    Image.new("RGB", (320, 240), (128, 128, 128)).save(folder / "wall.jpg")
    (folder / "notes.jpg").write_text("not a photo")
    (folder / "sub").mkdir()
    Image.fromarray(astronaut[:, ::-1]).save(folder / "sub" / "mirrored.webp")
    return folder


def _run(source: Path | str, out: Path, resume: bool = False, on_images=None, **options) -> int:
    return job.run(
        str(source),
        out,
        address=None,
        actors=options.pop("actors", 2),
        resume=resume,
        model="cydral-v1",
        aligned=False,
        on_start=lambda todo, done: None,
        on_images=on_images or (lambda n: None),
        **options,
    )


def _lit_copies(folder: Path, astronaut, count: int, step: int) -> Path:
    """``count`` distinct photos: the astronaut lit at 0.6 + index / ``step``."""
    folder.mkdir()
    for index in range(count):
        lit = (astronaut * (0.6 + index / step)).clip(0, 255).astype(np.uint8)
        Image.fromarray(lit).save(folder / f"{index:03d}.jpg")
    return folder


def _rows(out: Path) -> list[dict]:
    if out.suffix == ".jsonl":
        return [json.loads(line) for line in out.read_text().splitlines()]
    import pyarrow.parquet as pq

    return pq.read_table(out).to_pylist()


def _by_image(rows: list[dict]) -> dict[tuple[str, int], dict]:
    keyed = {(row["image"], row["face"]): row for row in rows}
    assert len(keyed) == len(rows), "a row was written twice"
    return keyed


def test_rows_equal_the_local_pools_for_the_same_files(photos: Path, tmp_path: Path):
    out = tmp_path / "ages.parquet"
    failed = _run(photos, out, groups="decades")
    estimator = AgeEstimator(groups="decades")
    local = estimate_files(estimator, collect_images([photos]))
    names = list(estimator.groups.labels)
    expected = [row for r in local for row in flat_rows(str(r.path), r.faces, r.error, names)]
    assert _by_image(_rows(out)) == _by_image(expected)
    assert failed == 1  # notes.jpg: its row carries the error, the job goes on
    (notes,) = [row for row in expected if row["image"].endswith("notes.jpg")]
    assert notes["face"] == 0 and "not an image" in notes["error"]


def test_a_list_file_and_a_glob_name_the_same_images(photos: Path, tmp_path: Path):
    listed = tmp_path / "list.txt"
    listed.write_text(f"{photos / 'hopper.jpg'}\n\n{photos / 'missing.jpg'}\n")
    assert job.list_images(str(listed)) == [str(photos / "hopper.jpg"), str(photos / "missing.jpg")]
    assert job.list_images(str(photos / "*.jpg")) == sorted(str(p) for p in photos.glob("*.jpg"))
    out = tmp_path / "ages.jsonl"
    assert _run(listed, out) == 1
    rows = {row["image"]: row for row in _rows(out)}
    assert rows[str(photos / "missing.jpg")]["error"] == "no such file"


def test_resume_after_an_interruption_writes_every_image_once(photos: Path, tmp_path: Path):
    out = tmp_path / "ages.jsonl"
    _run(photos, out)
    complete = _by_image(_rows(out))
    # Interrupted: the last row cut half way.
    text = out.read_bytes()
    out.write_bytes(text[: len(text) - 40])
    with pytest.raises(FileExistsError):
        _run(photos, out)
    _run(photos, out, resume=True)
    assert _by_image(_rows(out)) == complete


def test_a_parquet_output_resumes_from_its_whole_parts(photos: Path, tmp_path: Path):
    import pyarrow.parquet as pq

    out = tmp_path / "ages.parquet"
    _run(photos, out)
    complete = _by_image(_rows(out))
    parts = sorted(out.glob("part-*.parquet"))
    # Interrupted: the last part never renamed into place, a temporary file left behind.
    parts[-1].rename(out / f".{parts[-1].name}.tmp")
    kept = sum(len(pq.read_table(part)) for part in parts[:-1])
    assert kept < len(complete)
    _run(photos, out, resume=True)
    assert _by_image(_rows(out)) == complete
    assert not list(out.glob(".*.tmp"))
    # Nothing left to do, but notes.jpg's row still carries its error: the count says so.
    assert _run(photos, out, resume=True) == 1


def test_a_killed_actor_loses_no_image_and_writes_none_twice(astronaut, tmp_path: Path):
    folder = _lit_copies(tmp_path / "many", astronaut, 480, 400)
    out = tmp_path / "ages.parquet"
    written = [0]
    killed: list[tuple[int, int]] = []  # (pid, rows written when it was killed)
    run_started = time.time()

    def this_runs_actors() -> list[psutil.Process]:
        """Live estimator actors started by this run, not an earlier test's leftovers."""
        found = []
        for process in psutil.process_iter(["pid", "cmdline", "create_time"]):
            if "EstimatorActor" in " ".join(process.info["cmdline"] or []) and (
                process.info["create_time"] >= run_started - 1
            ):
                found.append(process)
        return found

    def kill_an_actor() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not this_runs_actors():
            time.sleep(0.1)
        # Mid-run: once the first rows are in, or the actors have had 6 s (time to load
        # the model and start on 480 images), whichever comes first.
        started = time.monotonic()
        while time.monotonic() < min(deadline, started + 6) and written[0] == 0:
            time.sleep(0.01)
        for actor in this_runs_actors():
            try:
                actor.send_signal(signal.SIGKILL)
                actor.wait(timeout=10)
            except psutil.NoSuchProcess:
                continue  # gone before the signal: try the next one
            killed.append((actor.pid, written[0]))
            return

    def count(images: int) -> None:
        written[0] += images

    killer = threading.Thread(target=kill_an_actor)
    killer.start()
    started = time.monotonic()
    # Batches of 8: rows stream back early, and much is left to do when the actor dies.
    _run(folder, out, actors=2, on_images=count, batch_size=8)
    killer.join()
    assert killed, "no actor of this run was killed"
    pid, rows_by_then = killed[0]
    assert rows_by_then < 480, f"the actor was killed after the run had finished ({killed})"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert time.monotonic() - started < 300
    rows = _by_image(_rows(out))  # no (image, face) twice
    assert {image for image, _ in rows} == {str(p) for p in folder.glob("*.jpg")}
    assert all(row["error"] is None for row in rows.values())


def test_ctrl_c_stops_a_ray_run_soon_leaving_whole_parts_and_says_how_to_resume(
    astronaut, tmp_path: Path
):
    folder = _lit_copies(tmp_path / "many", astronaut, 600, 1000)
    out = tmp_path / "ages.parquet"
    command = [sys.executable, "-m", "agelens", "predict", str(folder), "--engine", "ray"]
    # A terminal's Ctrl-C: SIGINT with its default action (a shell's `&` would ignore it).
    driver = subprocess.Popen(
        [*command, "--out", str(out), "--actors", "1"],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not list(out.glob("part-*.parquet")):
        time.sleep(0.2)
    assert list(out.glob("part-*.parquet")), "no rows were written in 3 minutes"
    driver.send_signal(signal.SIGINT)
    stopped = time.monotonic()
    _, stderr = driver.communicate(timeout=60)
    assert time.monotonic() - stopped < 15, "Ctrl-C took too long to stop the run"
    assert driver.returncode == 130, stderr
    assert "--resume" in " ".join(stderr.split())
    kept = _by_image(_rows(out))
    assert 0 < len({image for image, _ in kept}) < 600  # stopped mid-run, parts readable
    resumed = subprocess.run(
        [*command, "--out", str(out), "--resume"], capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    rows = _by_image(_rows(out))
    assert {image for image, _ in rows} == {str(p) for p in folder.glob("*.jpg")}


def test_a_removed_part_and_a_resume_never_overwrite_another_part(photos: Path, tmp_path: Path):
    out = tmp_path / "ages.parquet"
    _run(photos, out, batch_size=1)
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) >= 3
    parts[0].unlink()  # removed by hand: its images are estimated again
    kept = {part.name: part.read_bytes() for part in parts[1:]}
    _run(photos, out, resume=True, batch_size=1)
    assert {p.name: p.read_bytes() for p in out.glob("part-*.parquet") if p.name in kept} == kept
    rows = _by_image(_rows(out))
    assert {image for image, _ in rows} == {str(p) for p in job.list_images(str(photos))}


def test_a_second_job_on_the_same_output_is_refused(photos: Path, tmp_path: Path):
    from agelens.distributed.output import OutputInUseError, lock_output

    for out in (tmp_path / "ages.parquet", tmp_path / "ages.jsonl"):
        with lock_output(out), pytest.raises(OutputInUseError, match="another run"):
            _run(photos, out)
        _run(photos, out)  # once the first has finished, the output is free


def test_resume_with_a_relative_glob_redoes_nothing(photos: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(photos.parent)
    pattern = f"./{photos.name}/*.jpg"
    expected = {f"{photos.name}/{p.name}" for p in photos.glob("*.jpg")}
    for out in (tmp_path / "ages.parquet", tmp_path / "ages.jsonl"):
        _run(pattern, out)
        started: list[tuple[int, int]] = []
        job.run(
            pattern,
            out,
            address=None,
            actors=1,
            resume=True,
            model="cydral-v1",
            aligned=False,
            on_start=lambda todo, done, seen=started: seen.append((todo, done)),
            on_images=lambda n: None,
        )
        # JSON lines redo their last image, which may have been cut; Parquet parts are whole.
        redone = 1 if out.suffix == ".jsonl" else 0
        assert started == [(redone, len(expected) - redone)]
        assert {image for image, _ in _by_image(_rows(out))} == expected


def test_a_bytes_only_dataset_names_each_row_by_its_content(astronaut):
    import hashlib
    import io

    from agelens.distributed import estimate_dataset

    encoded = []
    for index in range(200):
        buffer = io.BytesIO()
        Image.fromarray((astronaut * (0.5 + index / 400)).astype(np.uint8)).save(buffer, "JPEG")
        encoded.append(buffer.getvalue())
    rows = estimate_dataset(
        ray.data.from_items([{"bytes": data} for data in encoded]), actors=1
    ).take_all()
    names = {row["image"] for row in rows}
    assert names == {f"sha1:{hashlib.sha1(data).hexdigest()}" for data in encoded}


def test_a_bad_name_in_a_list_file_is_that_inputs_error_row(photos: Path, tmp_path: Path):
    listing = tmp_path / "list.txt"
    good = str(photos / "astronaut.png")
    listing.write_bytes(f"{good}\n".encode() + b"bad\x00name.jpg\n" + b"caf\xe9.jpg\n")
    out = tmp_path / "ages.jsonl"
    assert _run(listing, out) == 2
    rows = {row["image"]: row for row in _rows(out)}
    assert rows[good]["error"] is None
    assert rows["bad\\x00name.jpg"]["error"] and rows["caf\\udce9.jpg"]["error"]


@pytest.mark.parametrize("name", ["ages.parquet", "ages.jsonl"])
def test_resume_after_the_driver_is_killed_loses_no_row(astronaut, tmp_path: Path, name):
    folder = _lit_copies(tmp_path / "many", astronaut, 300, 800)
    out = tmp_path / name
    command = [sys.executable, "-m", "agelens", "predict", str(folder), "--engine", "ray"]
    driver = subprocess.Popen(
        [*command, "--out", str(out), "--actors", "1"], stderr=subprocess.DEVNULL
    )

    def written() -> int:
        if out.suffix == ".jsonl":
            return len(out.read_bytes().splitlines()) if out.is_file() else 0
        return len(list(out.glob("part-*.parquet"))) if out.is_dir() else 0

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and written() < 2:
        time.sleep(0.1)
    driver.kill()  # SIGKILL: no handler runs, a part or a line may be cut
    driver.wait(timeout=30)
    assert written() > 0, "nothing was written before the kill"
    _run(folder, out, resume=True)
    rows = _by_image(_rows(out))  # no (image, face) twice
    assert {image for image, _ in rows} == {str(p) for p in folder.glob("*.jpg")}
