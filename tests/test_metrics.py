"""Label-leakage scores and disentanglement metrics against known answers.

Tolerances are stated where they are used: "SE" is a Monte Carlo standard error, and a check
allows 4 SE (a false alarm about once in 16,000 runs per check) unless the value is exact.
"""
from math import asin, erf, log, pi, sqrt

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ssvae_lib import metrics as M
from ssvae_lib.shapes import FACTOR_SIZES, ShapesSampler, all_factors, factor_index, render_all

# --------------------------------------------------------------------------------------------
# Encoders on the shapes data whose answers are known
# --------------------------------------------------------------------------------------------

SAMPLER = ShapesSampler(seed=0)
SIZES = np.array(FACTOR_SIZES)
K = len(SIZES)
_ROW_OF_IMAGE = {image.tobytes(): row for row, image in enumerate(render_all())}


def true_factors(x) -> np.ndarray:
    """The factors of rendered images (every image is distinct), standardised to mean 0 and
    variance 1 under the uniform distribution of each factor."""
    rows = [_ROW_OF_IMAGE[image.tobytes()] for image in np.asarray(x, dtype=np.float32)]
    factors = all_factors()[rows]
    return (factors - (SIZES - 1) / 2) / np.sqrt((SIZES ** 2 - 1) / 12)


def identity_encoder(x):
    """One code per factor: the ideal disentangled representation (returned as torch)."""
    return torch.as_tensor(true_factors(x))


def xy_mixed_encoder(x):
    """The position factors x and y rotated by 45 degrees, the rest untouched: an entangled
    code with the same information (Locatello et al. 2019). x and y are identically
    distributed, so fixing x or fixing y changes the two mixed codes in the same way."""
    z = true_factors(x)
    a, b = z[:, 3].copy(), z[:, 4].copy()
    z[:, 3], z[:, 4] = (a + b) / sqrt(2), (a - b) / sqrt(2)
    return z


ROTATION = np.linalg.qr(np.random.default_rng(2024).normal(size=(K, K)))[0]


def rotated_encoder(x):
    """A random rotation of the ideal code: every code mixes all five factors."""
    return true_factors(x) @ ROTATION


def constant_encoder(x):
    return np.zeros((len(x), K))


def full_grid_codes(encoder):
    """Codes of all 6,144 images and their factors: the exact joint distribution of the grid."""
    return np.asarray(encoder(torch.from_numpy(render_all().copy()))), all_factors()


# Ideal SAP with accuracies: the best code is always right, the second-best is right at the
# chance rate 1/n_k of a uniform factor (its predictions do not depend on the factor).
SAP_IDEAL = float(np.mean(1 - 1 / SIZES))
SAP_XY_MIXED = float(np.sum(1 - 1 / SIZES[:3]) / K)  # x and y: two equally good codes, gap 0


# --------------------------------------------------------------------------------------------
# Entropy, mutual information, discretisation: exact values
# --------------------------------------------------------------------------------------------


