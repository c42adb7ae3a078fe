"""Label-leakage scores and disentanglement metrics.

Two questions that the seminar thesis's §5 (Figures 2-3) runs together:

1. **How much label information leaks into the style z?** (``leakage_scores``) The SSVAE's prior
   makes z independent of the digit y, so for a well-separated model every score here is near its
   floor: *lower is better*. The thesis reported three of these scores under the names "beta-VAE",
   "FactorVAE" and "MIG"; they are computed against the digit label, not against generative
   factors, so they measure leakage, not disentanglement. They are reproduced faithfully under
   names that say what they compute, next to two direct leakage measures.
2. **Is a representation disentangled with respect to known generative factors?** The published
   metrics, following their papers and disentanglement_lib's defaults: the observational ones on
   arrays of codes and factors (``mig``, ``dci``, ``sap``) and the interventional ones that draw
   their own batches from a sampler (``beta_vae_score``, ``factor_vae_score``). Higher is better.

``confusion_matrix`` and ``most_confused`` show which digits the classifier q(y|x) mixes up.

Codes and factors may be numpy arrays or torch tensors: codes ``[N, d]`` (float), factors
``[N, K]`` (integer classes), labels ``[N]`` (integer classes). Mutual information is in nats,
estimated with equal-width histograms of each code dimension (20 bins by default).

An ``encode`` function maps a float32 torch tensor of images ``[n, D]`` to codes ``[n, d]``
(torch or numpy); it is called under ``torch.no_grad()``. A ``sampler`` provides
``factor_sizes``, ``sample_factors(n, rng)`` and ``sample_observations(factors)``, like
``ssvae_lib.shapes.ShapesSampler``.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier

from .checks import check_choice, check_int, check_real, split_indices
from .estimators import log_mean_exp
from .objectives import (characteristic_terms, checked_input, gaussian_log_density, reparameterise,
                         standard_normal_log_density)

_ENCODE_CHUNK = 4096  # images encoded per call of ``encode``


# -- Input checks and conversions ------------------------------------------------------------
def _as_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _codes_array(codes, name: str = "codes") -> np.ndarray:
    """Codes as a finite float64 array [N, d]."""
    c = _as_numpy(codes)
    if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-d array [N, d], got shape {c.shape}")
    if not (np.issubdtype(c.dtype, np.number) or c.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {c.dtype}")
    c = c.astype(np.float64)
    if not np.all(np.isfinite(c)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return c


def _class_array(values, name: str, ndim: int) -> np.ndarray:
    """Integer classes as an int64 array of the given rank."""
    v = _as_numpy(values)
    if v.ndim != ndim:
        shape = "[N]" if ndim == 1 else "[N, K]"
        raise ValueError(f"{name} must be a {ndim}-d array {shape} of integer classes, got shape {v.shape}")
    if v.size and not (np.issubdtype(v.dtype, np.integer) or v.dtype == bool):
        raise ValueError(f"{name} must hold integer classes, got dtype {v.dtype}")
    return v.astype(np.int64)


def _codes_and_factors(codes, factors) -> tuple[np.ndarray, np.ndarray]:
    c = _codes_array(codes)
    f = _class_array(factors, "factors", 2)
    if f.shape[0] != c.shape[0]:
        raise ValueError(f"codes have {c.shape[0]} rows but factors have {f.shape[0]}")
    if f.shape[1] == 0:
        raise ValueError("factors must have at least one column")
    for k in range(f.shape[1]):
        if len(np.unique(f[:, k])) < 2:
            raise ValueError(f"factor column {k} takes a single value; every factor must vary")
    return c, f


def _split_by_factor(c: np.ndarray, f: np.ndarray, test_fraction: float, seed: int):
    """Seeded random (train, test) row indices (``checks.split_indices``) in which every factor takes at
    least two values among the training rows."""
    train, test = split_indices(len(c), test_fraction, seed)
    for k in range(f.shape[1]):
        if len(np.unique(f[train, k])) < 2:
            raise ValueError(f"factor column {k} takes a single value in the training split")
    return train, test


# -- Entropy and mutual information of discrete variables (nats) -----------------------------
def _normalised_entropy(p: np.ndarray, base: float) -> float:
    """Entropy of the distribution proportional to ``p``, in units of log(base)."""
    p = p / p.sum()
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)) / np.log(base))


def histogram_discretise(codes, n_bins: int = 20) -> np.ndarray:
    """Each code dimension cut into ``n_bins`` equal-width bins between its minimum and maximum
    (disentanglement_lib's ``histogram_discretize``): int64 bin indices [N, d] in [0, n_bins)."""
    c = _codes_array(codes)
    n_bins = check_int("n_bins", n_bins)
    out = np.empty(c.shape, dtype=np.int64)
    for j in range(c.shape[1]):
        edges = np.linspace(c[:, j].min(), c[:, j].max(), n_bins + 1)
        out[:, j] = np.clip(np.digitize(c[:, j], edges[1:-1]), 0, n_bins - 1)
    return out


def discrete_entropy(labels) -> float:
    """Plug-in entropy H(v) = -sum_v p(v) log p(v) of integer labels [N], in nats."""
    v = _class_array(labels, "labels", 1)
    if v.size == 0:
        raise ValueError("labels must not be empty")
    return _normalised_entropy(np.unique(v, return_counts=True)[1], np.e)


def discrete_mutual_information(a, b) -> float:
    """Plug-in mutual information I(a; b) = sum p(a,b) log[p(a,b) / (p(a) p(b))] of two integer
    arrays [N], in nats (the contingency-table estimate; biased upwards by about
    (|a|-1)(|b|-1)/(2N) nats when a and b are independent)."""
    a = _class_array(a, "a", 1)
    b = _class_array(b, "b", 1)
    if a.size == 0 or a.size != b.size:
        raise ValueError(f"a and b must be non-empty and of equal length, got {a.size} and {b.size}")
    a_idx = np.unique(a, return_inverse=True)[1].reshape(-1)
    b_idx = np.unique(b, return_inverse=True)[1].reshape(-1)
    n_a, n_b = a_idx.max() + 1, b_idx.max() + 1
    joint = np.bincount(a_idx * n_b + b_idx, minlength=n_a * n_b).reshape(n_a, n_b) / a.size
    p_a, p_b = joint.sum(axis=1, keepdims=True), joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    return float(np.sum(joint[nonzero] * np.log(joint[nonzero] / (p_a @ p_b)[nonzero])))


def mutual_information_matrix(codes, factors, n_bins: int = 20) -> np.ndarray:
    """I(z_j; v_k) in nats for every code dimension j (histogram-discretised) and factor k:
    float64 [d, K]."""
    binned = histogram_discretise(codes, n_bins)
    f = _class_array(factors, "factors", 2)
    if f.shape[0] != binned.shape[0]:
        raise ValueError(f"codes have {binned.shape[0]} rows but factors have {f.shape[0]}")
    return np.array([[discrete_mutual_information(code, factor) for factor in f.T] for code in binned.T])


# -- Which digits the classifier q(y|x) mixes up ---------------------------------------------
def confusion_matrix(labels, predictions, n_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` of examples of true class i predicted as class j, ``[n_classes, n_classes]``;
    accuracy is ``trace(C) / C.sum()``."""
    n_classes = check_int("n_classes", n_classes)
    t = _class_array(labels, "labels", 1)
    p = _class_array(predictions, "predictions", 1)
    if t.size != p.size:
        raise ValueError(f"labels and predictions must have equal length, got {t.size} and {p.size}")
    for name, v in (("labels", t), ("predictions", p)):
        if v.size and (v.min() < 0 or v.max() >= n_classes):
            raise ValueError(f"{name} must lie in [0, {n_classes}), got values in [{v.min()}, {v.max()}]")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def most_confused(confusion) -> tuple[int, int, int]:
    """The largest off-diagonal entry of a confusion matrix: (true class, predicted class, count)."""
    c = np.array(confusion, dtype=np.int64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 2:
        raise ValueError(f"confusion must be a square matrix of at least 2 classes, got shape {c.shape}")
    np.fill_diagonal(c, -1)
    i, j = np.unravel_index(np.argmax(c), c.shape)
    return int(i), int(j), int(c[i, j])


# -- 1. Label leakage into z (the seminar thesis's scores, read correctly) -------------------
def _probe_accuracy(features_train, y_train, features_test, y_test, standardise: bool = True) -> float:
    """Test accuracy of a multinomial logistic-regression probe (with ``standardise``, features
    standardised on the training part, as the thesis's code does)."""
    if standardise:
        mean, std = features_train.mean(axis=0), features_train.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        features_train, features_test = (features_train - mean) / std, (features_test - mean) / std
    if len(np.unique(y_train)) < 2:  # one class seen: the only possible prediction
        return float(np.mean(y_test == y_train[0]))
    probe = LogisticRegression(max_iter=1000).fit(features_train, y_train)
    return float(np.mean(probe.predict(features_test) == y_test))


def _between_within_variance_ratio(z: np.ndarray, y: np.ndarray) -> float:
    """Mean over dimensions of var(class means) / mean within-class variance; dimensions with no
    within-class variance are skipped (0 when all are)."""
    classes = np.unique(y)
    ratios = []
    for j in range(z.shape[1]):
        members = [z[y == c, j] for c in classes]
        within = [np.var(m) for m in members if len(m) > 1]
        mean_within = np.mean(within) if within else 0.0
        if mean_within > 0:
            ratios.append(np.var([m.mean() for m in members]) / mean_within)
    return float(np.mean(ratios)) if ratios else 0.0


def leakage_scores(z, y, *, n_bins: int = 20, test_fraction: float = 0.2, seed: int = 0) -> dict:
    """How much information about the label y leaks into the style code z (lower = better
    separation; an SSVAE's prior p(z) p(y) makes them independent).

    ``z``: codes [N, d]; ``y``: integer labels [N] (at least two classes). The probes are trained
    on a seeded random ``1 - test_fraction`` of the rows and scored on the rest. Returns floats:

    The seminar thesis's three scores (its §5 "beta-VAE", "FactorVAE" and "MIG"), faithfully:

    * ``best_single_dim_probe_accuracy``: the best, over dimensions j, test accuracy of a logistic
      regression predicting y from z_j alone.
    * ``best_single_dim_probe_above_chance``: the same, normalised against chance 1/C:
      (accuracy - 1/C) / (1 - 1/C); 0 = chance, 1 = perfect (the thesis's "beta-VAE" score).
    * ``between_within_variance_ratio``: per dimension, the variance of the class means divided by
      the mean within-class variance, averaged over dimensions (the thesis's "FactorVAE" score).
    * ``top_two_mi_gap_nats``: the gap between the two largest I(z_j; y), in nats, with
      ``n_bins``-bin histograms, not normalised (the thesis's "MIG" score).

    The direct leakage measures:

    * ``whole_z_probe_accuracy``: test accuracy of a logistic regression on all of z, to compare
      with ``majority_baseline``, the accuracy of always predicting the training majority class.
    * ``normalised_mutual_information``: sum_j I(z_j; y) / H(y), all rows, histogram estimate.

    Single-dimension scores miss label information spread over many dimensions; the whole-z
    probe and the summed mutual information do not.

    Departures from the thesis's code that do not change what is measured: a seeded random
    split instead of the first 80 % of rows, chance 1/C from the labels instead of a fixed 1/10,
    and exactly ``n_bins`` equal-width bins for every mutual information.
    """
    z = _codes_array(z, "z")
    y = _class_array(y, "y", 1)
    if y.shape[0] != z.shape[0]:
        raise ValueError(f"z has {z.shape[0]} rows but y has {y.shape[0]}")
    n_classes = len(np.unique(y))
    if n_classes < 2:
        raise ValueError("y takes a single value; leakage needs at least two classes")
    train, test = split_indices(len(y), test_fraction, seed)

    best = max(_probe_accuracy(z[train, j:j + 1], y[train], z[test, j:j + 1], y[test])
               for j in range(z.shape[1]))
    chance = 1.0 / n_classes
    mi = mutual_information_matrix(z, y[:, None], n_bins)[:, 0]
    top = np.sort(mi)[::-1]
    train_classes, train_counts = np.unique(y[train], return_counts=True)
    majority = train_classes[np.argmax(train_counts)]
    return {
        "best_single_dim_probe_accuracy": best,
        "best_single_dim_probe_above_chance": (best - chance) / (1.0 - chance),
        "between_within_variance_ratio": _between_within_variance_ratio(z, y),
        "top_two_mi_gap_nats": float(top[0] - top[1]) if len(top) > 1 else 0.0,
        "whole_z_probe_accuracy": _probe_accuracy(z[train], y[train], z[test], y[test]),
        "majority_baseline": float(np.mean(y[test] == majority)),
        "normalised_mutual_information": float(mi.sum() / discrete_entropy(y)),
    }


# -- 2a. Observational disentanglement metrics on (codes, factors) ---------------------------
def mig(codes, factors, n_bins: int = 20) -> float:
    """Mutual Information Gap (Chen et al. 2018), as in disentanglement_lib: for every factor v_k,
    the gap between the two largest I(z_j; v_k) over code dimensions, divided by H(v_k), averaged
    over factors. Codes are cut into ``n_bins`` equal-width bins. In [0, 1]; 1 = each factor is
    captured by one dimension only."""
    c, f = _codes_and_factors(codes, factors)
    if c.shape[1] < 2:
        raise ValueError("MIG needs codes with at least two dimensions")
    m = mutual_information_matrix(c, f, n_bins)
    top = np.sort(m, axis=0)[::-1]
    entropies = np.array([discrete_entropy(factor) for factor in f.T])
    return float(np.mean((top[0] - top[1]) / entropies))


def dci_from_importance(importance) -> tuple[float, float]:
    """Disentanglement and completeness (Eastwood & Williams 2018) of an importance matrix
    R [d, K] (code j's importance for predicting factor k).

    Disentanglement: sum_j rho_j (1 - H_K(P_j.)), P_jk = R_jk / sum_k R_jk, rho_j = share of the
    total importance held by code j. Completeness: sum_k rho_k (1 - H_d(P_.k)), the same per
    factor. Entropies in base K (resp. d), so both lie in [0, 1]. An all-zero matrix (nothing is
    predictive) gives 0 and 0, as in disentanglement_lib."""
    r = np.abs(_codes_array(importance, "importance"))
    d, k = r.shape
    if d < 2 or k < 2:
        raise ValueError(f"DCI needs at least two code dimensions and two factors, got R of shape {r.shape}")
    total = r.sum()
    if total == 0:
        return 0.0, 0.0
    per_code = [1.0 - _normalised_entropy(row, k) if row.sum() > 0 else 0.0 for row in r]
    per_factor = [1.0 - _normalised_entropy(col, d) if col.sum() > 0 else 0.0 for col in r.T]
    disentanglement = float(np.dot(per_code, r.sum(axis=1) / total))
    completeness = float(np.dot(per_factor, r.sum(axis=0) / total))
    return disentanglement, completeness


def dci(codes, factors, *, test_fraction: float = 1 / 3, n_estimators: int = 100,
        max_depth: int = 3, seed: int = 0) -> dict:
    """DCI (Eastwood & Williams 2018) with disentanglement_lib's importance model: for every factor
    a gradient-boosted tree classifier (scikit-learn's ``GradientBoostingClassifier``, default 100
    trees of depth 3) predicts the factor from all codes; its feature importances form column k of
    the importance matrix R [d, K].

    Gradient-boosted trees rather than a random forest: a forest's trees each see a random subset
    of the codes, which spreads importance over uninformative codes and lowers the scores of a
    perfect representation. With two cores, lower ``n_estimators`` for quick checks.

    Rows are split at random (seeded) into train/test (1/3 test, as 10,000/5,000 in
    disentanglement_lib). Returns ``disentanglement``, ``completeness`` (see
    ``dci_from_importance``), ``informativeness`` (mean test accuracy over factors; its floor is
    the majority-class rate), ``informativeness_train`` and the ``importance`` matrix."""
    c, f = _codes_and_factors(codes, factors)
    if c.shape[1] < 2 or f.shape[1] < 2:
        raise ValueError(f"DCI needs at least two code dimensions and two factors, "
                         f"got d={c.shape[1]}, K={f.shape[1]}")
    n_estimators = check_int("n_estimators", n_estimators)
    max_depth = check_int("max_depth", max_depth)
    train, test = _split_by_factor(c, f, test_fraction, seed)
    importance = np.zeros((c.shape[1], f.shape[1]))
    train_accuracy, test_accuracy = [], []
    for k in range(f.shape[1]):
        model = GradientBoostingClassifier(n_estimators=n_estimators, max_depth=max_depth,
                                           random_state=seed).fit(c[train], f[train, k])
        importance[:, k] = np.abs(model.feature_importances_)
        train_accuracy.append(np.mean(model.predict(c[train]) == f[train, k]))
        test_accuracy.append(np.mean(model.predict(c[test]) == f[test, k]))
    disentanglement, completeness = dci_from_importance(importance)
    return {
        "disentanglement": disentanglement,
        "completeness": completeness,
        "informativeness": float(np.mean(test_accuracy)),
        "informativeness_train": float(np.mean(train_accuracy)),
        "importance": importance,
    }


def _one_dim_classifier(kind: str, n_classes: int, seed: int):
    if kind == "threshold":
        # The smallest tree that can give each class its own interval of the code.
        return DecisionTreeClassifier(max_leaf_nodes=max(n_classes, 2), class_weight="balanced",
                                      random_state=seed)
    return LinearSVC(C=0.01, class_weight="balanced")


def sap_score_matrix(codes, factors, *, classifier: str = "threshold", test_fraction: float = 1 / 3,
                     seed: int = 0) -> np.ndarray:
    """S [d, K]: test accuracy of a classifier predicting factor k from code dimension j alone
    (the score matrix of the SAP score, Kumar et al. 2018, for discrete factors).

    ``classifier="threshold"``: a one-dimensional threshold classifier (a decision tree with one
    leaf per class, so it can give each class an interval of the code; classes weighted to
    balance). ``"linear"``: disentanglement_lib's ``LinearSVC(C=0.01, class_weight="balanced")``,
    which on one dimension cannot single out a class lying between two others."""
    check_choice("classifier", classifier, ("threshold", "linear"))
    c, f = _codes_and_factors(codes, factors)
    train, test = _split_by_factor(c, f, test_fraction, seed)
    scores = np.zeros((c.shape[1], f.shape[1]))
    for k in range(f.shape[1]):
        n_classes = len(np.unique(f[:, k]))
        for j in range(c.shape[1]):
            model = _one_dim_classifier(classifier, n_classes, seed).fit(c[train, j:j + 1], f[train, k])
            scores[j, k] = np.mean(model.predict(c[test, j:j + 1]) == f[test, k])
    return scores


def sap(codes, factors, *, classifier: str = "threshold", test_fraction: float = 1 / 3,
        seed: int = 0) -> float:
    """SAP score (Kumar et al. 2018): for every factor, the gap between the best and the
    second-best single-dimension prediction score (``sap_score_matrix``), averaged over factors.

    With accuracies as scores its ceiling is not 1: the second-best dimension still scores about
    the chance rate, so a perfect code of uniformly distributed factors with n_k values scores
    mean_k (1 - 1/n_k). Needs codes with at least two dimensions."""
    scores = sap_score_matrix(codes, factors, classifier=classifier, test_fraction=test_fraction,
                              seed=seed)
    if scores.shape[0] < 2:
        raise ValueError("SAP needs codes with at least two dimensions")
    top = np.sort(scores, axis=0)[::-1]
    return float(np.mean(top[0] - top[1]))


# -- 2b. Metrics that draw their own batches from a sampler ----------------------------------
def _check_sampler(sampler) -> tuple[int, ...]:
    for attribute in ("factor_sizes", "sample_factors", "sample_observations"):
        if not hasattr(sampler, attribute):
            raise ValueError(f"sampler must provide {attribute!r} (see ssvae_lib.shapes.ShapesSampler)")
    sizes = tuple(int(s) for s in sampler.factor_sizes)
    if len(sizes) < 2:
        raise ValueError("the sampler must have at least two factors")
    return sizes


def _encode(encode, sampler, factors: np.ndarray) -> np.ndarray:
    """Codes [n, d] of the images of ``factors`` [n, K], encoded in chunks."""
    if not callable(encode):
        raise ValueError("encode must be a function mapping images [n, D] to codes [n, d]")
    out = []
    for start in range(0, len(factors), _ENCODE_CHUNK):
        images = sampler.sample_observations(factors[start:start + _ENCODE_CHUNK])
        x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
        with torch.no_grad():
            codes = _codes_array(encode(x), "encode(x)")
        if codes.shape[0] != x.shape[0]:
            raise ValueError(f"encode returned {codes.shape[0]} codes for {x.shape[0]} images")
        out.append(codes)
    return np.concatenate(out)


def sample_codes(encode, sampler, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random factor combinations and their codes: (codes [n, d], factors [n, K]), the
    input of ``mig``, ``dci`` and ``sap`` (disentanglement_lib draws n = 10,000 for ``mig``, 15,000 for
    ``dci`` and ``sap``)."""
    _check_sampler(sampler)
    n = check_int("n", n)
    factors = np.asarray(sampler.sample_factors(n, np.random.default_rng(seed)), dtype=np.int64)
    return _encode(encode, sampler, factors), factors


def _beta_vae_points(encode, sampler, rng, n_points: int, batch_size: int, sizes):
    """Training points of the beta-VAE metric: (features [n_points, d], fixed factor [n_points])."""
    k = len(sizes)
    labels = rng.integers(0, k, n_points)
    features = []
    chunk = max(1, _ENCODE_CHUNK // batch_size)
    for start in range(0, n_points, chunk):
        idx = labels[start:start + chunk]
        p = len(idx)
        first = np.asarray(sampler.sample_factors(p * batch_size, rng)).reshape(p, batch_size, k)
        second = np.asarray(sampler.sample_factors(p * batch_size, rng)).reshape(p, batch_size, k)
        second[np.arange(p), :, idx] = first[np.arange(p), :, idx]
        z1 = _encode(encode, sampler, first.reshape(-1, k))
        z2 = _encode(encode, sampler, second.reshape(-1, k))
        features.append(np.abs(z1 - z2).reshape(p, batch_size, -1).mean(axis=1))
    return np.concatenate(features), labels


def beta_vae_score(encode, sampler, seed: int = 0, *, batch_size: int = 64, n_train: int = 500,
                   n_eval: int = 250) -> float:
    """The beta-VAE metric (Higgins et al. 2017), as in disentanglement_lib.

    One point: pick a factor k uniformly, draw ``batch_size`` pairs of factor combinations that
    share factor k's value (the rest independent), encode both images of each pair, and average
    |z1 - z2| over the pairs; the label is k. A logistic-regression classifier trained on
    ``n_train`` points predicts k; the score is its accuracy on ``n_eval`` new points. Chance is
    1/K (a constant code scores about that); a code with one dimension per factor scores 1.
    Defaults keep it quick; disentanglement_lib uses n_train = 10,000 and n_eval = 5,000.

    It asks only whether the fixed factor can be told from the features, so a generic rotation
    of an ideal code still scores high (unlike ``mig``, ``dci`` and ``sap``); it drops when the
    mixing makes factors indistinguishable (e.g. two identically distributed factors rotated
    by 45 degrees: at most 1 - 1/K)."""
    sizes = _check_sampler(sampler)
    batch_size = check_int("batch_size", batch_size)
    n_train = check_int("n_train", n_train)
    n_eval = check_int("n_eval", n_eval)
    rng = np.random.default_rng(seed)
    train_x, train_y = _beta_vae_points(encode, sampler, rng, n_train, batch_size, sizes)
    eval_x, eval_y = _beta_vae_points(encode, sampler, rng, n_eval, batch_size, sizes)
    return _probe_accuracy(train_x, train_y, eval_x, eval_y, standardise=False)


def _factor_vae_votes(encode, sampler, rng, n_points, batch_size, sizes, scale, active):
    """Votes [K, d_active]: how often fixing factor k made active dimension j (after dividing by
    its global standard deviation) the one of least variance."""
    k = len(sizes)
    votes = np.zeros((k, int(active.sum())), dtype=np.int64)
    labels = rng.integers(0, k, n_points)
    chunk = max(1, _ENCODE_CHUNK // batch_size)
    for start in range(0, n_points, chunk):
        idx = labels[start:start + chunk]
        p = len(idx)
        factors = np.asarray(sampler.sample_factors(p * batch_size, rng)).reshape(p, batch_size, k)
        factors[np.arange(p), :, idx] = factors[np.arange(p), :1, idx]  # one value per batch
        codes = _encode(encode, sampler, factors.reshape(-1, k)).reshape(p, batch_size, -1)
        local = np.var(codes[:, :, active] / scale[active], axis=1, ddof=1)
        np.add.at(votes, (idx, np.argmin(local, axis=1)), 1)
    return votes


def factor_vae_score(encode, sampler, seed: int = 0, *, batch_size: int = 64, n_train: int = 500,
                     n_eval: int = 250, n_variance_estimate: int = 2000,
                     prune_threshold: float = 0.05) -> float:
    """The FactorVAE metric (Kim & Mnih 2018), as in disentanglement_lib.

    Each code dimension is divided by its empirical standard deviation (from
    ``n_variance_estimate`` random images); dimensions whose standard deviation is below
    ``prune_threshold`` count as collapsed and are left out (disentanglement_lib's study uses
    0.05). One point: pick a factor k, draw ``batch_size`` combinations sharing one value of
    factor k, encode them and vote for the (active) dimension of least variance. The classifier
    maps each dimension to the factor it got most training votes for; the score is its
    accuracy on ``n_eval`` new votes. Chance is 1/K; a code with every dimension collapsed scores
    0 (disentanglement_lib's convention); one dimension per factor scores 1.
    Defaults keep it quick; disentanglement_lib uses n_train = 10,000, n_eval = 5,000 and
    n_variance_estimate = 10,000.

    Like ``beta_vae_score`` it stays high for a generic rotation of an ideal code whenever each
    factor still has its own least-varying dimension."""
    sizes = _check_sampler(sampler)
    batch_size = check_int("batch_size", batch_size, low=2)
    n_train = check_int("n_train", n_train)
    n_eval = check_int("n_eval", n_eval)
    n_variance_estimate = check_int("n_variance_estimate", n_variance_estimate, low=2)
    check_real("prune_threshold", prune_threshold, low=0.0)
    rng = np.random.default_rng(seed)
    codes = _encode(encode, sampler, np.asarray(sampler.sample_factors(n_variance_estimate, rng)))
    scale = np.std(codes, axis=0, ddof=1)
    active = (scale >= prune_threshold) & (scale > 0)
    if not active.any():
        return 0.0
    train_votes = _factor_vae_votes(encode, sampler, rng, n_train, batch_size, sizes, scale, active)
    eval_votes = _factor_vae_votes(encode, sampler, rng, n_eval, batch_size, sizes, scale, active)
    factor_of_dim = np.argmax(train_votes, axis=0)
    correct = eval_votes[factor_of_dim, np.arange(eval_votes.shape[1])].sum()
    return float(correct / eval_votes.sum())


# -- Likelihood estimates of a trained model -------------------------------------------------
@torch.no_grad()
def iwae_log_likelihood(model, x: torch.Tensor, n_samples: int = 16, generator=None,
                        eps: torch.Tensor | None = None, validate: bool = True) -> torch.Tensor:
    """IWAE estimate of log p(x) per image, ``[B]`` (Burda et al. 2016), with y summed out exactly:

    * label_first: log Σ_y (1/K) Σ_k p(x, y, z_k^y) / q(z_k^y|x, y),  z_k^y ~ q(z|x, y);
    * style_first: log (1/K) Σ_k Σ_y p(x, y, z_k) / q(z_k|x),          z_k ~ q(z|x).

    Inside the log is an unbiased estimate of p(x), so the value is a lower bound on log p(x) in
    expectation that tightens as K grows; since y is summed inside the log, even K = 1 is at least as
    tight as the ELBO (Eq. 9) by Jensen's inequality over y ~ q(y|x).

    ``eps`` (``[K, B, Dz]``, optional): the standard normal noise to use instead of drawing it.
    ``validate=False``: x already checked (``objectives.checked_input``), e.g. under ``vmap``.

    For a ``models.CCVAE`` (it has ``conditional_prior``): log (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x),
    with the prior p(z) = Σ_y p(y) p(z|y) exact, a mixture over the classes.
    """
    if hasattr(model, "conditional_prior"):
        terms = characteristic_terms(model, x, n_samples, eps, generator, validate)
        log_pz = torch.logsumexp(terms["log_pz_y"] + model.log_prior_y(), dim=-1)
        return log_mean_exp(terms["log_px"] + log_pz - terms["log_qz"], dim=0)
    x = checked_input(model, x, validate)
    labels = torch.eye(model.n_classes, device=x.device, dtype=x.dtype)[:, None, None, :]  # [C, 1, 1, C]
    log_p_y = model.log_prior_y()[:, None, None]                                        # [C, 1, 1]
    if model.order == "label_first":
        mu, log_sigma = model.encode(x, labels)                                         # [C, 1, B, Dz]
        z = reparameterise(mu, log_sigma, n_samples, eps, generator)                    # [C, K, B, Dz]
        log_w = (model.log_likelihood(x, labels, z) + log_p_y + standard_normal_log_density(z)
                 - gaussian_log_density(z, mu, log_sigma))                              # [C, K, B]
        return torch.logsumexp(log_mean_exp(log_w, dim=1), dim=0)
    mu, log_sigma = model.encode_marginal(x)                                            # [B, Dz]
    z = reparameterise(mu, log_sigma, n_samples, eps, generator)                        # [K, B, Dz]
    log_joint = torch.logsumexp(model.log_likelihood(x, labels, z) + log_p_y, dim=0)    # [K, B]
    log_w = log_joint + standard_normal_log_density(z) - gaussian_log_density(z, mu, log_sigma)
    return log_mean_exp(log_w, dim=0)


# -- interventions on the label, read off the nearest rendered image ------------------------------------
def nearest_factors(images, reference_images, reference_factors, batch_size: int = 500) -> np.ndarray:
    """The factors of each image ``[n, D]`` read off its nearest reference image (Euclidean distance in
    pixels), ``[n, K]``. With every combination of the factors rendered as the reference (the shapes data),
    this reads a generated image as the factors of the rendered image it is closest to."""
    images = torch.as_tensor(images)
    reference = torch.as_tensor(reference_images).to(images.dtype)
    reference_factors = _class_array(reference_factors, "reference_factors", 2)
    if images.dim() != 2 or reference.dim() != 2 or images.shape[1] != reference.shape[1] \
            or len(reference) != len(reference_factors):
        raise ValueError(f"images [n, D], reference_images [m, D] and reference_factors [m, K] must agree, got "
                         f"{list(images.shape)}, {list(reference.shape)}, {list(reference_factors.shape)}")
    nearest = torch.cat([torch.cdist(images[i:i + batch_size], reference).argmin(1)
                         for i in range(0, len(images), batch_size)])
    return reference_factors[nearest.numpy()]


@torch.no_grad()
def intervention_scores(model, x: torch.Tensor, factors, reference_images, reference_factors,
                        label_factor: int = 0) -> dict:
    """The manipulation test of Joy et al. (2021), measured: each image (true factors ``factors [n, K]``) is
    decoded once with each other value y' of its label factor (``model.intervene(x, y')``: the label changed,
    the rest of its code kept) and read by :func:`nearest_factors`. Returns ``changed``, the share of
    interventions read with the new label value; ``kept`` ``[K]``, the share read with factor k unchanged
    (NaN for the label factor); and ``reconstruction`` ``[K]``, the share of ``model.reconstruct(x)`` read
    with factor k right: the reference without an intervention."""
    factors = _class_array(factors, "factors", 2)
    if len(factors) != len(x):
        raise ValueError(f"factors must have one row per image ({len(x)}), got {len(factors)}")
    check_int("label_factor", label_factor, low=0, high=factors.shape[1] - 1)
    read = lambda images: nearest_factors(images.cpu(), reference_images, reference_factors)  # noqa: E731
    reconstruction = (read(model.reconstruct(x)) == factors).mean(0)
    changed, kept = [], []
    for shift in range(1, model.n_classes):
        target = (factors[:, label_factor] + shift) % model.n_classes
        found = read(model.intervene(x, torch.as_tensor(target, device=x.device)))
        changed.append(found[:, label_factor] == target)
        kept.append(found == factors)
    kept = np.concatenate(kept).mean(0)
    kept[label_factor] = np.nan
    return {"changed": float(np.concatenate(changed).mean()), "kept": kept, "reconstruction": reconstruction}


# -- All canonical metrics of one encoder ----------------------------------------------------
def canonical_scores(encode, sampler, *, n_codes: int = 5000, n_train: int = 500, n_eval: int = 250,
                     n_trees: int = 10, seed: int = 0) -> dict:
    """β-VAE, FactorVAE, MIG, DCI (disentanglement, completeness) and SAP of one encoder
    (images [n, D] -> codes [n, d]) on ``sampler``'s data; DCI with ``n_trees`` boosted trees."""
    codes, factors = sample_codes(encode, sampler, n_codes, seed=seed)
    dci_scores = dci(codes, factors, n_estimators=n_trees, seed=seed)
    protocol = dict(batch_size=64, n_train=n_train, n_eval=n_eval)
    return {"β-VAE": beta_vae_score(encode, sampler, seed, **protocol),
            "FactorVAE": factor_vae_score(encode, sampler, seed, **protocol),
            "MIG": mig(codes, factors),
            "DCI disent.": dci_scores["disentanglement"], "DCI compl.": dci_scores["completeness"],
            "SAP": sap(codes, factors)}
