"""metrics.iwae_log_likelihood against the exact log p(x) of the discrete + continuous toy."""
import pytest
import torch

from ssvae_lib.metrics import iwae_log_likelihood
from ssvae_lib.toy import DiscreteContinuousToy, ToyLabelFirstModel, ToyStyleFirstModel

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def toy_model():
    q, _ = torch.linalg.qr(torch.randn(4, 2, generator=_gen(3), dtype=F64))
    W = q * torch.tensor([1.5, 0.7], dtype=F64)
    g = _gen(2)
    return DiscreteContinuousToy(torch.tensor([0.5, 0.3, 0.2], dtype=F64), W,
                                 torch.randn(4, 3, generator=g, dtype=F64),
                                 0.3 * torch.randn(4, generator=g, dtype=F64), 0.5)


def test_exact_posterior_gives_exact_log_likelihood(toy_model):
    """With q = p(y, z|x), every importance weight equals p(x): the estimate is exact for any K."""
    x, _, _ = toy_model.sample(6, generator=_gen(0))
    q = ToyLabelFirstModel.exact_posterior(toy_model)
    for k in (1, 5):
        torch.testing.assert_close(iwae_log_likelihood(q, x, k, generator=_gen(1)), toy_model.log_marginal(x),
                                   rtol=0, atol=1e-9)


@pytest.mark.parametrize("order", ["label_first", "style_first"])
def test_estimate_is_a_bound_that_tightens_with_k(toy_model, order):
    x, _, _ = toy_model.sample(3, generator=_gen(4))
    if order == "label_first":
        q = ToyLabelFirstModel.perturbed_posterior(toy_model, 0.3, generator=_gen(5))
    else:
        q = ToyStyleFirstModel.approximate_posterior(toy_model, sigma_scale=1.6)
    exact = toy_model.log_marginal(x)
    replicates = 4000
    means, errors = {}, {}
    for k in (1, 16):
        xs = x.repeat(replicates, 1)                         # independent replicates side by side
        est = iwae_log_likelihood(q, xs, k, generator=_gen(10 + k)).reshape(replicates, -1)
        means[k], errors[k] = est.mean(0), est.std(0) / replicates ** 0.5
    # 4 standard errors: a false failure has probability < 1e-4 per comparison
    assert torch.all(means[1] < means[16] + 4 * (errors[1] ** 2 + errors[16] ** 2).sqrt())
    assert torch.all(means[16] <= exact + 4 * errors[16])
    gap_1, gap_16 = exact - means[1], exact - means[16]
    assert torch.all(gap_16 < gap_1), (gap_1, gap_16)
    if order == "label_first":     # Jensen over y: even K = 1 is at least as tight as the ELBO (Eq. 9)
        assert torch.all(q.exact_unsupervised_bound(x) <= means[1] + 4 * errors[1])
