"""Group schemes, group probabilities from the distribution, intervals, and the age gate."""

from __future__ import annotations

import numpy as np
import pytest

from agelens import Decision, GatePolicy, resolve_scheme
from agelens.decisions import calibration
from agelens.decisions.gate import pass_rates
from agelens.decisions.gate_fit import _allowed, choose_policy
from agelens.decisions.groups import DECADES, IMFDB, UTK5
from agelens.models.bundles import CHALLENGE_BUFFER, Bundle, load_bundle
from agelens.pipeline.estimates import Face, summarize

AGES = [0.25, *range(1, 81)]


def test_custom_edges_are_labelled_as_ranges():
    scheme = resolve_scheme("13,31,51")
    assert scheme.labels == ("0-12", "13-30", "31-50", "51+")
    assert scheme.group_of(12.9) == "0-12" and scheme.group_of(13) == "13-30"
    assert scheme.group_of(51) == "51+"


def test_builtin_schemes():
    assert IMFDB.labels == ("CHILD", "YOUNG", "MIDDLE", "OLD")
    assert IMFDB.group_of(30) == "YOUNG" and IMFDB.group_of(31) == "MIDDLE"
    assert DECADES.labels[0] == "0-10" and DECADES.labels[-1] == "61+"
    assert DECADES.group_of(10) == "0-10" and DECADES.group_of(11) == "11-20"
    assert len(UTK5.labels) == 5


@pytest.mark.parametrize("bad", ["teens", "13,x", "-5,10"])
def test_bad_scheme_names_are_explained(bad):
    with pytest.raises(ValueError, match=r"scheme|edges|non-negative"):
        resolve_scheme(bad)


def test_group_probabilities_are_sums_over_the_distribution():
    distribution = np.zeros((1, 81), dtype=np.float32)
    distribution[0, 29] = 0.4  # YOUNG
    distribution[0, 32] = 0.6  # MIDDLE
    summary = summarize(distribution, AGES, IMFDB)
    assert summary.group_probabilities[0] == pytest.approx([0, 0.4, 0.6, 0])
    # The point estimate (30.8) is YOUNG, but the most probable group is MIDDLE.
    assert summary.ages[0] == pytest.approx(0.4 * 29 + 0.6 * 32)


def test_interval_holds_the_central_mass():
    ages = np.arange(81)
    distribution = np.exp(-0.5 * ((ages - 40) / 5.0) ** 2)[None].astype(np.float32)
    summary = summarize(distribution / distribution.sum(), AGES, IMFDB, level=0.9)
    low, high = summary.intervals[0]
    assert 30 <= low <= 33 and 47 <= high <= 50
    assert summary.ages[0] == pytest.approx(40, abs=0.1)


def face_aged(age: float) -> Face:
    return Face((0, 0, 10, 10), 0.9, [], age, (age - 5, age + 5), "X", 1.0, {"X": 1.0})


def test_gate_passes_only_above_threshold_plus_buffer():
    policy = GatePolicy(over=18, buffer=7)
    assert policy.decide(face_aged(24.9)) is Decision.REFER
    assert policy.decide(face_aged(25.0)) is Decision.PASS
    assert policy.decide_image([]) is Decision.NO_FACE
    assert policy.decide_image([face_aged(40), face_aged(19)]) is Decision.REFER
    assert policy.decide_image([face_aged(40), face_aged(30)]) is Decision.PASS


