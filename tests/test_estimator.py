"""End to end on real faces that packages ship: detection, alignment, the network, the API."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from agelens import AgeEstimator, Decision, ModelError, load_image
from agelens.decisions.groups import IMFDB


def test_astronaut_one_face_in_her_thirties_to_fifties(estimator, astronaut):
    faces = estimator.estimate(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert 30 <= face.age <= 55
    x1, y1, x2, y2 = face.box
    assert 150 < (x1 + x2) / 2 < 300 and 50 < (y1 + y2) / 2 < 200  # her face, top centre
    low, high = face.interval
    assert low <= face.age <= high
    assert face.group in {"YOUNG", "MIDDLE"}
    assert sum(face.group_probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    # The group is the most likely one: YOUNG holds most of the mass, though the age
    # (34.5) falls in MIDDLE (31-50); both are reported, and the text says so.
    assert (
        face.group
        == "YOUNG"
        == max(face.group_probabilities, key=face.group_probabilities.__getitem__)
    )
    assert face.group_probability == face.group_probabilities["YOUNG"]
    assert face.age_group == IMFDB.group_of(face.age) == "MIDDLE"
    assert face.group_text == f"YOUNG {face.group_probability:.0%}; age in MIDDLE"
    assert len(face.landmarks) == 5


def test_grace_hopper_is_old(estimator, grace_hopper_path):
    faces = estimator.estimate(grace_hopper_path)
    assert len(faces) == 1
    assert faces[0].age >= 60
    assert faces[0].group == "OLD"


def _variants(image: np.ndarray) -> dict[str, np.ndarray]:
    pil = Image.fromarray(image)
    return {
        "rotated 15": np.asarray(pil.rotate(15, resample=Image.Resampling.BILINEAR, expand=True)),
        "rotated 30": np.asarray(pil.rotate(-30, resample=Image.Resampling.BILINEAR, expand=True)),
        "scaled 50%": np.asarray(pil.resize((pil.width // 2, pil.height // 2))),
        "darkened": np.asarray(ImageEnhance.Brightness(pil).enhance(0.45)),
    }


@pytest.mark.parametrize("variant", ["rotated 15", "rotated 30", "scaled 50%", "darkened"])
def test_variants_keep_one_face_and_a_plausible_age(
    estimator, astronaut, grace_hopper_path, variant
):
    young = estimator.estimate(_variants(astronaut)[variant])
    old = estimator.estimate(_variants(load_image(grace_hopper_path))[variant])
    assert len(young) == 1 and len(old) == 1
    assert 22 <= young[0].age <= 60
    assert old[0].age >= 55
    assert old[0].age > young[0].age + 15


def test_photos_without_faces(estimator, astronaut):
    rng = np.random.default_rng(0)
    blank = np.full((480, 640, 3), 200, dtype=np.uint8)
    noise = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    rocket = astronaut[300:, :200]  # the corner with the flag and the shuttle model
    assert estimator.estimate_many([blank, noise, rocket]) == [[], [], []]


def test_batched_results_equal_single_results(estimator, astronaut, grace_hopper_path):
    hopper = load_image(grace_hopper_path)
    batched = estimator.estimate_many([astronaut, hopper, astronaut])
    assert [len(faces) for faces in batched] == [1, 1, 1]
    assert batched[0][0].age == pytest.approx(estimator.estimate(astronaut)[0].age, abs=1e-3)
    assert batched[1][0].age == pytest.approx(estimator.estimate(hopper)[0].age, abs=1e-3)


def test_large_photo_is_downscaled_for_detection(estimator, astronaut):
    big = np.asarray(Image.fromarray(astronaut).resize((2048, 2048)))
    faces = estimator.estimate(big)
    assert len(faces) == 1
    x1, _, x2, _ = faces[0].box
    assert 600 < (x1 + x2) / 2 < 1200  # mapped back to the big image's pixels
    assert abs(faces[0].age - estimator.estimate(astronaut)[0].age) < 6


def test_aligned_crop_and_own_boxes(estimator, astronaut):
    (detected,) = estimator.estimate(astronaut)
    x1, y1, x2, y2 = (int(v) for v in detected.box)
    crop = astronaut[max(0, y1 - 20) : y2 + 10, max(0, x1 - 15) : x2 + 15]
    (aligned,) = estimator.estimate(crop, aligned=True)
    assert aligned.score is None and 25 <= aligned.age <= 60
    (boxed,) = estimator.estimate(astronaut, boxes=[[179, 83, 266, 170]])
    assert boxed.box == (179, 83, 266, 170) and 25 <= boxed.age <= 60
    with pytest.raises(ValueError, match="x2 > x1"):
        estimator.estimate(astronaut, boxes=[[10, 10, 5, 20]])


def test_distribution_on_request(estimator, astronaut):
    (face,) = estimator.estimate(astronaut, distribution=True)
    assert face.distribution is not None and face.distribution.shape == (81,)
    assert face.distribution.sum() == pytest.approx(1.0, abs=1e-4)
    record = face.to_dict(distribution=True)
    assert len(record["distribution"]) == 81 and set(record["groups"]) == {
        "CHILD",
        "YOUNG",
        "MIDDLE",
        "OLD",
    }
    assert "distribution" not in estimator.estimate(astronaut)[0].to_dict()


def test_flip_tta_changes_the_estimate_a_little(astronaut):
    plain = AgeEstimator(tta=False).estimate(astronaut)[0].age
    flipped = AgeEstimator(tta=True).estimate(astronaut)[0].age
    assert plain != flipped and abs(plain - flipped) < 5


def test_light_averages_each_face_over_its_relit_copies(estimator, astronaut):
    from agelens.pipeline.network import LIGHT_GAINS

    image = load_image(astronaut)
    chip, _ = estimator.aligner.chip(image, estimator.estimate(image)[0].box)
    chips = np.stack([chip])
    relit = [
        np.clip(chips.astype(np.float32) * gain, 0, 255).astype(np.uint8) for gain in LIGHT_GAINS
    ]
    expected = np.mean([estimator.model.distributions(c, flip=True) for c in relit], axis=0)
    found = estimator.model.distributions(chips, flip=True, gains=LIGHT_GAINS)
    np.testing.assert_allclose(found, expected, atol=1e-6)
    assert found.sum() == pytest.approx(1.0, abs=1e-4)
    assert not np.allclose(found, estimator.model.distributions(chips, flip=True), atol=1e-4)
    # Photos are read as they are; video asks for the relit copies.
    assert (
        estimator.estimate_arrays([image], gains=LIGHT_GAINS)[0][0].age
        != estimator.estimate(image)[0].age
    )


def test_other_group_schemes(astronaut):
    face = AgeEstimator(groups="13,31,51").estimate(astronaut)[0]
    assert set(face.group_probabilities) == {"0-12", "13-30", "31-50", "51+"}
    decade = AgeEstimator(groups="decades").estimate(astronaut)[0]
    assert decade.group in {"21-30", "31-40", "41-50"}


def test_gate(estimator, astronaut, grace_hopper_path):
    assert estimator.gate(astronaut, over=18, buffer=7).decision is Decision.PASS
    assert estimator.gate(astronaut, over=65, buffer=25).decision is Decision.REFER
    # Grace Hopper's photo is a scanned print with visible grain: it cannot be judged.
    grainy = estimator.gate(grace_hopper_path, over=18, buffer=7)
    assert grainy.decision is Decision.REFER and grainy.reasons[0][0].startswith("face grainy")
    blank = np.full((200, 200, 3), 90, dtype=np.uint8)
    result = estimator.gate(blank)
    assert result.decision is Decision.NO_FACE and result.decisions == []


def test_shared_between_threads(estimator, astronaut, grace_hopper_path):
    hopper = load_image(grace_hopper_path)
    expected = [estimator.estimate(astronaut)[0].age, estimator.estimate(hopper)[0].age]
    images = [astronaut, hopper] * 8
    with ThreadPoolExecutor(max_workers=4) as pool:
        ages = list(pool.map(lambda image: estimator.estimate(image)[0].age, images))
    assert ages == pytest.approx(expected * 8, abs=1e-3)


def test_unknown_model_is_a_model_error():
    with pytest.raises(ModelError, match="no model bundle") as raised:
        AgeEstimator("no-such-model")
    # Only age models are offered for an age model, never the face detector.
    assert "cydral-v1" in str(raised.value) and "yunet" not in str(raised.value)


def test_the_sample_photo_the_readme_opens_with_has_one_face(estimator):
    from pathlib import Path

    import agelens

    sample = Path(agelens.__file__).parent / "samples" / "astronaut.jpg"
    (face,) = estimator.estimate(sample)
    assert 25 <= face.age <= 55
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert '"samples" / "astronaut.jpg"' in readme.split("```")[1]  # the first command


def test_estimate_arrays_takes_views_and_refuses_an_empty_image_typed(estimator, astronaut):
    from agelens.errors import EmptyImageError

    halved = estimator.estimate_arrays([astronaut[::2, ::2]])[0]
    assert [f.age for f in halved] == [
        f.age for f in estimator.estimate_arrays([np.ascontiguousarray(astronaut[::2, ::2])])[0]
    ]
    assert len(estimator.estimate_arrays([astronaut[..., ::-1]])[0]) == 1  # BGR as a view
    with pytest.raises(EmptyImageError):
        estimator.estimate_arrays([np.zeros((0, 0, 3), np.uint8)])