def test_entropy_and_mutual_information_exact_values():
    assert M.discrete_entropy(np.tile([0, 1, 2, 3], 5)) == pytest.approx(log(4), abs=1e-12)
    a = np.array([0, 0, 1, 1])
    assert M.discrete_mutual_information(a, a) == pytest.approx(log(2), abs=1e-12)
    assert M.discrete_mutual_information(a, np.array([0, 1, 0, 1])) == pytest.approx(0, abs=1e-12)
    # Labels are classes, not numbers: relabelling changes nothing.
    assert M.discrete_mutual_information(a * 7 + 3, a) == pytest.approx(log(2), abs=1e-12)
    # On the full grid every pair of factors is exactly independent.
    f = all_factors()
    assert M.discrete_mutual_information(f[:, 1], f[:, 3]) == pytest.approx(0, abs=1e-12)
    assert M.discrete_mutual_information(f[:, 3], f[:, 3]) == pytest.approx(log(8), abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(arrays(np.int64, st.integers(1, 60), elements=st.integers(0, 4)), st.randoms(use_true_random=False))
def test_mutual_information_is_symmetric_and_bounded_by_the_entropies(a, random):
    b = np.array([random.randint(0, 3) if random.random() < 0.5 else v for v in a], dtype=np.int64)
    i_ab = M.discrete_mutual_information(a, b)
    assert i_ab == pytest.approx(M.discrete_mutual_information(b, a), abs=1e-12)
    assert -1e-12 <= i_ab <= min(M.discrete_entropy(a), M.discrete_entropy(b)) + 1e-12


def test_confusion_matrix_counts_each_true_predicted_pair():
    labels = np.array([0, 0, 1, 1, 1, 2, 2])
    predictions = torch.tensor([0, 1, 1, 1, 2, 1, 1])
    confusion = M.confusion_matrix(labels, predictions, n_classes=4)
    np.testing.assert_array_equal(confusion, [[1, 1, 0, 0], [0, 2, 1, 0], [0, 2, 0, 0], [0, 0, 0, 0]])
    assert np.trace(confusion) / confusion.sum() == pytest.approx(3 / 7)
    assert M.most_confused(confusion) == (2, 1, 2)
    assert M.most_confused(np.eye(3, dtype=int) * 5) == (0, 1, 0)   # no mistakes: a zero count
    with pytest.raises(ValueError, match="square"):
        M.most_confused(np.zeros((2, 3), dtype=int))


@pytest.mark.parametrize("labels, predictions, n_classes, message", [
    ([0, 1], [0], 2, "equal length"),
    ([0, 2], [0, 1], 2, "labels must lie in"),
    ([0, 1], [0, -1], 2, "predictions must lie in"),
    ([0.5, 1], [0, 1], 2, "integer classes"),
    ([0, 1], [0, 1], 0, "n_classes"),
])
def test_confusion_matrix_rejects_bad_input(labels, predictions, n_classes, message):
    with pytest.raises(ValueError, match=message):
        M.confusion_matrix(np.array(labels), np.array(predictions), n_classes)


def test_histogram_discretise_uses_equal_width_bins_between_min_and_max():
    x = (np.arange(20) + 0.5) / 20
    assert np.array_equal(M.histogram_discretise(x[:, None], 20)[:, 0], np.arange(20))
    assert np.array_equal(M.histogram_discretise(np.array([[0.0], [0.49], [0.51], [1.0]]), 2)[:, 0],
                          [0, 0, 1, 1])
    constant = M.histogram_discretise(np.ones((5, 2)), 20)
    assert np.all(constant == constant[0, 0])  # a constant code falls in a single bin


def test_dci_from_importance_exact_values():
    assert M.dci_from_importance(np.eye(3)) == pytest.approx((1.0, 1.0))
    assert M.dci_from_importance(np.ones((4, 3))) == pytest.approx((0.0, 0.0), abs=1e-12)
    assert M.dci_from_importance(np.zeros((4, 3))) == (0.0, 0.0)
    # Two codes that both predict factor 0 only: each code is perfectly specific (D = 1), factor 0
    # is split evenly over two codes (completeness 1 - H_2(1/2, 1/2) = 0), factor 1 weighs 0.
    assert M.dci_from_importance(np.array([[1.0, 0.0], [1.0, 0.0]])) == pytest.approx((1.0, 0.0))
    # Code 0 serves both factors equally (D_0 = 0), code 1 only factor 1 (D_1 = 1); each holds
    # half the total importance. Factor 0 (1/4 of the total) sits on code 0 alone (C_0 = 1);
    # factor 1 (3/4) is split 1 : 2 between the codes.
    d, c = M.dci_from_importance(np.array([[0.5, 0.5], [0.0, 1.0]]))
    assert d == pytest.approx(1 / 2 * 0.0 + 1 / 2 * 1.0)
    h = -(1 / 3 * log(1 / 3) + 2 / 3 * log(2 / 3)) / log(2)
    assert c == pytest.approx(1 / 4 * 1.0 + 3 / 4 * (1 - h))


# --------------------------------------------------------------------------------------------
# 1. Label leakage on synthetic codes with known answers
# --------------------------------------------------------------------------------------------

N, D, C = 10_000, 8, 10
N_TEST = 2_000  # test_fraction 0.2
BINS = 20
# Plug-in MI bias under independence, (bins - 1)(classes - 1) / (2N) nats per dimension
# (a chi-square with (B-1)(C-1) degrees of freedom divided by 2N); its standard deviation is
# sqrt(2 (B-1)(C-1)) / (2N).
MI_BIAS = (BINS - 1) * (C - 1) / (2 * N)
MI_SD = sqrt(2 * (BINS - 1) * (C - 1)) / (2 * N)


def test_leakage_scores_are_near_zero_when_z_is_independent_of_y():
    rng = np.random.default_rng(0)
    y = rng.integers(0, C, N)
    z = rng.normal(size=(N, D))
    s = M.leakage_scores(z, y)
    se = sqrt(0.1 * 0.9 / N_TEST)  # SE of a test accuracy near chance 1/10
    # Best of D single-dimension probes: each predicts (mostly) one class, right ~1/10 of the time.
    assert s["best_single_dim_probe_above_chance"] < 4 * se / 0.9
    assert abs(s["whole_z_probe_accuracy"] - s["majority_baseline"]) < 4 * sqrt(2) * se
    # var(class means) / within-class variance: E = (C-1)/C / n_c with n_c = N/C per class; its SD
    # per dimension is sqrt(2 (C-1)) / C / n_c, averaged over D independent dimensions.
    n_c = N / C
    ratio_sd = sqrt(2 * (C - 1)) / C / n_c / sqrt(D)
    assert abs(s["between_within_variance_ratio"] - (C - 1) / C / n_c) < 4 * ratio_sd
    # Every I(z_j; y) is bias plus noise: the top-two gap is a spacing of the noise, far below the
    # bias itself; the normalised sum is at most D biases (+4 SD) over H(y).
    assert s["top_two_mi_gap_nats"] < MI_BIAS
    ceiling = (D * MI_BIAS + 4 * sqrt(D) * MI_SD) / M.discrete_entropy(y)
    assert 0 < s["normalised_mutual_information"] < ceiling


def test_leakage_scores_are_high_when_one_dimension_carries_the_label():
    rng = np.random.default_rng(1)
    y = rng.integers(0, C, N)
    z = rng.normal(size=(N, D))
    sigma = 0.03
    z[:, 0] = y + sigma * rng.normal(size=N)
    s = M.leakage_scores(z, y)
    # Classes are 1/sigma = 33 standard deviations apart: the Bayes accuracy is 1 - O(Phi(-16)),
    # and a logistic regression is the correct model for equal-variance Gaussian classes. Allow
    # 5 % below perfect for the probes' L2 penalty.
    assert s["best_single_dim_probe_above_chance"] > 0.95
    assert s["whole_z_probe_accuracy"] > 0.95
    # var({0..9}) = 8.25 between, sigma^2 within on dimension 0; ~0 on the D-1 others.
    # Within-class variances are estimated from ~1,000 points each: relative SE sqrt(2/1000)/sqrt(C).
    expected_ratio = 8.25 / sigma ** 2 / D
    rel_se = sqrt(2 / (N / C)) / sqrt(C)
    assert s["between_within_variance_ratio"] == pytest.approx(expected_ratio, rel=4 * rel_se)
    # All 10,000 points lie within 6 sigma = 0.18 of their class (probability 1 - 2e-5), so
    # 20 bins over [min, max] are < 0.47 wide while neighbouring classes are > 0.64 apart: no
    # bin mixes two classes and I(z_0; y) = H(y) exactly; the runner-up is an independent
    # dimension (bias + noise).
    h = M.discrete_entropy(y)
    assert h - MI_BIAS - 4 * MI_SD < s["top_two_mi_gap_nats"] <= h + 1e-12
    assert s["normalised_mutual_information"] >= 1.0 - 1e-12


def test_single_dimension_scores_miss_a_label_spread_over_all_dimensions():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(N, D))
    y = (z.sum(axis=1) > 0).astype(np.int64)  # a linear function of all of z, of no single z_j
    s = M.leakage_scores(z, y)
    se = sqrt(0.25 / N_TEST)
    # Exact single-dimension Bayes accuracy: z_j and sum(z) are Gaussian with correlation
    # 1/sqrt(D), so P(sign agrees) = 1/2 + arcsin(1/sqrt(D)) / pi = 0.615 for D = 8.
    single = 0.5 + asin(1 / sqrt(D)) / pi
    assert abs(s["best_single_dim_probe_accuracy"] - single) < 4 * se
    assert s["best_single_dim_probe_above_chance"] < 2 * (single + 4 * se - 0.5)  # ~0.23, far from 1
    # The whole-z probe finds the linear rule: the classes are separable by a hyperplane, and
    # 8,000 training points pin its normal down to an angle of order D/8000 radians (error rate
    # angle/pi); 3 % is a generous allowance.
    assert s["whole_z_probe_accuracy"] > 0.97 > s["majority_baseline"] + 0.4
    # Exact between/within ratio: E[z_j | y] = +-sqrt(2 / (pi D)), so var(class means) = 2/(pi D)
    # and within = 1 - 2/(pi D). Class means from 5,000 points each: relative SE of the squared
    # half-difference is 2 * sqrt(1/5000 * 2) / (2 sqrt(2/(pi D))) per dimension, / sqrt(D).
    between = 2 / (pi * D)
    rel_se = 2 * sqrt(2 / 5_000) / (2 * sqrt(between)) / sqrt(D)
    assert s["between_within_variance_ratio"] == pytest.approx(between / (1 - between), rel=4 * rel_se)
    # All dimensions leak equally: the top-two MI gap (the thesis's "MIG") sees nothing, while
    # the summed MI sees D times the single-dimension leak I(z_j; y) = ln 2 - E[h(Phi(z/sqrt(D-1)))].
    grid = np.linspace(-8, 8, 16_001)
    weight = np.exp(-grid ** 2 / 2) / sqrt(2 * pi) * (grid[1] - grid[0])
    p = 0.5 * (1 + np.vectorize(erf)(grid / sqrt(D - 1) / sqrt(2)))  # Phi(grid / sqrt(D - 1))
    binary_entropy = -(p * np.log(p) + (1 - p) * np.log1p(-p))
    i_single = log(2) - np.sum(weight * binary_entropy)          # 0.041 nats
    # Each estimate has SD ~ sqrt(var(pointwise MI) / N) ~ 0.0025 nats; the gap between the two
    # largest of D such estimates exceeds 0.2 * i_single (3 SD) with negligible probability.
    assert s["top_two_mi_gap_nats"] < 0.2 * i_single
    # Histogram estimate: upward bias 19/(2N) per dimension, a small downward binning loss, and
    # noise; 0.05 covers 4 SE of the sum (SE ~ sqrt(D) * 0.002 / ln 2) plus both biases.
    assert s["normalised_mutual_information"] == pytest.approx(D * i_single / log(2), abs=0.05)


