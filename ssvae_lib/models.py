"""The one model: the seminar thesis's SSVAE (its Figure 1) in two recognition orders, with a swappable
observation model, and its generalisation to K label variables.

Generative model (Eq. 4): p(y) = Cat(1/C), p(z) = N(0, I), p(x|y,z) the ``observation`` model
(``likelihoods``: Bernoulli by default, continuous Bernoulli, Gaussian) of an MLP decoder's output.
Recognition model, selected by ``order``:

* ``"label_first"`` — q(y|x) q(z|x,y), Kingma's M2 factorisation (Eq. 5 / Eq. 21);
* ``"style_first"`` — q(z|x) q(y|x,z), the label predicted from the style (thesis §3.2), where the
  supervised importance-sampling estimator (Eq. 20) is non-trivial.

Shapes: ``x`` is always ``[B, D]``; ``y_onehot`` and ``z`` may carry extra leading dimensions (samples,
enumerated classes). The shared hidden layer is computed once per image and broadcast, and every layer
that reads a concatenation ``[h, y]`` is split into one matrix per input, so nothing is recomputed per
importance sample. :class:`MultiLabelSSVAE` is the same network for K label variables (every layer
defined here once). This module computes densities of its own distributions but no training loss.

Two models without a label input to the decoder share the same layers: :class:`VAE` (q(z|x), p(z) = N(0, I),
p(x|z)), the model of weak supervision (``weak``), and :class:`CCVAE`, Joy et al. (2021)'s characteristic-
capturing VAE: z = (z_c, z_s), a learned prior p(z_c|y) per class, a classifier q(y|z_c), and p(x|z_c, z_s).
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_choice, check_int
from .likelihoods import (Bernoulli, ContinuousBernoulli, build_observation_model,
                          continuous_bernoulli_log_normaliser)

ORDERS = ("label_first", "style_first")


class _ImageModel(nn.Module):
    """What every model here shares: ``forward(fn, ...)`` for ``torch.func.functional_call`` and the input check."""

    def forward(self, fn, *args):
        """``fn(self, *args)``. Lets ``torch.func.functional_call`` evaluate any function of the model
        (a bound, an evaluation) with other parameters swapped in: the engine's per-run weights."""
        return fn(self, *args)

    @property
    def learns_beta(self) -> bool:
        return hasattr(self, "log_loss_weights")

    def check_input(self, x) -> torch.Tensor:
        """``x`` as images for this model, or a ``ValueError`` saying what is allowed: a floating-point
        ``[B, input_dim]`` tensor (cast to the weights' dtype) with values where the observation model
        has its support (e.g. [0, 1] for Bernoulli). Reads every value once: call it where data enter."""
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"images x must have shape [B, {self.input_dim}] for this model, got {shape}")
        if not x.is_floating_point():
            raise ValueError(f"images x must be floating point ({self.observation.support} for the "
                             f"{self.observation.name!r} observation model), got {x.dtype}; for 0-255 "
                             "bytes use x.float() / 255")
        self.observation.check(x)
        return x.to(self.decoder_out.weight.dtype)

    def _gaussian(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_sigma = params.chunk(2, dim=-1)
        return mu, log_sigma.clamp(*self.log_sigma_range)


class SSVAE(_ImageModel):
    """MLP SSVAE: ``input_dim -> hidden_dim`` (ReLU) shared encoder layer, a ``n_classes`` digit head
    and a ``style_dim`` Gaussian style head; decoder ``(y, z) -> hidden_dim -> input_dim`` followed by the
    ``observation`` model (a name of ``likelihoods.OBSERVATIONS`` or its ``config()`` dict)."""

    def __init__(self, input_dim: int = 784, hidden_dim: int = 256, n_classes: int = 10,
                 style_dim: int = 10, order: str = "label_first",
                 log_sigma_range: tuple[float, float] = (-6.0, 2.0), observation="bernoulli",
                 learn_beta: bool = False):
        super().__init__()
        check_choice("order", order, ORDERS)
        for name, value in dict(input_dim=input_dim, hidden_dim=hidden_dim, n_classes=n_classes,
                                style_dim=style_dim).items():
            check_int(name, value)
        self.input_dim, self.hidden_dim = input_dim, hidden_dim
        self.n_classes, self.style_dim, self.order = n_classes, style_dim, order
        self.log_sigma_range = tuple(float(v) for v in log_sigma_range)

        self.hidden = nn.Linear(input_dim, hidden_dim)                      # shared by all heads
        self.label_head = nn.Linear(hidden_dim, n_classes)                  # logits from h
        self.style_head = nn.Linear(hidden_dim, 2 * style_dim)              # (mu, log_sigma) from h
        if order == "label_first":   # q(z|x,y): the style head also reads y
            self.style_from_label = nn.Linear(n_classes, 2 * style_dim, bias=False)
        else:                        # q(y|x,z): the label head also reads z
            self.label_from_style = nn.Linear(style_dim, n_classes, bias=False)
        self.decoder_in_label = nn.Linear(n_classes, hidden_dim, bias=False)
        self.decoder_in_style = nn.Linear(style_dim, hidden_dim)
        self.decoder_out = nn.Linear(hidden_dim, input_dim)
        self.observation = build_observation_model(observation, n_pixels=input_dim)
        if learn_beta:   # L-VAE (003, Eq. 6): log σ0², log σ1², the inverse weights of reconstruction and KL
            self.log_loss_weights = nn.Parameter(torch.zeros(2))

    # -- helpers ------------------------------------------------------------------------------------
    def config(self) -> dict:
        """Constructor arguments, enough to rebuild the architecture (used by checkpoints)."""
        return dict(input_dim=self.input_dim, hidden_dim=self.hidden_dim, n_classes=self.n_classes,
                    style_dim=self.style_dim, order=self.order,
                    log_sigma_range=list(self.log_sigma_range), observation=self.observation.config(),
                    **({"learn_beta": True} if self.learns_beta else {}))

    def learned_beta(self) -> float:
        """β̂ = σ0² / σ1², the KL weight relative to the reconstruction that L-VAE has learned (003 Eq. 6)."""
        return math.exp(float((self.log_loss_weights[0] - self.log_loss_weights[1]).detach()))

    def onehot(self, y: torch.Tensor) -> torch.Tensor:
        """Integer labels -> one-hot float; float tensors (one-hot or relaxed) pass through."""
        if y.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.n_classes):
                raise ValueError(f"labels must lie in [0, {self.n_classes - 1}]")
            return F.one_hot(y.long(), self.n_classes).to(self.label_head.weight.dtype)
        return y

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_dim:
            raise ValueError(f"expected inputs with {self.input_dim} features, got shape {tuple(x.shape)}")
        return F.relu(self.hidden(x))

    def _shared_layer(self, x: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        """``features`` when the caller computed ``self.features(x)`` already, else that layer now."""
        return self.features(x) if features is None else features

    def log_prior_y(self) -> torch.Tensor:
        """log p(y): uniform over the classes (Eq. 4)."""
        return torch.full((self.n_classes,), -math.log(self.n_classes),
                          device=self.decoder_out.weight.device)

    # -- recognition model --------------------------------------------------------------------------
    # Every head accepts ``features=self.features(x)`` computed once by the caller (objectives.py does),
    # so the shared layer runs once per image however many heads read it.
    shares_features = True

    def classify(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of q(y|x) ``[B, C]``. For ``style_first`` this is q(y|x, z=mean of q(z|x)),
        the usual plug-in classifier of that order."""
        h = self._shared_layer(x, features)
        if self.order == "label_first":
            return self.label_head(h)
        mu, _ = self._gaussian(self.style_head(h))
        return self.label_head(h) + self.label_from_style(mu)

    def encode(self, x: torch.Tensor, y: torch.Tensor,
               features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_sigma) of q(z|x,y) (label_first order); ``y`` may carry leading dims."""
        if self.order != "label_first":
            raise ValueError("encode(x, y) is q(z|x,y) of the label_first order; "
                             "this model is style_first: use encode_marginal(x)")
        h = self._shared_layer(x, features)
        return self._gaussian(self.style_head(h) + self.style_from_label(self.onehot(y)))

    def encode_marginal(self, x: torch.Tensor,
                        features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_sigma) of q(z|x) (style_first order)."""
        if self.order != "style_first":
            raise ValueError("encode_marginal(x) is q(z|x) of the style_first order; "
                             "this model is label_first: use encode(x, y)")
        return self._gaussian(self.style_head(self._shared_layer(x, features)))

    def classify_style(self, x: torch.Tensor, z: torch.Tensor,
                       features: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of q(y|x,z) (style_first order); ``z`` may carry leading dims."""
        if self.order != "style_first":
            raise ValueError("classify_style(x, z) exists only for the style_first order")
        return self.label_head(self._shared_layer(x, features)) + self.label_from_style(z)

    # -- generative model ---------------------------------------------------------------------------
    def _decoder_hidden(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return F.relu(self.decoder_in_label(self.onehot(y)) + self.decoder_in_style(z))

    def decode(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The decoder's output for the observation model (Bernoulli logits by default),
        shape ``broadcast(y, z)[..., D]``."""
        return self.decoder_out(self._decoder_hidden(y, z))

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|y,z) summed over pixels. For the two Bernoulli models, sum_d x_d l_d + f(l_d) with logits
        l = W h + b: the first sum equals h . (W^T x) + b . x, computed from one ``[B, H]`` product per image
        instead of a pixel-wise product for every (class, sample) row; only f touches ``[..., D]``."""
        h = self._decoder_hidden(y, z)
        if not isinstance(self.observation, (Bernoulli, ContinuousBernoulli)):
            return self.observation.log_prob(x, self.decoder_out(h))
        weight, bias = self.decoder_out.weight, self.decoder_out.bias
        logits = F.linear(h, weight, bias)
        per_pixel = -F.softplus(logits)
        if isinstance(self.observation, ContinuousBernoulli):
            per_pixel = per_pixel + continuous_bernoulli_log_normaliser(logits)
        return (h * (x @ weight)).sum(-1) + x @ bias + per_pixel.sum(-1)

    def generate(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Pixel means E[x|y,z] of the observation model."""
        return self.observation.mean(self.decode(y, z))

    def style_posterior(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_sigma) of the style's posterior for each image: q(z|x) in the style-first order,
        q(z|x, y) in the label-first one (given y, or the predicted y when None)."""
        if self.order == "style_first":
            return self.encode_marginal(x)
        return self.encode(x, self.classify(x).argmax(-1) if y is None else y)

    @torch.no_grad()
    def infer_style(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior mean of the style z for each image (given y, or the predicted y when None)."""
        return self.style_posterior(x, y)[0]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode (predicted y, posterior-mean z): pixel means ``[B, D]``."""
        y = self.classify(x).argmax(-1)
        return self.generate(y, self.infer_style(x, y))

    @property
    def latent_dim(self) -> int:
        """Dimensions of the continuous latent: the style z."""
        return self.style_dim

    @torch.no_grad()
    def intervene(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each image with its label set to ``y`` and its style kept: the pixel means of p(x|y, z̄),
        z̄ the posterior mean given the predicted label."""
        return self.generate(y, self.infer_style(x))


def check_label_range(labels: torch.Tensor, sizes: tuple[int, ...], observed: torch.Tensor) -> None:
    """Every observed value of label k (``labels [..., K]`` where ``observed``) lies in [0, n_k − 1]."""
    for k, n in enumerate(sizes):
        values = labels[..., k][observed[..., k]]
        if values.numel() and (int(values.min()) < 0 or int(values.max()) >= n):
            raise ValueError(f"observed values of label {k} must lie in [0, {n - 1}], "
                             f"got min {int(values.min())}, max {int(values.max())}")


class MultiLabelSSVAE(SSVAE):
    """The ``label_first`` SSVAE with K categorical labels of sizes ``label_sizes``: the label input of
    every layer is the concatenation of the K one-hot vectors (Σ_k n_k columns) and the label head's
    Σ_k n_k logits are the K heads side by side. With one label it is the SSVAE itself.

    Labels are passed either as integer indices ``[..., K]`` or as the concatenation of their one-hot
    vectors ``[..., Σ_k n_k]`` (float), and may carry leading dimensions that broadcast.
    """

    def __init__(self, input_dim: int = 784, hidden_dim: int = 256, label_sizes=(3, 4), style_dim: int = 10,
                 log_sigma_range: tuple[float, float] = (-6.0, 2.0), observation="bernoulli"):
        label_sizes = tuple(label_sizes)
        if not label_sizes or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2
                                  for n in label_sizes):
            raise ValueError(f"label_sizes must be a non-empty sequence of integers >= 2, got {label_sizes!r}")
        super().__init__(input_dim, hidden_dim, sum(label_sizes), style_dim, "label_first", log_sigma_range,
                         observation)
        self.label_sizes = tuple(int(n) for n in label_sizes)

    @property
    def n_labels(self) -> int:
        """K, the number of label variables."""
        return len(self.label_sizes)

    def config(self) -> dict:
        config = super().config()
        del config["n_classes"], config["order"]
        return {**config, "label_sizes": list(self.label_sizes)}

    def onehot(self, labels: torch.Tensor) -> torch.Tensor:
        """Integer labels ``[..., K]`` -> concatenated one-hots ``[..., Σ_k n_k]``; floats pass through."""
        if labels.is_floating_point():
            if labels.shape[-1] != self.n_classes:
                raise ValueError(f"one-hot labels must have {self.n_classes} columns "
                                 f"(sizes {self.label_sizes}), got shape {tuple(labels.shape)}")
            return labels
        if labels.shape[-1:] != (self.n_labels,):
            raise ValueError(f"integer labels must have shape [..., K] with K = {self.n_labels}, "
                             f"got {tuple(labels.shape)}")
        check_label_range(labels, self.label_sizes, torch.ones_like(labels, dtype=torch.bool))
        dtype = self.decoder_out.weight.dtype
        return torch.cat([F.one_hot(labels[..., k].long(), n).to(dtype)
                          for k, n in enumerate(self.label_sizes)], dim=-1)

    def log_prior(self) -> list[torch.Tensor]:
        """log p(y_k) for each label: uniform over its n_k values."""
        weight = self.decoder_out.weight
        return [torch.full((n,), -math.log(n), device=weight.device, dtype=weight.dtype)
                for n in self.label_sizes]

    def classify(self, x: torch.Tensor, features: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Logits of q(y_k|x) for every label: a list of K tensors ``[B, n_k]``."""
        return list(super().classify(x, features).split(self.label_sizes, dim=-1))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """argmax_k q(y_k|x) for every label: int64 ``[B, K]``."""
        return torch.stack([logits.argmax(-1) for logits in self.classify(x)], dim=-1)

    def style_posterior(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_sigma) of q(z|x, labels) (the predicted labels when None): each ``[B, Dz]``."""
        return self.encode(x, self.predict(x) if labels is None else labels)

    @torch.no_grad()
    def infer_style(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior mean of z given the labels (the predicted labels when None): ``[B, Dz]``."""
        return self.style_posterior(x, labels)[0]


class VAE(_ImageModel):
    """MLP VAE: q(z|x) = N(mu(x), diag sigma(x)²) from one ReLU layer ``input_dim -> hidden_dim``; p(z) = N(0, I);
    decoder ``z -> hidden_dim -> input_dim`` followed by the ``observation`` model. The same layer sizes as
    the :class:`SSVAE`, without a label."""

    def __init__(self, input_dim: int = 784, hidden_dim: int = 256, latent_dim: int = 10,
                 log_sigma_range: tuple[float, float] = (-6.0, 2.0), observation="bernoulli"):
        super().__init__()
        for name, value in dict(input_dim=input_dim, hidden_dim=hidden_dim, latent_dim=latent_dim).items():
            check_int(name, value)
        self.input_dim, self.hidden_dim, self.latent_dim = input_dim, hidden_dim, latent_dim
        self.log_sigma_range = tuple(float(v) for v in log_sigma_range)
        self.hidden = nn.Linear(input_dim, hidden_dim)
        self.latent_head = nn.Linear(hidden_dim, 2 * latent_dim)          # (mu, log_sigma) from h
        self.decoder_in = nn.Linear(latent_dim, hidden_dim)
        self.decoder_out = nn.Linear(hidden_dim, input_dim)
        self.observation = build_observation_model(observation, n_pixels=input_dim)

    def config(self) -> dict:
        """Constructor arguments, enough to rebuild the architecture."""
        return dict(input_dim=self.input_dim, hidden_dim=self.hidden_dim, latent_dim=self.latent_dim,
                    log_sigma_range=list(self.log_sigma_range), observation=self.observation.config())

    def encode_latent(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_sigma) of q(z|x), each ``[B, latent_dim]``."""
        return self._gaussian(self.latent_head(F.relu(self.hidden(x))))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's output for the observation model, ``[..., D]``."""
        return self.decoder_out(F.relu(self.decoder_in(z)))

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) summed over pixels; ``z`` may carry leading dims."""
        return self.observation.log_prob(x, self.decode(z))

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel means E[x|z] of the observation model."""
        return self.observation.mean(self.decode(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean of z: pixel means ``[B, D]``."""
        return self.generate(self.encode_latent(x)[0])

    @torch.no_grad()
    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean of z, ``[B, latent_dim]``: the code the disentanglement metrics score."""
        return self.encode_latent(x)[0]


class CCVAE(VAE):
    """Joy et al. (2021)'s characteristic-capturing VAE: z = (z_c, z_s) with ``characteristic_dim`` units
    z_c and ``style_dim`` units z_s; generative model p(y) = Cat(1/C), p(z_c|y) = N(m_y, diag s_y²) learned
    per class, p(z_s) = N(0, I), p(x|z_c, z_s) (the label is *not* an input of the decoder); recognition
    q(z|x) (a :class:`VAE` encoder) and the classifier q(y|z_c), linear in z_c. Its bounds are
    ``objectives.characteristic_supervised_bound`` / ``characteristic_unsupervised_bound``."""

    def __init__(self, input_dim: int = 784, hidden_dim: int = 256, n_classes: int = 10,
                 characteristic_dim: int = 2, style_dim: int = 8,
                 log_sigma_range: tuple[float, float] = (-6.0, 2.0), observation="bernoulli"):
        for name, value in dict(n_classes=n_classes, characteristic_dim=characteristic_dim,
                                style_dim=style_dim).items():
            check_int(name, value)
        super().__init__(input_dim, hidden_dim, characteristic_dim + style_dim, log_sigma_range, observation)
        self.n_classes, self.characteristic_dim, self.style_dim = n_classes, characteristic_dim, style_dim
        self.classifier = nn.Linear(characteristic_dim, n_classes)              # q(y|z_c)
        self.prior_mu = nn.Parameter(torch.randn(n_classes, characteristic_dim))   # p(z_c|y): m_y
        self.prior_log_sigma = nn.Parameter(torch.zeros(n_classes, characteristic_dim))  # log s_y

    def config(self) -> dict:
        config = super().config()
        del config["latent_dim"]
        return {**config, "n_classes": self.n_classes, "characteristic_dim": self.characteristic_dim,
                "style_dim": self.style_dim}

    def log_prior_y(self) -> torch.Tensor:
        """log p(y): uniform over the classes."""
        weight = self.decoder_out.weight
        return torch.full((self.n_classes,), -math.log(self.n_classes), device=weight.device, dtype=weight.dtype)

    def conditional_prior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(m_y, log s_y) of p(z_c|y) for every class, each ``[C, characteristic_dim]``."""
        return self.prior_mu, self.prior_log_sigma.clamp(*self.log_sigma_range)

    def classify_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of q(y|z_c) ``[..., C]`` from full latents ``z [..., characteristic_dim + style_dim]``."""
        return self.classifier(z[..., :self.characteristic_dim])

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y|z_c = posterior mean of z_c): the plug-in classifier, ``[B, C]``."""
        return self.classify_latent(self.encode_latent(x)[0])

    @torch.no_grad()
    def infer_style(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior mean of the label-free part z_s, ``[B, style_dim]`` (``y`` is not used: q(z|x))."""
        return self.encode_latent(x)[0][:, self.characteristic_dim:]

    @torch.no_grad()
    def intervene(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each image with its characteristic latents set to the prior mean m_y of the class ``y`` and its
        z_s kept (posterior mean): the pixel means of p(x|m_y, z̄_s)."""
        z_c = self.conditional_prior()[0][y]
        return self.generate(torch.cat([z_c, self.infer_style(x)], dim=-1))
