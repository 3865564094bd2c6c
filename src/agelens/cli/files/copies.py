"""What ``predict`` writes beside its answers: annotated copies and face crops."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from agelens.annotate import save_annotated
from agelens.batch import ImageResult
from agelens.cli.common import fail
from agelens.pipeline.chips import upright_crop

#: Side of the face crops ``--save-crops`` writes, in pixels.
CROP_SIZE = 224
#: The most bytes of a photo's name kept in a copy's name: file systems allow 255 a
#: name, and a copy adds ``_face12-3.png`` and the like.
MAX_STEM_BYTES = 150


def write_copies(
    result: ImageResult,
    annotate: Path | None,
    crops: Path | None,
    padding: float,
    written: set[Path],
) -> None:
    """The annotated copy and the face crops of one image; names are never reused in a run."""
    assert result.image is not None
    name = Path(copy_name(result.path.name))
    try:
        if annotate is not None:
            target = unused_name(annotate / name, written)
            save_annotated(result.image, result.faces, target)
        if crops is not None:
            for number, face in enumerate(result.faces, 1):
                target = unused_name(crops / f"{name.stem}_face{number}.png", written)
                crop = upright_crop(result.image, face.landmarks, CROP_SIZE, padding)
                Image.fromarray(crop).save(target)
    except OSError as error:
        raise fail(f"cannot write {error.filename} ({error.strerror})") from error


def copy_name(name: str) -> str:
    """A file name for a copy of the photo called ``name``: never empty, ``.`` or ``..``
    (a URL may end so), with a stem short enough for any file system."""
    path = Path(name)
    stem, suffix = path.stem, path.suffix
    if name in ("", ".", "..") or not stem.strip("."):
        stem, suffix = "image", ".png"
    encoded = stem.encode("utf-8", "surrogateescape")
    if len(encoded) > MAX_STEM_BYTES:
        stem = encoded[:MAX_STEM_BYTES].decode("utf-8", "ignore")
    return f"{stem}{suffix[:10]}"


def unused_name(target: Path, written: set[Path]) -> Path:
    """``target``, or ``stem-2.ext``, ``stem-3.ext``... when this run already wrote it
    (photos with one name in several folders)."""
    candidate, number = target, 1
    while candidate in written:
        number += 1
        candidate = target.with_name(f"{target.stem}-{number}{target.suffix}")
    written.add(candidate)
    return candidate


def check_output_folder(folder: Path, option: str, inputs: list[Path]) -> None:
    """Refuse, before any work, a folder that cannot be written or that holds the inputs."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise fail(f"{option} {folder}: cannot create the folder ({error.strerror})", 2) from error
    if not os.access(folder, os.W_OK | os.X_OK):
        raise fail(f"{option} {folder}: the folder is not writable", 2)
    target = folder.resolve()
    if any(path.resolve().parent == target for path in inputs):
        raise fail(
            f"{option} {folder}: the photos are in this folder and could be overwritten; "
            "choose another folder",
            2,
        )