@pytest.mark.parametrize("z, y, message", [
    (np.zeros((10, 2)), np.zeros(9, dtype=int), "rows"),
    (np.zeros((10, 2)), np.zeros(10, dtype=int), "two classes"),
    (np.zeros(10), np.arange(10) % 2, r"\[N, d\]"),
    (np.full((10, 2), np.nan), np.arange(10) % 2, "NaN"),
    (np.zeros((10, 2)), np.linspace(0, 1, 10), "integer"),
])
def test_leakage_scores_reject_bad_input(z, y, message):
    with pytest.raises(ValueError, match=message):
        M.leakage_scores(z, y)


def test_leakage_scores_accept_torch_and_are_deterministic():
    rng = np.random.default_rng(3)
    z, y = rng.normal(size=(300, 3)), rng.integers(0, 3, 300)
    a = M.leakage_scores(torch.as_tensor(z), torch.as_tensor(y), seed=4)
    assert a == M.leakage_scores(z, y, seed=4)
    assert set(a) == {"best_single_dim_probe_accuracy", "best_single_dim_probe_above_chance",
                      "between_within_variance_ratio", "top_two_mi_gap_nats",
                      "whole_z_probe_accuracy", "majority_baseline", "normalised_mutual_information"}


# --------------------------------------------------------------------------------------------
# 2a. MIG, DCI, SAP on the full grid of the shapes data
# --------------------------------------------------------------------------------------------