def _gaussian_rows(means: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    ages = np.asarray(AGES)
    rows = np.exp(-0.5 * ((ages[None] - means[:, None]) / sigmas[:, None]) ** 2)
    return (rows / rows.sum(axis=1, keepdims=True)).astype(np.float32)


def test_conformal_intervals_cover_as_promised_on_fresh_data():
    # A network whose softmax is twice too confident: its raw 90% intervals under-cover.
    rng = np.random.default_rng(0)

    def draw(n):
        means = rng.uniform(15, 65, n)
        spread = rng.uniform(2, 8, n)
        truth = means + rng.normal(0, 1, n) * spread * 2
        return _gaussian_rows(means, spread), truth

    calibration_rows, calibration_truth = draw(3000)
    record = calibration.fit(calibration_rows, AGES, calibration_truth)
    test_rows, test_truth = draw(3000)
    raw = summarize(test_rows, AGES, IMFDB, level=0.9).intervals
    calibrated = summarize(test_rows, AGES, IMFDB, level=0.9, calibration_record=record).intervals
    assert calibration.coverage(raw, test_truth) < 0.8
    assert 0.88 <= calibration.coverage(calibrated, test_truth) <= 0.92
    # Without a stored quantile for the level, the distribution's own interval is used.
    other = summarize(test_rows, AGES, IMFDB, level=0.7, calibration_record=record).intervals
    assert np.array_equal(other, summarize(test_rows, AGES, IMFDB, level=0.7).intervals)


def test_gate_policy_is_fitted_to_hold_minors_down():
    rng = np.random.default_rng(2)
    truth = rng.uniform(10, 70, 5000)
    # Over-estimates by 4 years, with a spread the network knows: wide for half the faces.
    spread = np.where(rng.random(5000) < 0.5, 1.0, 6.0)
    estimates = truth + 4 + rng.normal(0, 1, 5000) * spread
    chosen = choose_policy(estimates, estimates - 1.6 * spread, truth, max_minor_pass=0.02)
    assert chosen["rule"] == "lower_bound"
    lower = estimates - 1.6 * spread
    minors, adults = pass_rates(lower, truth, 18 + chosen["buffer"])
    assert minors <= 0.02 and chosen["holds"]
    assert chosen["val_pass_13_17"] == pytest.approx(minors, abs=1e-4)
    point = choose_policy(estimates, estimates - 100, truth)
    assert point["rule"] == "estimate" and point["val_pass_25_plus"] < adults


def test_a_fitted_buffer_holds_on_fresh_minors_not_only_on_its_own():
    """Fitted on 140 minors, as on UTKFace val: a threshold just above the sample's own top
    2% lets more than 2% of fresh minors through; the conformal one does not."""

    def sample(seed):
        rng = np.random.default_rng(seed)
        truth = np.concatenate([rng.integers(13, 18, 140), rng.integers(25, 71, 1000)])
        return truth.astype(float), truth + 5 + rng.standard_t(8, truth.size) * 4

    fitted, naive = [], []
    for seed in range(12):
        truth, estimates = sample(seed)
        policy = choose_policy(estimates, estimates - 100, truth, fit_minor_pass=0.02)
        assert policy["val_pass_13_17"] <= 1 / 140  # one of 140 may pass, not two
        minors = np.sort(estimates[:140])[::-1]
        fresh = [sample(1000 + 40 * seed + i) for i in range(40)]
        fitted += [pass_rates(e, t, 18 + policy["buffer"])[0] for t, e in fresh]
        naive += [pass_rates(e, t, np.nextafter(minors[2], np.inf))[0] for t, e in fresh]
    assert np.mean(fitted) <= 0.02 < np.mean(naive)
    # Half the promise where minors are many; the promise itself where half would let
    # none pass, and one mislabelled face would set the buffer.
    assert _allowed(515, 0.01, 0.02) == 4 and _allowed(138, 0.01, 0.02) == 1


def test_lower_bound_rule_reads_the_interval():
    face = Face((0, 0, 10, 10), 0.9, [], 30.0, (19.0, 41.0), "X", 1.0, {"X": 1.0})
    assert GatePolicy(18, 2, "lower_bound").decide(face) is Decision.REFER
    assert GatePolicy(18, 1, "lower_bound").decide(face) is Decision.PASS
    assert GatePolicy(18, 7).decide(face) is Decision.PASS
    with pytest.raises(ValueError, match="rule"):
        GatePolicy(18, 7, "median")


def test_a_share_of_the_way_to_the_lower_end_is_a_rule_of_its_own():
    face = Face((0, 0, 10, 10), 0.9, [], 30.0, (20.0, 40.0), "X", 1.0, {"X": 1.0})
    policy = GatePolicy(18, 8, "toward_lower_bound", share=0.4)
    assert policy.score(face) == pytest.approx(26.0) and policy.decide(face) is Decision.PASS
    referred = GatePolicy(18, 8.5, "toward_lower_bound", share=0.4)
    assert referred.reasons(face) == [
        "its estimated age less 40% of the way to its 90% interval's low end is 26.0, under 26.5"
    ]
    with pytest.raises(ValueError, match="share"):
        GatePolicy(18, 7, "toward_lower_bound", share=1.5)


def test_the_fit_takes_the_share_that_lets_most_adults_through():
    """Minors read old but unsure, or young and sure; adults read old and unsure, or a
    little younger and sure. Neither the estimate nor the interval's lower end tells them
    apart; a share of the way between does."""
    kinds = [(15, 26, 6), (16, 21, 19), (30, 28, 12), (30, 24, 20)]  # truth, estimate, lower
    truth, estimates, lower = (np.repeat(np.array(c, float), 100) for c in zip(*kinds, strict=True))
    policy = choose_policy(estimates, lower, truth)
    assert policy["rule"] == "toward_lower_bound" and policy["share"] in (0.2, 0.4)
    assert policy["val_pass_13_17"] == 0 and policy["val_pass_25_plus"] == 1.0
    for share in (0.0, 1.0):  # either end alone refers half the adults
        scores = estimates - share * (estimates - lower)
        highest_minor = scores[truth < 18].max()
        assert pass_rates(scores, truth, np.nextafter(highest_minor, np.inf))[1] == 0.5


def test_bundle_gate_policy_keeps_its_fitted_rule_at_every_threshold():
    bundle = load_bundle()
    gate = {"over": 18, "buffer": 1.5, "rule": "lower_bound"}
    fitted = Bundle("x", {**bundle.manifest, "gate": gate}, bundle.model_path, bundle.folder)
    limits = fitted.quality_limits
    assert fitted.gate_policy(18) == GatePolicy(18, 1.5, "lower_bound", limits)
    assert fitted.gate_policy(21) == GatePolicy(21, 1.5, "lower_bound", limits)
    unfitted = Bundle("y", {**bundle.manifest, "gate": {}}, bundle.model_path, bundle.folder)
    assert unfitted.gate_policy(21) == GatePolicy(21, CHALLENGE_BUFFER, quality=limits)


@pytest.mark.parametrize("name", ["cydral-v1", "agelens-research-v2-fast", "agelens-utk-v1"])
def test_a_higher_threshold_never_passes_a_face_a_lower_one_refers(name):
    bundle = load_bundle(name, verify=False)
    rng = np.random.default_rng(5)
    faces = []
    for age in rng.uniform(5, 75, 400):
        low = age - rng.uniform(0, 20)
        faces.append(Face((0, 0, 10, 10), 0.9, [], age, (low, age + 5), "X", 1.0, {"X": 1.0}))
    passed_before = None
    for over in np.arange(13, 25.5, 0.5):
        policy = bundle.gate_policy(float(over))
        passed = np.array([policy.decide(face) is Decision.PASS for face in faces])
        if passed_before is not None:
            assert not (passed & ~passed_before).any(), f"{name}: over {over} passes more"
        passed_before = passed
    assert passed_before is not None and passed_before.sum() < len(faces)


def test_many_edges_are_refused_and_membership_needs_no_square_memory():
    from agelens.decisions.groups import MAX_GROUPS, custom_scheme

    with pytest.raises(ValueError, match="at most"):
        resolve_scheme(",".join(str(edge) for edge in range(1, 20_001)))
    with pytest.raises(ValueError, match="0 to 150"):
        resolve_scheme("13,31,100000000000000000000")
    wide = custom_scheme(list(range(1, MAX_GROUPS)))
    ages = np.arange(0, 117, dtype=np.float64)
    membership = wide.membership(ages)
    assert membership.shape == (117, MAX_GROUPS) and membership.sum() == 117
    assert membership[50, 50] == 1.0 and membership[116, MAX_GROUPS - 1] == 1.0


@pytest.mark.parametrize(
    ("over", "buffer"),
    [(-5, 7), (0, 7), (18, -100), (float("nan"), 7), (18, float("nan")), (18, 99)],
)
def test_gate_thresholds_outside_sense_are_refused(over, buffer):
    with pytest.raises(ValueError, match="gate's"):
        GatePolicy(over, buffer)


def test_a_policy_says_how_many_minors_it_rests_on_and_too_few_are_refused():
    from agelens.decisions.gate_fit import MIN_MINORS, too_few_minors

    rng = np.random.default_rng(0)
    few = np.array([15.0, 16.0, 17.0, 30.0, 40.0, 50.0] * 5)
    policy = choose_policy(few + rng.normal(0, 3, few.size), few - 5, few)
    assert policy["val_minors"] == 15 and policy["val_adults"] == 15
    assert "only 15 people aged 13-17" in too_few_minors(policy)
    many = np.concatenate([np.full(MIN_MINORS, 15.0), np.full(200, 35.0)])
    assert too_few_minors(choose_policy(many, many - 5, many)) is None
