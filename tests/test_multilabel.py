"""Tests of ssvae_lib.multilabel: K partially observed labels, one masked objective for all 2^K patterns.

The batched objective is compared with the 2^K separate formulas written out naively (loops over
classes, one example at a time, densities from torch.distributions) on the same noise, in float64, so
the comparison is exact up to rounding (tolerance 1e-9 nats on values of a few hundred nats). The one
Monte Carlo check (pattern frequencies of the observation mask) allows 4 standard errors.
"""
import dataclasses
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Categorical, Normal, kl_divergence

from ssvae_lib import multilabel as ML
from ssvae_lib.data import load_dataset
from ssvae_lib import objectives as O
from ssvae_lib.models import SSVAE

pytestmark = pytest.mark.usefixtures("one_thread")


F64 = torch.float64
SIZES = (3, 4)          # the shape factor and the scale factor of the shapes data
D, H, DZ, S = 12, 9, 3, 4
ALPHA = 2.5


def _model(sizes=SIZES, seed=0, scale=1.0):
    torch.manual_seed(seed)
    model = ML.MultiLabelSSVAE(input_dim=D, hidden_dim=H, label_sizes=sizes, style_dim=DZ).double()
    with torch.no_grad():
        for p in model.parameters():   # larger weights: peaked q(y_k|x), varied per-configuration bounds
            p.mul_(scale)
    return model


def _inputs(batch, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, D, generator=g, dtype=F64), torch.randn(S, batch, DZ, generator=g, dtype=F64)