def test_mig_exact_values():
    assert M.mig(*full_grid_codes(identity_encoder)) == pytest.approx(1.0, abs=1e-12)
    # x and y each share their information equally between two codes (gap 0), the other three
    # factors keep theirs: MIG = 3/5 exactly on the full grid.
    assert M.mig(*full_grid_codes(xy_mixed_encoder)) == pytest.approx(3 / 5, abs=1e-9)
    assert M.mig(*full_grid_codes(constant_encoder)) == 0.0
    # A random rotation spreads every factor over all codes; half the ideal is a loose ceiling.
    assert M.mig(*full_grid_codes(rotated_encoder)) < 0.5


def test_dci_scores_the_ideal_code_one_and_mixed_codes_lower():
    codes, factors = full_grid_codes(identity_encoder)
    ideal = M.dci(codes, factors, n_estimators=10)
    # Each factor is a step function of its own code: trees never gain from other codes except
    # through chance correlations of the random 2/3 training split, which the 1 % allows.
    assert ideal["disentanglement"] > 0.99 and ideal["completeness"] > 0.99
    assert ideal["informativeness"] == 1.0 and ideal["importance"].shape == (K, K)
    # x and y mixed at 45 degrees: by symmetry each needs both mixed codes about equally, giving
    # D = C = 1 - (2/5) ln2/ln5 = 0.83; even a 20 : 80 split of importance keeps D, C below
    # 3/5 + (2/5) (1 - H(0.2, 0.8)/ln 5) = 0.876.
    mixed = M.dci(*full_grid_codes(xy_mixed_encoder), n_estimators=10)
    h = -(0.2 * log(0.2) + 0.8 * log(0.8)) / log(5)
    assert mixed["disentanglement"] < 3 / 5 + 2 / 5 * (1 - h)
    assert mixed["completeness"] < 3 / 5 + 2 / 5 * (1 - h)
    rotated = M.dci(*full_grid_codes(rotated_encoder), n_estimators=10)
    assert rotated["disentanglement"] < 0.5 and rotated["completeness"] < 0.5
    constant = M.dci(*full_grid_codes(constant_encoder), n_estimators=10)
    assert constant["disentanglement"] == 0.0 and constant["completeness"] == 0.0
    # Its informativeness floor is the chance rate: mean over factors of 1/n_k (SE < 0.011 each).
    assert constant["informativeness"] == pytest.approx(np.mean(1 / SIZES), abs=4 * 0.011)


