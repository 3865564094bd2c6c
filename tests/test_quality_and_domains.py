"""The quality check on made faces, the domain suite's pictures, and fitting across domains."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from agelens import Decision
from agelens.batch import EstimatorPool
from agelens.data.datasets import read_dataset
from agelens.decisions import calibration
from agelens.decisions.gate_fit import choose_policy_domains
from agelens.decisions.quality import QualityClass, QualityLimits
from agelens.evaluation.domain_suite import score_suite
from agelens.evaluation.domains import DOMAINS, EYES_PER_WIDTH, degrade
from agelens.pipeline.quality import measure

AGES = [0.25, *range(1, 81)]


def _reasons(estimator, image: np.ndarray) -> list[str]:
    (face,) = estimator.estimate(image)
    return QualityLimits().reasons(face.quality)


def test_a_clear_frontal_face_can_be_judged(estimator, astronaut):
    assert _reasons(estimator, astronaut) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda im: im.resize((160, 160), Image.Resampling.BOX), "face too small"),
        (lambda im: im.filter(ImageFilter.GaussianBlur(5)), "face blurred"),
        (lambda im: Image.eval(im, lambda v: v // 7), "face too dark"),
        (lambda im: im.rotate(50, resample=Image.Resampling.BILINEAR), "face turned"),
        (lambda im: im.convert("L").convert("RGB"), "no colour"),
    ],
    ids=["small", "blurred", "dark", "tilted", "grey"],
)
def test_faces_that_cannot_be_judged_are_named(estimator, astronaut, change, expected):
    image = np.asarray(change(Image.fromarray(astronaut)))
    reasons = _reasons(estimator, image)
    assert any(reason.startswith(expected) for reason in reasons), reasons


def test_a_face_turned_aside_reads_as_yaw(astronaut):
    frontal = [(255.0, 104.0), (238.0, 105.0), (195.0, 101.0), (212.0, 103.0), (224.0, 135.0)]
    profile = [*frontal[:4], (246.0, 133.0)]  # the nose under one eye
    assert measure(astronaut, frontal).yaw < 0.1
    turned = measure(astronaut, profile)
    assert turned.yaw > QualityLimits().max_yaw
    assert any(r.startswith("face turned") for r in QualityLimits().reasons(turned))


def test_limits_round_trip_and_refuse_unknown_keys():
    limits = QualityLimits(min_eye_distance=20)
    assert QualityLimits.from_dict(limits.to_dict()) == limits
    with pytest.raises(ValueError, match="unknown quality limits"):
        QualityLimits.from_dict({"min_eyes": 3})


def test_domains_are_seeded_and_each_changes_the_face(astronaut):
    crop = astronaut[40:240, 130:330]
    for domain in DOMAINS:
        first = degrade(crop, domain, "face-1")
        assert np.array_equal(first, degrade(crop, domain, "face-1"))
        if domain != "clean":
            again = degrade(crop, domain, "face-2")
            assert first.shape != crop.shape or not np.array_equal(first, crop)
            assert first.shape != again.shape or not np.array_equal(first, again)
    with pytest.raises(ValueError, match="domain must be one of"):
        degrade(crop, "fax", "face-1")


def test_cctv_faces_have_20_to_40_pixels_between_the_eyes(astronaut):
    crop = astronaut[40:240, 130:330]
    widths = [degrade(crop, "cctv", f"face-{i}").shape[1] for i in range(30)]
    eyes = np.array(widths) * EYES_PER_WIDTH
    assert eyes.min() >= 19 and eyes.max() <= 41


def test_prints_lose_their_colour_or_turn_sepia(astronaut):
    crop = astronaut[40:240, 130:330]
    pictures = [degrade(crop, "print", f"face-{i}").astype(int) for i in range(12)]
    grey = [np.abs(p[..., 0] - p[..., 2]).mean() < 2 for p in pictures]
    sepia = [(p[..., 0] - p[..., 2]).mean() > 15 for p in pictures]
    assert all(g or s for g, s in zip(grey, sepia, strict=True)) and any(grey) and any(sepia)


def test_the_domain_suite_runs_on_a_few_faces(estimator, astronaut, tmp_path):
    rng = np.random.default_rng(4)
    for index in range(8):
        x, y = (int(v) for v in rng.integers(120, 140, 2) - (0, 90))
        crop = Image.fromarray(astronaut[y : y + 200, x : x + 200])
        crop.save(tmp_path / f"{40 + index}_1_0_2017{index:06d}.jpg.chip.jpg", quality=95)
    samples = read_dataset(f"utkface:{tmp_path}").samples
    with EstimatorPool(estimator, workers=1) as pool:
        result = score_suite(pool, {"tiny": samples})
    domains = result["domains"]["tiny"]
    assert list(domains) == list(DOMAINS)
    for figures in domains.values():
        assert figures["n"] == 8
        assert 0 <= figures["coverage90"] <= 1
        assert set(figures["gate"]) >= {"pass_13", "pass_13_17", "pass_25_plus", "n_25_plus"}
        assert figures["gate"]["pass_13_17"] is None  # no minors among these faces
    # The crops are large and sharp; the CCTV pictures of them are small.
    assert domains["cctv"]["poor_quality"] > domains["clean"]["poor_quality"]
    assert result["worst"]["mae_max"] == max(f["mae"] for f in domains.values())


def _errors(rng, n, scale):
    """Distributions centred on the truth plus an error of ``scale`` years, sd 3."""
    truth = rng.uniform(5, 70, n)
    centre = truth + rng.normal(0, scale, n)
    ages = np.asarray(AGES)
    rows = np.exp(-0.5 * ((ages[None, :] - centre[:, None]) / 3) ** 2)
    return rows / rows.sum(axis=1, keepdims=True), truth


def test_calibration_on_the_worst_domain_covers_every_domain():
    rng = np.random.default_rng(0)
    clean, clean_truth = _errors(rng, 3000, 4)
    hard, hard_truth = _errors(rng, 3000, 9)
    none = np.zeros(3000, dtype=int)
    only_clean = calibration.fit(clean, AGES, clean_truth)
    both = calibration.fit_domains(
        {"clean": (clean, clean_truth, none), "hard": (hard, hard_truth, none)}, AGES
    )
    assert both["domains"] == {"clean": 3000, "hard": 3000}

    def covered(record, rows, truth):
        return calibration.coverage(calibration.intervals(rows, AGES, record, 0.9), truth)

    fresh_hard, fresh_hard_truth = _errors(rng, 3000, 9)
    assert covered(only_clean, fresh_hard, fresh_hard_truth) < 0.8
    assert covered(both, fresh_hard, fresh_hard_truth) >= 0.88


def test_poor_quality_faces_get_multipliers_of_their_own():
    rng = np.random.default_rng(1)
    good, good_truth = _errors(rng, 2000, 3)
    poor, poor_truth = _errors(rng, 2000, 10)
    rows, truth = np.vstack([good, poor]), np.concatenate([good_truth, poor_truth])
    marked = np.where(np.arange(4000) >= 2000, QualityClass.POOR_QUALITY, QualityClass.LARGE_FACE)
    record = calibration.fit_domains({"mixed": (rows, truth, marked)}, AGES)
    assert record["poor_quality"]["quantiles"]["0.9"] > record["quantiles"]["0.9"]
    bounds = calibration.intervals(rows, AGES, record, 0.9, marked)
    inside = (truth >= bounds[:, 0]) & (truth <= bounds[:, 1])
    assert 0.87 <= inside[:2000].mean() <= 0.93 and 0.87 <= inside[2000:].mean() <= 0.93
    # A class without a table of its own takes the widest the record has.
    small = calibration.quantile_for(record, 0.9, QualityClass.SMALL_FACE)
    assert small == record["poor_quality"]["quantiles"]["0.9"]


def test_p_values_fall_away_from_the_estimate_and_match_the_intervals():
    rng = np.random.default_rng(2)
    rows, truth = _errors(rng, 2000, 5)
    record = calibration.fit(rows, AGES, truth)
    row = rows[:1]
    mean = float(calibration.moments(row, AGES)[0][0])
    claims = mean + np.array([0.0, 5, 10, 20, 40])
    values = calibration.p_values(np.repeat(row, 5, axis=0), AGES, record, claims)
    assert values[0] == pytest.approx(1.0) and np.all(np.diff(values) <= 0)
    high = calibration.intervals(row, AGES, record, 0.9)[0, 1]
    inside = calibration.p_values(row, AGES, record, np.array([high - 0.01]))[0]
    outside = calibration.p_values(row, AGES, record, np.array([high + 0.5]))[0]
    assert inside >= 0.1 > outside


def test_the_gate_is_fitted_on_its_worst_domain():
    rng = np.random.default_rng(3)
    truth = rng.uniform(10, 70, 6000)
    judged = np.ones(6000, dtype=bool)
    clean = truth + rng.normal(0, 3, 6000)
    older = truth + 6 + rng.normal(0, 3, 6000)  # a domain that reads everyone older
    domains = {"clean": (clean, clean, truth, judged), "older": (older, older, truth, judged)}
    policy = choose_policy_domains(domains)
    assert policy["domains"]["older"]["pass_13_17"] <= 0.02
    assert policy["domains"]["clean"]["pass_13_17"] < policy["domains"]["older"]["pass_13_17"]
    assert policy["val_pass_13_17"] == policy["domains"]["older"]["pass_13_17"]
    alone = choose_policy_domains({"clean": domains["clean"]})
    assert alone["buffer"] < policy["buffer"]
    # Faces the quality check refers never pass, so they need no buffer.
    unjudged = {"older": (older, older, truth, truth >= 25), "clean": domains["clean"]}
    assert choose_policy_domains(unjudged)["buffer"] < policy["buffer"]


def test_a_face_that_cannot_be_judged_is_referred_whatever_its_age(estimator, astronaut):
    grey = np.asarray(Image.fromarray(astronaut).convert("L").convert("RGB"))
    result = estimator.gate(grey, over=18, buffer=0)
    assert result.decision is Decision.REFER
    assert result.reasons[0][0].startswith("no colour")
    assert estimator.gate(astronaut, over=18, buffer=0).decision is Decision.PASS


def test_a_domain_unlike_the_others_raises_the_level_the_fit_is_taken_at():
    rng = np.random.default_rng(6)
    none = np.zeros(2000, dtype=int)
    alike = {name: (*_errors(rng, 2000, 5), none) for name in ("a", "b", "c")}
    record = calibration.fit_domains(alike, AGES)
    assert record["unseen_domain"]["target"] <= 0.91
    assert min(record["unseen_domain"]["coverage"].values()) >= 0.9
    # A domain a little unlike the rest is not covered when left out: the margin rises.
    unlike = {**alike, "d": (*_errors(rng, 2000, 5.4), none)}
    raised = calibration.fit_domains(unlike, AGES)
    assert raised["unseen_domain"]["target"] > record["unseen_domain"]["target"]
    assert raised["quantiles"]["0.9"] > record["quantiles"]["0.9"]
    # One far harder than the rest: raising the margin would over-cover the others.
    far = calibration.fit_domains({**alike, "d": (*_errors(rng, 2000, 10), none)}, AGES)
    assert far["unseen_domain"]["target"] == 0.9