# ------------------------------------------------------------------------------------------------
# the explicit per-pattern formulas (K = 2), written independently of the batched code
# ------------------------------------------------------------------------------------------------
def _naive_config_bound(model, x_b, eps_b, y1, y2):
    """L(x, y) = mean_s log p(x|y, z^s) − KL(q(z|x,y) ‖ N(0, I)) + log p(y1) + log p(y2) for one image."""
    onehot = torch.cat([F.one_hot(torch.tensor(y1), SIZES[0]), F.one_hot(torch.tensor(y2), SIZES[1])]).to(F64)
    mu, log_sigma = model.encode(x_b[None], onehot[None])
    mu, sigma = mu[0], log_sigma[0].exp()
    total = 0.0
    for s in range(S):
        logits = model.decode(onehot, mu + sigma * eps_b[s])
        total = total - F.binary_cross_entropy_with_logits(logits, x_b, reduction="sum")
    kl = kl_divergence(Normal(mu, sigma), Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum()
    return total / S - kl - math.log(SIZES[0]) - math.log(SIZES[1])


def _naive_bound(model, x_b, eps_b, label, pattern, alpha):
    """The four formulas of the 2^2 observation patterns, one by one."""
    logits = model.classify(x_b[None])
    q1, q2 = (torch.softmax(l[0], -1) for l in logits)
    h1, h2 = Categorical(probs=q1).entropy(), Categorical(probs=q2).entropy()
    L = lambda a, b: _naive_config_bound(model, x_b, eps_b, a, b)  # noqa: E731
    y1, y2 = label
    if pattern == (True, True):      # both observed: Eq. 8 with the joint label
        return L(y1, y2) + alpha * (q1[y1].log() + q2[y2].log())
    if pattern == (True, False):     # shape observed, scale marginalised
        return sum(q2[c] * L(y1, c) for c in range(SIZES[1])) + h2 + alpha * q1[y1].log()
    if pattern == (False, True):     # scale observed, shape marginalised
        return sum(q1[c] * L(c, y2) for c in range(SIZES[0])) + h1 + alpha * q2[y2].log()
    return sum(q1[a] * q2[b] * L(a, b)                                 # none: Eq. 9 over (y1, y2)
               for a in range(SIZES[0]) for b in range(SIZES[1])) + h1 + h2


PATTERNS = list(itertools.product((True, False), repeat=2))


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_masked_bound_equals_the_explicit_formula_of_every_pattern(scale):
    model = _model(scale=scale)
    batch = 3 * len(PATTERNS)                     # every pattern three times, with different labels
    x, eps = _inputs(batch)
    g = torch.Generator().manual_seed(2)
    labels = torch.stack([torch.randint(0, n, (batch,), generator=g) for n in SIZES], 1)
    observed = torch.tensor([PATTERNS[b % len(PATTERNS)] for b in range(batch)])
    labels = torch.where(observed, labels, -1)   # missing labels carry a placeholder, ignored
    with torch.no_grad():
        batched = ML.masked_bound(model, x, labels, observed, ALPHA, n_samples=S, eps=eps)
    assert batched.shape == (batch,)
    for b in range(batch):
        pattern = tuple(bool(v) for v in observed[b])
        with torch.no_grad():
            expected = _naive_bound(model, x[b], eps[:, b], labels[b].tolist(), pattern, ALPHA)
        assert float(batched[b]) == pytest.approx(float(expected), abs=1e-9, rel=1e-12), (b, pattern)


def test_joint_configurations_enumerate_the_product_last_label_fastest():
    configs = ML.joint_configurations((2, 3))
    assert configs.dtype == torch.int64
    assert configs.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    assert ML.joint_configurations(SIZES).shape == (12, 2)


def _single_label_pair(seed=3):
    """A one-label MultiLabelSSVAE and the label_first SSVAE with the same weights."""
    torch.manual_seed(seed)
    multi = ML.MultiLabelSSVAE(input_dim=D, hidden_dim=H, label_sizes=(5,), style_dim=DZ).double()
    single = SSVAE(input_dim=D, hidden_dim=H, n_classes=5, style_dim=DZ, order="label_first").double()
    rename = {"label_heads.0": "label_head", "style_from_labels": "style_from_label",
              "decoder_in_labels": "decoder_in_label"}
    state = {}
    for key, value in multi.state_dict().items():
        module, _, param = key.rpartition(".")
        state[f"{rename.get(module, module)}.{param}"] = value
    single.load_state_dict(state)
    return multi, single


def test_one_label_reduces_to_the_single_label_engine():
    """All observed = Eq. 8 (objectives.supervised_bound, 'm2'); none observed = Eq. 9
    (objectives.unsupervised_bound, 'enumerate'); same noise, so equal up to rounding."""
    multi, single = _single_label_pair()
    x, eps = _inputs(6)
    y = torch.tensor([0, 1, 2, 3, 4, 2])
    every = torch.ones(6, 1, dtype=torch.bool)
    assert torch.allclose(ML.masked_bound(multi, x, y[:, None], every, ALPHA, n_samples=S, eps=eps),
                          O.supervised_bound(single, x, y, ALPHA, estimator="m2", n_samples=S, eps=eps),
                          atol=1e-6, rtol=0)   # SSVAE's log p(y) is float32: rounding of 1e-7
    assert torch.allclose(ML.masked_bound(multi, x, y[:, None], ~every, ALPHA, n_samples=S, eps=eps),
                          O.unsupervised_bound(single, x, method="enumerate", n_samples=S, eps=eps),
                          atol=1e-6, rtol=0)


def test_gradients_reach_every_parameter_and_are_finite():
    model = _model()
    x, eps = _inputs(8)
    labels = torch.tensor([[0, 1], [2, 3], [1, 0], [0, 2]] * 2)
    observed = torch.tensor(PATTERNS * 2)
    ML.masked_bound(model, x, labels, observed, ALPHA, n_samples=S, eps=eps).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_alpha_only_touches_observed_labels():
    """d bound / d alpha = Σ_{k observed} log q(y_k|x): zero for a fully unlabelled example."""
    model = _model()
    x, eps = _inputs(4)
    labels = torch.tensor([[0, 1], [2, 3], [1, 0], [0, 2]])
    observed = torch.tensor(PATTERNS)
    with torch.no_grad():
        diff = (ML.masked_bound(model, x, labels, observed, 1.0, n_samples=S, eps=eps)
                - ML.masked_bound(model, x, labels, observed, 0.0, n_samples=S, eps=eps))
        log_q = [torch.log_softmax(l, -1) for l in model.classify(x)]
    expected = sum(torch.where(observed[:, k], log_q[k][torch.arange(4), labels[:, k]], 0.0) for k in range(2))
    assert torch.allclose(diff, expected, atol=1e-9)
    assert float(diff[3]) == 0.0


def test_bound_stays_finite_when_q_underflows():
    """Saturated label heads (q(y_k|x) = 0 in float64 for some classes, observed or not) give finite
    values and gradients."""
    model = _model()
    with torch.no_grad():
        for head_bias in model.label_head.bias.split(model.label_sizes):    # the K heads side by side
            head_bias.copy_(torch.linspace(-800.0, 800.0, head_bias.numel(), dtype=F64))
    x, eps = _inputs(4)
    labels = torch.tensor([[0, 0], [2, 3], [1, 1], [0, 2]])
    bound = ML.masked_bound(model, x, labels, torch.tensor(PATTERNS), ALPHA, n_samples=S, eps=eps)
    assert torch.isfinite(bound).all()           # q underflows to 0 but log q comes from log_softmax
    bound.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_same_generator_seed_same_value():
    model = _model()
    x, _ = _inputs(4)
    labels, observed = torch.zeros(4, 2, dtype=torch.int64), torch.tensor(PATTERNS)
    run = lambda: ML.masked_bound(model, x, labels, observed, ALPHA, n_samples=2,  # noqa: E731
                                  generator=torch.Generator().manual_seed(5))
    assert torch.equal(run(), run())


GOOD_LABELS = torch.zeros(2, 2, dtype=torch.int64)
GOOD_MASK = torch.ones(2, 2, dtype=torch.bool)


@pytest.mark.parametrize("labels, observed, message", [
    (GOOD_LABELS.float(), GOOD_MASK, "labels must be an int64 tensor"),
    (GOOD_LABELS.int(), GOOD_MASK, "labels must be an int64 tensor"),
    (GOOD_LABELS[:, :1], GOOD_MASK, "labels must be an int64 tensor of shape"),
    (GOOD_LABELS, GOOD_MASK.long(), "observed must be a bool tensor"),
    (GOOD_LABELS, GOOD_MASK[:1], "observed must be a bool tensor of shape"),
    (torch.tensor([[3, 0], [0, 0]]), GOOD_MASK, r"label 0 must lie in \[0, 2\]"),
    (torch.tensor([[0, 4], [0, 0]]), GOOD_MASK, r"label 1 must lie in \[0, 3\]"),
    (torch.tensor([[0, -1], [0, 0]]), GOOD_MASK, r"label 1 must lie in \[0, 3\]"),
])
def test_bad_labels_and_masks_raise(labels, observed, message):
    model = _model()
    x, _ = _inputs(2)
    with pytest.raises(ValueError, match=message):
        ML.masked_bound(model, x, labels, observed, ALPHA)


def test_other_bad_arguments_raise():
    model = _model()
    x, eps = _inputs(2)
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        ML.masked_bound(model, x, GOOD_LABELS, GOOD_MASK, float("nan"))
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        ML.masked_bound(model, x, GOOD_LABELS, GOOD_MASK, ALPHA, n_samples=0)
    with pytest.raises(ValueError, match="eps must have shape"):
        ML.masked_bound(model, x, GOOD_LABELS, GOOD_MASK, ALPHA, n_samples=2, eps=eps)
    with pytest.raises(ValueError, match=r"x must be a \[B, D\] tensor"):
        ML.masked_bound(model, x[0], GOOD_LABELS, GOOD_MASK, ALPHA)
    with pytest.raises(ValueError, match="label_sizes must be"):
        ML.MultiLabelSSVAE(label_sizes=(3, 1))
    with pytest.raises(ValueError, match="observe_prob must be a number in"):
        ML.observation_mask(10, 2, 1.5)
    with pytest.raises(ValueError, match="label_factors must be distinct names"):
        ML.MultiLabelConfig(label_factors=("shape", "colour"))


def test_missing_labels_may_hold_any_placeholder():
    model = _model()
    x, eps = _inputs(2)
    missing = torch.tensor([[True, False], [False, False]])
    a = ML.masked_bound(model, x, torch.tensor([[1, -1], [-7, 99]]), missing, ALPHA, n_samples=S, eps=eps)
    b = ML.masked_bound(model, x, torch.tensor([[1, 0], [0, 0]]), missing, ALPHA, n_samples=S, eps=eps)
    assert torch.equal(a, b)


def test_observation_mask_pattern_frequencies():
    n, p = 20_000, 0.3
    observed = ML.observation_mask(n, 2, p, seed=4)
    assert observed.dtype == torch.bool and observed.shape == (n, 2)
    assert torch.equal(observed, ML.observation_mask(n, 2, p, seed=4))
    counts = ML.pattern_counts(observed, ["shape", "scale"])
    assert list(counts) == ["shape+scale", "shape", "scale", "none"] and sum(counts.values()) == n
    for key, prob in {"shape+scale": p * p, "shape": p * (1 - p), "scale": (1 - p) * p,
                      "none": (1 - p) ** 2}.items():
        se = math.sqrt(prob * (1 - prob) / n)    # binomial standard error of a frequency
        assert abs(counts[key] / n - prob) <= 4 * se, key
    assert not ML.observation_mask(50, 3, 0.0).any() and ML.observation_mask(50, 3, 1.0).all()


def test_representation_is_style_then_predicted_labels():
    model = _model()
    x, _ = _inputs(5)
    code = ML.representation(model, x)
    assert code.shape == (5, DZ + 2)
    assert torch.equal(code[:, DZ:].long(), model.predict(x))
    assert torch.allclose(code[:, :DZ], model.encode(x, model.predict(x))[0])
    _, single = _single_label_pair()
    assert ML.representation(single, x).shape == (5, DZ + 1)


def test_training_on_shapes_reduces_the_loss_and_is_reproducible():
    full = load_dataset("shapes")
    small = dataclasses.replace(full, x_test=full.x_test[:200], y_test=full.y_test[:200],
                                factors_test=full.factors_test[:200])       # quick evaluation
    config = ML.MultiLabelConfig(observe_prob=0.5, alpha=5.0, epochs=2, batch_size=64, hidden_dim=32,
                                 style_dim=4, max_train=256, seed=1)
    first, second = ML.train_multilabel(config, small), ML.train_multilabel(config, small)
    assert len(first.history) == 2 and first.observed.shape == (256, 2)
    assert first.history[1]["train_loss"] < first.history[0]["train_loss"]
    assert all(math.isfinite(v) for v in first.history[-1].values())
    assert {"test_accuracy_shape", "test_accuracy_scale", "test_elbo"} <= set(first.history[-1])
    for a, b in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)