def test_sap_exact_ceiling_and_mixing():
    n_test = 2048  # 1/3 of the grid
    se = sqrt((1 / 3) * (2 / 3) / n_test)  # largest SE of a chance-level accuracy (n_k = 3)
    assert M.sap(*full_grid_codes(identity_encoder)) == pytest.approx(SAP_IDEAL, abs=4 * se)
    # x, y: two codes with identically distributed scores, gap |difference| < 4 sqrt(2) SE each.
    assert M.sap(*full_grid_codes(xy_mixed_encoder)) == pytest.approx(
        SAP_XY_MIXED, abs=3 / 5 * 4 * se + 2 / 5 * 4 * sqrt(2) * 0.011)
    assert M.sap(*full_grid_codes(constant_encoder)) == 0.0
    assert M.sap(*full_grid_codes(rotated_encoder)) < 0.5 * SAP_IDEAL


def test_sap_linear_classifier_matches_threshold_on_binary_factors():
    # With two classes a one-dimensional linear classifier is a threshold: both give the ideal
    # 1 - 1/2 for codes equal to two independent balanced binary factors.
    factors = np.array([[a, b] for a in range(2) for b in range(2)] * 300)
    codes = factors + 0.01 * np.random.default_rng(5).normal(size=factors.shape)
    se = sqrt(0.25 / 400)
    for classifier in ("threshold", "linear"):
        assert M.sap(codes, factors, classifier=classifier) == pytest.approx(0.5, abs=4 * se)


# --------------------------------------------------------------------------------------------
# 2b. beta-VAE and FactorVAE metrics through an encoder and the sampler
# --------------------------------------------------------------------------------------------

N_EVAL = 250
EVAL_SE = sqrt(0.2 * 0.8 / N_EVAL)  # SE of an accuracy near 0.8 (or 0.2) on the evaluation points


def test_beta_vae_score():
    # Ideal code: the fixed factor's |z1 - z2| is exactly 0 and every other is > 0, a linearly
    # separable problem; allow 1 % of the evaluation points to the L2-penalised boundary.
    assert M.beta_vae_score(identity_encoder, SAMPLER, seed=0) >= 0.99
    # Mixed x/y: fixing x or fixing y gives identically distributed features, so no classifier
    # beats a coin flip between them: E[score] <= 3/5 + 2/5 * 1/2 = 0.8.
    assert M.beta_vae_score(xy_mixed_encoder, SAMPLER, seed=0) < 0.8 + 4 * EVAL_SE
    # Constant code: all features 0, the classifier predicts one factor: chance 1/K.
    assert M.beta_vae_score(constant_encoder, SAMPLER, seed=0) == pytest.approx(1 / K, abs=4 * EVAL_SE)


def test_factor_vae_score():
    # Ideal code: the fixed factor's code has variance exactly 0 in its batch.
    assert M.factor_vae_score(identity_encoder, SAMPLER, seed=0) == 1.0
    # Mixed x/y: votes under "x fixed" and "y fixed" are identically distributed: E <= 0.8.
    assert M.factor_vae_score(xy_mixed_encoder, SAMPLER, seed=0) < 0.8 + 4 * EVAL_SE
    # Constant code: every dimension collapsed, scored 0 by convention.
    assert M.factor_vae_score(constant_encoder, SAMPLER, seed=0) == 0.0

    # Active but uninformative code (noise): each dimension's vote ignores the factor, so every
    # factor-to-dimension map is right 1/K of the time: chance.
    def noise_encoder(x, rng=np.random.default_rng(6)):
        return rng.normal(size=(len(x), 3))

    assert M.factor_vae_score(noise_encoder, SAMPLER, seed=0) == pytest.approx(1 / K, abs=4 * EVAL_SE)


