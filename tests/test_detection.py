"""The ONNX export of YuNet agrees with yuface, the C++ build it was read from."""

from __future__ import annotations

import numpy as np
import pytest
import yuface
from PIL import Image

from agelens import ModelError
from agelens.pipeline.faces import FaceDetector


def _iou(a, b) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    return overlap / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap)


def _reference(image: np.ndarray) -> list[tuple[list[float], float, np.ndarray]]:
    scores, boxes, landmarks = yuface.detect(np.ascontiguousarray(image[:, :, ::-1]), conf=0.6)
    return [
        ([x, y, x + w, y + h], score / 100.0, marks.reshape(5, 2))
        for score, (x, y, w, h), marks in zip(
            scores.astype(float), boxes.astype(float), landmarks.astype(float), strict=True
        )
    ]


@pytest.mark.filterwarnings("ignore:Image size")  # yuface's note on a 1024-wide image
@pytest.mark.parametrize("which", ["astronaut", "grace_hopper", "two_people"])
def test_matches_yuface(which, astronaut, grace_hopper_path):
    hopper = np.asarray(Image.open(grace_hopper_path).convert("RGB"))
    images = {
        "astronaut": astronaut,
        "grace_hopper": hopper,
        "two_people": np.concatenate([astronaut, hopper[:512, :512]], axis=1),
    }
    image = np.ascontiguousarray(images[which])
    ours = FaceDetector(max_side=2048).detect(image)
    reference = _reference(image)
    assert len(ours) == len(reference) >= 1
    for box, score, marks in reference:
        match = max(ours, key=lambda face: _iou(face.box, box))
        assert _iou(match.box, box) > 0.9
        assert match.score == pytest.approx(score, abs=0.02)
        # yuface truncates coordinates to integers: a pixel or two apart at most.
        assert np.abs(np.asarray(match.landmarks) - marks).max() < 3


def test_scores_and_landmarks_are_in_range(astronaut):
    (face,) = FaceDetector().detect(astronaut)
    assert 0.6 <= face.score <= 1.0
    x1, y1, x2, y2 = face.box
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face.landmarks)


def test_min_face_and_min_score_filter(astronaut):
    assert FaceDetector(min_face=400).detect(astronaut) == []
    assert FaceDetector(min_score=1.0).detect(astronaut) == []


def test_an_age_bundle_is_not_a_detector():
    with pytest.raises(ModelError, match="face-detection"):
        FaceDetector("cydral-v1")


def test_small_faces_in_a_large_photo_are_found_by_default(astronaut):
    from PIL import Image

    from agelens.pipeline.faces import FaceDetector

    face = Image.fromarray(astronaut).crop((150, 40, 300, 220)).resize((80, 96))
    canvas = Image.new("RGB", (3000, 2000), (120, 130, 140))
    for index in range(8):
        canvas.paste(face, (200 + (index % 4) * 700, 400 + (index // 4) * 900))
    photo = np.asarray(canvas)
    assert len(FaceDetector(max_side=480).detect(photo)) == 0  # what a fixed 480 px missed
    found = FaceDetector().detect(photo)
    assert len(found) == 8 and all(f.box[2] - f.box[0] < 60 for f in found)
    assert FaceDetector().side_for(640, 480) == 480  # ordinary photos cost no more