def test_interventional_metrics_are_reproducible_and_need_no_sampler_state():
    a = M.beta_vae_score(rotated_encoder, ShapesSampler(1), seed=3, n_train=100, n_eval=50)
    b = M.beta_vae_score(rotated_encoder, ShapesSampler(2), seed=3, n_train=100, n_eval=50)
    assert a == b
    a = M.factor_vae_score(rotated_encoder, SAMPLER, seed=3, n_train=100, n_eval=50)
    assert a == M.factor_vae_score(rotated_encoder, SAMPLER, seed=3, n_train=100, n_eval=50)


def test_sample_codes_feeds_the_observational_metrics():
    codes, factors = M.sample_codes(identity_encoder, SAMPLER, 600, seed=1)
    assert codes.shape == (600, K) and factors.shape == (600, K)
    np.testing.assert_allclose(codes, true_factors(SAMPLER.sample_observations(factors)))
    again, _ = M.sample_codes(identity_encoder, SAMPLER, 600, seed=1)
    assert np.array_equal(codes, again)


@pytest.mark.parametrize("call, message", [
    (lambda: M.mig(np.zeros((10, 1)), np.arange(10)[:, None] % 2), "two dimensions"),
    (lambda: M.mig(np.zeros((10, 2)), np.zeros((10, 1), dtype=int)), "single value"),
    (lambda: M.mig(np.zeros((10, 2)), np.zeros((9, 1), dtype=int)), "rows"),
    (lambda: M.dci(np.zeros((10, 2)), np.arange(10)[:, None] % 2), "two factors"),
    (lambda: M.sap(np.zeros((30, 2)), np.arange(30)[:, None] % 2, classifier="svm"), "threshold"),
    (lambda: M.dci(np.zeros((10, 2)), np.stack([np.arange(10) % 2] * 2, 1), test_fraction=1.5),
     "test_fraction"),
    (lambda: M.beta_vae_score(identity_encoder, object(), 0), "sampler must provide"),
    (lambda: M.beta_vae_score(lambda x: np.zeros((1, 2)), SAMPLER, 0, n_train=2, n_eval=2),
     "codes for"),
    (lambda: M.beta_vae_score("not a function", SAMPLER, 0), "encode must be"),
    (lambda: M.factor_vae_score(identity_encoder, SAMPLER, 0, batch_size=1), "batch_size"),
    (lambda: M.factor_vae_score(identity_encoder, SAMPLER, 0, prune_threshold=-1), "prune_threshold"),
])
def test_metrics_reject_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# -- label interventions read off the nearest rendered image ---------------------------------------
class _RenderedOracle:
    """A 'model' of the shapes data: reconstructs perfectly; intervening redraws the image with the shape
    set to y (``faithful``) or returns it unchanged (the label ignored)."""

    n_classes = 3

    def __init__(self, factors, faithful: bool):
        self.factors, self.faithful = factors, faithful
        self.images = torch.as_tensor(np.array(render_all()))

    def reconstruct(self, x):
        return x

    def intervene(self, x, y):
        if not self.faithful:
            return x
        changed = self.factors.copy()
        changed[:, 0] = y.numpy()
        return self.images[factor_index(changed)]


def test_intervention_scores_of_a_faithful_and_of_a_label_blind_model():
    factors_all = all_factors()
    images = torch.as_tensor(np.array(render_all()))
    rows = np.random.default_rng(0).choice(len(factors_all), 200, replace=False)
    x, factors = images[rows], factors_all[rows]
    assert (M.nearest_factors(x, images, factors_all) == factors).all()
    faithful = M.intervention_scores(_RenderedOracle(factors, True), x, factors, images, factors_all)
    assert faithful["changed"] == 1.0 and np.isnan(faithful["kept"][0]) and (faithful["kept"][1:] == 1.0).all()
    assert (faithful["reconstruction"] == 1.0).all()
    blind = M.intervention_scores(_RenderedOracle(factors, False), x, factors, images, factors_all)
    assert blind["changed"] == 0.0 and (blind["kept"][1:] == 1.0).all()
    with pytest.raises(ValueError, match="one row per image"):
        M.intervention_scores(_RenderedOracle(factors, True), x, factors[:5], images, factors_all)
