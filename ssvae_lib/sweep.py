"""Many training runs at once: the stacked model and trainer behind the sweeps (grids: ``grid.py``;
results folders and ``run_sweep``: ``store.py``).

**Many runs at once** (:func:`train_runs`): runs that share the architecture, the data pool and the batch
shapes are stacked into one :class:`StackedSSVAE` whose parameters carry a leading run dimension, so
every layer is one batched matrix multiply. The objectives of ``objectives.py`` are reused unchanged:
the stacked model folds the runs into the batch dimension. Each run keeps everything that makes it
itself — its initialisation (``torch.manual_seed(seed)`` as in :func:`~ssvae_lib.train.train`), its
pool, labelled set, corrupted labels and batch order (``train._batches`` with its own ``rng``), its own
noise stream (eps / Gumbel drawn from its own generator with the shapes and order of the sequential
step, then stacked), its α and γ (per-run tensors; Eq. 8 and Eq. 20 are affine in α) and its Adam
state (Adam is elementwise, so one Adam over stacked parameters is R independent Adams). The result
equals training the runs one by one with :func:`~ssvae_lib.train.train` up to float rounding.

The thesis's batch-keyed labelling makes a step supervised for some runs and unsupervised for others:
each step evaluates L_U on the subset of runs whose batch is unlabelled and L_S on the subset whose
batch is labelled (:meth:`StackedSSVAE.subset`), so no run computes a term it does not use. Each
epoch's evaluation (accuracy, ELBO, IWAE log p(x)) is batched too (:func:`evaluate_runs`), with each
run's noise drawn as :func:`~ssvae_lib.train.evaluate` draws it, in passes sized to the memory budget.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import data as data_mod
from . import metrics, objectives, settings
from . import train as train_mod
from .models import SSVAE
from .train import TrainConfig

# TrainConfig fields that may differ between runs trained together in one stacked model.
PER_RUN_FIELDS = ("seed", "n_labelled", "alpha", "gamma", "corruption_rate", "corruption_protocol")
CPU_MAX_RUNS = 8                 # runs per stacked model on a CPU (benchmarks/sweep_throughput.py)
CPU_MEMORY_BUDGET = 2 << 30      # bytes a chunk may use on a CPU
CPU_EVAL_PASS = 512 << 20        # bytes of one evaluation pass on a CPU (larger passes ran slower)
GPU_MEMORY_FRACTION = 0.6        # share of the free GPU memory a chunk may use


# ==========================================================================================
# the stacked model
# ==========================================================================================
class StackedLinear(nn.Module):
    """R independent ``nn.Linear`` layers: ``weight [R, out, in]``, ``bias [R, out]`` (or None).

    Input and output are *run-first*: ``[R, ..., in] -> [R, ..., out]``; an input with a leading 1 is
    shared by every run (broadcast). ``runs`` (index tensor) applies only the selected runs' layers.
    """

    def __init__(self, layers: Sequence[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]).clone())
        has_bias = layers[0].bias is not None
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]).clone()) if has_bias else None

    def selected(self, runs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weights ``[R', out, in]`` and biases ``[R', out]`` of the selected runs (all when None)."""
        if runs is None:
            return self.weight, self.bias
        return self.weight[runs], None if self.bias is None else self.bias[runs]

    def forward(self, t: torch.Tensor, runs: torch.Tensor | None = None) -> torch.Tensor:
        weight, bias = self.selected(runs)
        flat = t.reshape(t.shape[0], -1, t.shape[-1])                       # [R|1, M, in]
        if flat.shape[0] != weight.shape[0]:                                # one input shared by all runs
            flat = flat.expand(weight.shape[0], -1, -1)
        if bias is None:
            out = torch.bmm(flat, weight.transpose(1, 2))                   # [R, M, out]
        else:
            out = torch.baddbmm(bias[:, None, :], flat, weight.transpose(1, 2))
        return out.reshape(weight.shape[0], *t.shape[1:-1], weight.shape[1])


class StackedSSVAE(nn.Module):
    """R :class:`~ssvae_lib.models.SSVAE` models of one architecture as one module (parameters stacked
    along a leading run dimension), with the model interface that ``objectives.py`` expects.

    Layout: runs are folded into the batch dimension. Images are ``x [R·b, D]`` (run r owns rows
    r·b … r·b+b−1); ``y_onehot`` and ``z`` carry the same leading dimensions as for one SSVAE and a batch
    dimension of R·b, or of 1 when shared by all runs; every output has batch dimension R·b. Inside,
    tensors are moved to run-first ``[R, ..., b, F]`` so each layer is one batched matrix multiply.
    """

    onehot = SSVAE.onehot
    log_prior_y = SSVAE.log_prior_y
    _gaussian = SSVAE._gaussian
    _shared_layer = SSVAE._shared_layer

    def __init__(self, models: Sequence[SSVAE]):
        super().__init__()
        if not models:
            raise ValueError("StackedSSVAE needs at least one model")
        first = models[0]
        for m in models[1:]:
            if m.config() != first.config():
                raise ValueError(f"StackedSSVAE: models differ in architecture: {m.config()} vs {first.config()}")
        self.input_dim, self.hidden_dim = first.input_dim, first.hidden_dim
        self.n_classes, self.style_dim, self.order = first.n_classes, first.style_dim, first.order
        self.log_sigma_range = first.log_sigma_range
        self.n_runs = len(models)
        self._layers = [name for name, _ in first.named_children()]
        for name in self._layers:
            setattr(self, name, StackedLinear([getattr(m, name) for m in models]))
        self._runs = None

    # -- runs -----------------------------------------------------------------------------------
    def subset(self, runs: Sequence[int]) -> "StackedSSVAE":
        """A view on the selected runs (sharing parameters, so gradients reach the stacked tensors)."""
        runs = [int(r) for r in runs]
        if runs == list(range(self.n_runs)) and self._runs is None:
            return self
        if self._runs is not None:
            raise ValueError("subset() of a subset is not supported; select from the full stack")
        view = copy.copy(self)
        view._runs = torch.as_tensor(runs, device=self.decoder_out.weight.device)
        view.n_runs = len(runs)
        return view

    def run_state_dict(self, run: int) -> dict:
        """The state dict of run ``run`` as a plain SSVAE has it (``load_state_dict`` ready)."""
        return {f"{name}.{p}": getattr(getattr(self, name), p)[run].detach().clone()
                for name in self._layers for p in ("weight", "bias")
                if getattr(getattr(self, name), p) is not None}

    def config(self) -> dict:
        return dict(input_dim=self.input_dim, hidden_dim=self.hidden_dim, n_classes=self.n_classes,
                    style_dim=self.style_dim, order=self.order, log_sigma_range=list(self.log_sigma_range))

    # -- layout helpers -------------------------------------------------------------------------
    def _run_first(self, t: torch.Tensor) -> torch.Tensor:
        """Folded ``[..., n, F]`` -> run-first ``[R, ..., b, F]`` (n = R·b), or ``[1, ..., 1, F]`` when n = 1."""
        n = t.shape[-2]
        if n == 1 and self.n_runs > 1:
            return t.unsqueeze(0)
        if n % self.n_runs:
            raise ValueError(f"batch dimension {n} is not a multiple of the {self.n_runs} stacked runs")
        t = t.reshape(*t.shape[:-2], self.n_runs, n // self.n_runs, t.shape[-1])
        return t.movedim(-3, 0)

    @staticmethod
    def _folded(t: torch.Tensor) -> torch.Tensor:
        """Run-first ``[R, ..., b, F]`` -> folded ``[..., R·b, F]``."""
        t = t.movedim(0, -3)
        return t.reshape(*t.shape[:-3], t.shape[-3] * t.shape[-2], t.shape[-1])

    @staticmethod
    def _align(t: torch.Tensor, ndim: int) -> torch.Tensor:
        """Insert singleton dimensions after the run dimension until ``t`` has ``ndim`` dimensions."""
        return t.reshape(t.shape[0], *([1] * (ndim - t.dim())), *t.shape[1:])

    def _layer(self, name: str, t: torch.Tensor) -> torch.Tensor:
        return getattr(self, name)(t, self._runs)

    def _sum(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ndim = max(a.dim(), b.dim())
        return self._align(a, ndim) + self._align(b, ndim)

    shares_features = True     # as SSVAE: the heads accept ``features=self.features(x)``

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The shared layer, run-first ``[R, b, H]``."""
        if x.dim() != 2 or x.shape[-1] != self.input_dim:
            raise ValueError(f"expected inputs [R·b, {self.input_dim}], got shape {tuple(x.shape)}")
        return F.relu(self._layer("hidden", self._run_first(x)))                  # [R, b, H]

    def _decoder_hidden(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        label = self._layer("decoder_in_label", self._run_first(self.onehot(y)))
        style = self._layer("decoder_in_style", self._run_first(z))
        return F.relu(self._sum(label, style))                                     # [R, ..., b, H]

    # -- the SSVAE interface (see models.SSVAE) ---------------------------------------------------
    def classify(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        h = self._shared_layer(x, features)
        logits = self._layer("label_head", h)
        if self.order == "style_first":
            mu, _ = self._gaussian(self._layer("style_head", h))
            logits = logits + self._layer("label_from_style", mu)
        return self._folded(logits)

    def encode(self, x: torch.Tensor, y: torch.Tensor,
               features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.order != "label_first":
            raise ValueError("encode(x, y) is q(z|x,y) of the label_first order")
        h = self._layer("style_head", self._shared_layer(x, features))
        params = self._sum(h, self._layer("style_from_label", self._run_first(self.onehot(y))))
        mu, log_sigma = self._gaussian(params)
        return self._folded(mu), self._folded(log_sigma)

    def encode_marginal(self, x: torch.Tensor,
                        features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.order != "style_first":
            raise ValueError("encode_marginal(x) is q(z|x) of the style_first order")
        h = self._shared_layer(x, features)
        mu, log_sigma = self._gaussian(self._layer("style_head", h))
        return self._folded(mu), self._folded(log_sigma)

    def classify_style(self, x: torch.Tensor, z: torch.Tensor,
                       features: torch.Tensor | None = None) -> torch.Tensor:
        if self.order != "style_first":
            raise ValueError("classify_style(x, z) exists only for the style_first order")
        h = self._shared_layer(x, features)
        logits = self._sum(self._layer("label_head", h),
                           self._layer("label_from_style", self._run_first(z)))
        return self._folded(logits)

    def decode(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self._folded(self._layer("decoder_out", self._decoder_hidden(y, z)))

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|y,z) summed over pixels, as SSVAE.log_likelihood (Σ_d x_d·l_d = h·(Wᵀx) + b·x), run-first."""
        hidden = self._decoder_hidden(y, z)                                        # [R, ..., b, H]
        weight, bias = self.decoder_out.selected(self._runs)                       # [R, D, H], [R, D]
        xr = self._run_first(x)                                                    # [R, b, D]
        x_dot = torch.bmm(xr, weight)                                              # [R, b, H]
        x_dot_logits = (hidden * self._align(x_dot, hidden.dim())).sum(-1) \
            + self._align((xr * bias[:, None, :]).sum(-1), hidden.dim() - 1)
        per_image = x_dot_logits - F.softplus(self._layer("decoder_out", hidden)).sum(-1)   # [R, ..., b]
        return self._folded(per_image.unsqueeze(-1)).squeeze(-1)


# ==========================================================================================
# one step of many runs
# ==========================================================================================
def _normal(shape, generator):
    """Standard normal noise drawn exactly as objectives draws it (on the generator's device)."""
    return torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)


def draw_step_noise(config: TrainConfig, order: str, style_dim: int, n_classes: int,
                    n_unlabelled: int | None, n_labelled: int | None, generator: torch.Generator) -> dict:
    """The noise one training step of :func:`~ssvae_lib.train.train` draws from its generator, with the
    same shapes and in the same order (``train.step_loss``: unsupervised term first, then supervised):

    * unsupervised, ``"m2"`` (enumeration): eps ``[1, B, Dz]``;
    * unsupervised, ``"ssvae"`` (concrete): label_first gumbel ``[1, B, C]`` then eps; style_first eps then
      gumbel;
    * supervised (Eq. 8 or Eq. 20 with the default proposal): eps ``[S, B_l, Dz]``.
    """
    noise = {}
    if n_unlabelled is not None:
        eps_shape, gumbel_shape = (1, n_unlabelled, style_dim), (1, n_unlabelled, n_classes)
        if config.objective == "m2":
            noise["u_eps"] = _normal(eps_shape, generator)
        elif order == "label_first":
            noise["u_gumbel"] = objectives.standard_gumbel(gumbel_shape, generator=generator)
            noise["u_eps"] = _normal(eps_shape, generator)
        else:
            noise["u_eps"] = _normal(eps_shape, generator)
            noise["u_gumbel"] = objectives.standard_gumbel(gumbel_shape, generator=generator)
    if n_labelled is not None:
        noise["l_eps"] = _normal((config.n_samples, n_labelled, style_dim), generator)
    return noise


def supervised_bounds(model, config: TrainConfig, x: torch.Tensor, y: torch.Tensor, alpha: torch.Tensor,
                      eps: torch.Tensor) -> torch.Tensor:
    """L_S(x, y) per example with a per-example α (``alpha [B]``): Eq. 8 (``"m2"``) and Eq. 20
    (``"ssvae"``) are affine in α, L_S(α) = L_S(0) + α·d, with d = log q(y|x) for Eq. 8 and
    d = (1/S) Σ_s log w^s (Eq. 19) for Eq. 20; the same value as ``objectives.supervised_bound``."""
    if config.objective == "m2":
        base = objectives.supervised_bound(model, x, y, 0.0, estimator="m2", n_samples=config.n_samples,
                                           beta=config.beta, eps=eps)
        slope = torch.log_softmax(model.classify(x), -1).gather(-1, y[:, None]).squeeze(-1)
        return base + alpha * slope
    terms = objectives.supervised_is_terms(model, x, y, n_samples=config.n_samples, beta=config.beta, eps=eps)
    base = objectives.supervised_is_estimator(*terms, 0.0, dim=0)
    slope = objectives.log_q_y_lower_bound(objectives.supervised_log_weights(terms[1], terms[2]), dim=0)
    return base + alpha * slope


def _cat(noises: list[dict], name: str) -> torch.Tensor | None:
    parts = [n[name] for n in noises if name in n]
    return torch.cat(parts, dim=1) if parts else None


# ==========================================================================================
# evaluating many runs at once
# ==========================================================================================
def draw_eval_noise(n_images: int, n_iwae: int, iwae_samples: int, style_dim: int,
                    generator: torch.Generator, batch_size: int = train_mod.EVAL_BATCH
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise :func:`~ssvae_lib.train.evaluate` draws from its generator, in its order and shapes,
    concatenated over its batches: ELBO eps ``[1, n_images, Dz]`` (one ``[1, b, Dz]`` per batch), then
    IWAE eps ``[K, n_iwae, Dz]`` (one ``[K, b, Dz]`` per batch of the first ``n_iwae`` images)."""
    def drawn(n, samples):
        parts = [_normal((samples, min(batch_size, n - start), style_dim), generator)
                 for start in range(0, n, batch_size)]
        return torch.cat(parts, dim=1)
    elbo_eps = drawn(n_images, 1)                      # all ELBO batches first, as train.evaluate
    return elbo_eps, drawn(n_iwae, iwae_samples)


def eval_rows_per_run(model, n_runs: int, iwae_samples: int, device: torch.device) -> int:
    """Images per run in one pass of :func:`evaluate_runs`: its largest tensors are the IWAE's
    ``[C, K, R·rows, D]`` decoder logits (and a few of the same size), kept within ``CPU_EVAL_PASS``
    on a CPU and ``GPU_MEMORY_FRACTION`` of the free memory on CUDA."""
    budget = CPU_EVAL_PASS
    if device.type == "cuda":
        budget = int(GPU_MEMORY_FRACTION * torch.cuda.mem_get_info(device)[0])
    per_image = 4 * 4 * model.n_classes * iwae_samples * max(model.input_dim, model.hidden_dim)
    return max(1, budget // (per_image * n_runs))


@torch.no_grad()
def evaluate_runs(stacked: StackedSSVAE, x: torch.Tensor, y: torch.Tensor, generators: Sequence[torch.Generator],
                  *, iwae_samples: int = 16, iwae_examples: int = 500, rows: int | None = None,
                  batch_size: int = train_mod.EVAL_BATCH) -> list[dict]:
    """:func:`~ssvae_lib.train.evaluate` of every run of ``stacked`` at once: run r is scored on its
    images ``x[r] [n, D]``, labels ``y[r] [n]``, with noise from ``generators[r]`` drawn exactly as
    ``train.evaluate`` draws it (:func:`draw_eval_noise`), so each run's accuracy, ELBO (Eq. 9) and IWAE
    log p(x) equal its sequential values to float rounding (``batch_size``: that of ``train.evaluate``).
    ``rows``: images per run and pass (default :func:`eval_rows_per_run`)."""
    n_runs, n = x.shape[0], x.shape[1]
    if n_runs != stacked.n_runs or len(generators) != n_runs or tuple(y.shape) != (n_runs, n):
        raise ValueError(f"evaluate_runs: {stacked.n_runs} stacked runs, images {tuple(x.shape)}, "
                         f"labels {tuple(y.shape)} and {len(generators)} generators do not match")
    n_iwae = min(iwae_examples, n)
    noise = [draw_eval_noise(n, n_iwae, iwae_samples, stacked.style_dim, g, batch_size) for g in generators]
    elbo_eps = torch.stack([e for e, _ in noise], dim=1).to(x.device)          # [1, R, n, Dz]
    iwae_eps = torch.stack([e for _, e in noise], dim=1).to(x.device)          # [K, R, n_iwae, Dz]
    rows = rows or eval_rows_per_run(stacked, n_runs, iwae_samples, x.device)
    fold = lambda t: t.reshape(*t.shape[:-3], -1, t.shape[-1])   # noqa: E731  [..., R, b, F] -> [..., R·b, F]
    correct = torch.zeros(n_runs, device=x.device)
    elbo, log_px = torch.zeros(n_runs, dtype=torch.float64), torch.zeros(n_runs, dtype=torch.float64)
    stacked.eval()
    for start in range(0, n, rows):
        xb, yb = x[:, start:start + rows], y[:, start:start + rows]
        b = xb.shape[1]
        correct += (stacked.classify(fold(xb)).argmax(-1) == yb.reshape(-1)).view(n_runs, b).sum(1)
        bound = objectives.unsupervised_bound(stacked, fold(xb), method="enumerate",
                                              eps=fold(elbo_eps[:, :, start:start + b]))
        elbo += bound.view(n_runs, b).sum(1).double().cpu()
        if start < n_iwae:
            xi = xb[:, :n_iwae - start]
            estimate = metrics.iwae_log_likelihood(stacked, fold(xi), iwae_samples,
                                                   eps=fold(iwae_eps[:, :, start:start + xi.shape[1]]))
            log_px += estimate.view(n_runs, -1).sum(1).double().cpu()
    stacked.train()
    correct = correct.cpu()
    return [{"accuracy": float(correct[r]) / n, "elbo": float(elbo[r]) / n,
             "log_likelihood": float(log_px[r]) / max(n_iwae, 1)} for r in range(n_runs)]


# ==========================================================================================
# training many runs at once
# ==========================================================================================
@dataclass
class RunOutcome:
    """One finished run of :func:`train_runs`."""

    config: TrainConfig
    history: list
    model: SSVAE
    scores: dict | None = None
    error: str | None = None
    dataset_name: str = ""
    provenance: str = ""


def stack_key(config: TrainConfig) -> tuple:
    """Runs with equal keys can share one stacked model: everything but the per-run fields must agree,
    and (fixed labelling) the labelled batch shape min(labelled_batch_size, M)."""
    rest = {k: v for k, v in config.to_dict().items() if k not in PER_RUN_FIELDS}
    per_step = None
    if config.labelling == "fixed":
        per_step = config.labelled_batch_size if config.n_labelled is None \
            else min(config.labelled_batch_size, config.n_labelled)
    return tuple(sorted(rest.items())) + (("labelled_per_step", per_step),)


def _index_dataset(ds: data_mod.Dataset) -> data_mod.Dataset:
    """The same dataset with each image replaced by its row number, so that ``train.prepare_data``
    (pool cap, validation split, labelled set: all per seed) returns row indices instead of copies."""
    rows = lambda n: torch.arange(n, dtype=torch.float32)[:, None]  # noqa: E731  (exact below 2**24)
    return dataclasses.replace(ds, x_train=rows(ds.n_train), x_test=rows(ds.n_test), image_shape=(1,),
                               factors_train=None, factors_test=None)


def _posterior_scores(model: SSVAE, x: torch.Tensor, y: torch.Tensor) -> dict:
    """``metrics.leakage_scores`` of the posterior-mean z (``model.infer_style``) against the labels."""
    z = torch.cat([model.infer_style(x[i:i + 1000]) for i in range(0, len(x), 1000)])
    return {k: float(v) for k, v in metrics.leakage_scores(z.cpu(), y.cpu()).items()}


@dataclass
class _Chunk:
    """What the runs of one stacked model need: per run the pool rows (dataset row of each pool image)
    and the prepared data for ``train._batches``; the evaluation images ``x_eval [R, n, D]`` and labels
    ``y_eval [R, n]`` (one shared copy, expanded, when every run is scored on the same images)."""

    preps: list
    pool_rows: list
    x_eval: torch.Tensor
    y_eval: torch.Tensor
    x_train: torch.Tensor
    image_shape: tuple


def _prepare_chunk(configs: Sequence[TrainConfig], ds: data_mod.Dataset, device: torch.device) -> _Chunk:
    index_ds = _index_dataset(ds)
    preps = [train_mod.prepare_data(c, index_ds) for c in configs]
    x_train, x_test = ds.x_train.to(device), ds.x_test.to(device)
    rows = [(p.eval_split, p.x_eval[:, 0].long()) for p in preps]
    source = lambda split: x_train if split == "validation" else x_test  # noqa: E731
    if all(split == rows[0][0] and torch.equal(r, rows[0][1]) for split, r in rows):
        x_eval = source(rows[0][0])[rows[0][1].to(device)].expand(len(preps), -1, -1)
        y_eval = preps[0].y_eval.to(device).expand(len(preps), -1)
    else:
        x_eval = torch.stack([source(split)[r.to(device)] for split, r in rows])
        y_eval = torch.stack([p.y_eval for p in preps]).to(device)
    return _Chunk(preps, [p.x_pool[:, 0].long() for p in preps], x_eval, y_eval, x_train, ds.image_shape)


def _step_losses(stacked: StackedSSVAE, configs, chunk: _Chunk, per_run, generators, alpha, gamma) -> torch.Tensor:
    """Every run's ``train.step_loss`` (the negative Eq. 10 minibatch estimate divided by the nominal batch size)
    for one step, ``[R]``. ``per_run``: each run's ``(unlabelled idx, labelled idx, labels)`` from
    ``train._batches``; L_U is evaluated on the runs with an unlabelled batch, L_S on those with a
    labelled batch (with the thesis's labelling a run has one or the other)."""
    first, device = configs[0], alpha.device
    lab = [r for r, (_, l, _) in enumerate(per_run) if l is not None]
    x_lab = [chunk.x_train[chunk.pool_rows[r][per_run[r][1]].to(device)] for r in lab]
    if first.augment_shift:   # drawn before the step noise, as train.train draws it
        x_lab = [data_mod.random_shift(x, chunk.image_shape, first.augment_shift, generators[r])
                 for r, x in zip(lab, x_lab)]
    noises = [draw_step_noise(c, stacked.order, stacked.style_dim, stacked.n_classes,
                              None if u is None else len(u), None if l is None else len(l), g)
              for c, (u, l, _), g in zip(configs, per_run, generators)]
    batch = torch.tensor([c.batch_size for c in configs], device=device, dtype=torch.float32)
    losses = torch.zeros(len(configs), device=device)
    unlab = [r for r, (u, _, _) in enumerate(per_run) if u is not None]
    if unlab:
        rows = torch.stack([chunk.pool_rows[r][per_run[r][0]] for r in unlab]).to(device)
        bound = objectives.unsupervised_bound(
            stacked.subset(unlab), chunk.x_train[rows.reshape(-1)],
            method="enumerate" if first.objective == "m2" else "concrete", temperature=first.temperature,
            beta=first.beta, eps=_cat([noises[r] for r in unlab], "u_eps"),
            gumbel=_cat([noises[r] for r in unlab], "u_gumbel"))
        index = torch.as_tensor(unlab, device=device)
        losses = losses.index_add(0, index, -bound.view(len(unlab), -1).sum(1) / batch[index])
    if lab:
        y = torch.stack([per_run[r][2] for r in lab]).to(device)
        index = torch.as_tensor(lab, device=device)
        bound = supervised_bounds(stacked.subset(lab), first, torch.cat(x_lab), y.reshape(-1),
                                  alpha[index].repeat_interleave(y.shape[1]), _cat([noises[r] for r in lab], "l_eps"))
        losses = losses.index_add(0, index, -gamma[index] * bound.view(len(lab), -1).sum(1) / batch[index])
    return losses


def train_runs(configs: Sequence[TrainConfig], *, dataset: data_mod.Dataset | None = None,
               scores: bool = True, progress: bool = True) -> list[RunOutcome]:
    """Train the runs of ``configs`` at once in one :class:`StackedSSVAE` (they must share
    :func:`stack_key`); each outcome matches ``train.train(config)`` up to float rounding.

    A run whose loss becomes non-finite is stopped (``error`` says where; its history ends with its last
    complete epoch) while the others go on. ``scores``: label-leakage scores of each finished run.
    """
    configs = [train_mod.fast_mode(c) for c in configs]
    if not configs:
        return []
    first = configs[0]
    if any(stack_key(c) != stack_key(first) for c in configs):
        raise ValueError("train_runs: these configs cannot share a stacked model (they differ in more than "
                         f"{PER_RUN_FIELDS}); group them with stack_key() or use run_sweep()")
    device = train_mod.resolve_device(first.device)
    if device.type == "cpu":
        settings.keep_freed_memory()
    ds = dataset if dataset is not None else data_mod.load_dataset(first.dataset, root=first.data_root)
    chunk = _prepare_chunk(configs, ds, device)
    models = []
    for c in configs:  # the initialisation of train.train, run by run
        torch.manual_seed(c.seed)
        models.append(train_mod.build_model(c, ds.input_dim, ds.n_classes).to(device))
    stacked = StackedSSVAE(models)
    optimiser = torch.optim.Adam(stacked.parameters(), lr=first.lr)
    generators = [torch.Generator(device=device).manual_seed(c.seed) for c in configs]
    eval_generators = [torch.Generator(device=device) for _ in configs]
    rngs = [np.random.default_rng(np.random.SeedSequence([c.seed, 11])) for c in configs]
    alpha = torch.tensor([c.alpha for c in configs], device=device)
    gamma = torch.tensor([c.gamma for c in configs], device=device)
    histories, errors, step = [[] for _ in configs], [None] * len(configs), 0

    from tqdm.auto import tqdm
    bar = tqdm(total=first.epochs, disable=not progress, desc=f"{len(configs)} runs", unit="epoch", leave=False)
    try:
        for epoch in range(1, first.epochs + 1):
            started, totals, count = time.perf_counter(), torch.zeros(len(configs), dtype=torch.float64), 0
            batches = [train_mod._batches(c, p, epoch, rng) for c, p, rng in zip(configs, chunk.preps, rngs)]
            for per_run in zip(*batches, strict=True):
                step += 1
                losses = _step_losses(stacked, configs, chunk, per_run, generators, alpha, gamma)
                finite = torch.isfinite(losses)
                values = losses.detach().cpu().double()
                for r in torch.nonzero(~finite.cpu()).flatten().tolist():
                    if errors[r] is None:
                        errors[r] = f"non-finite loss at epoch {epoch}, step {step}: {values[r].item()}; run stopped"
                optimiser.zero_grad(set_to_none=True)
                torch.where(finite, losses, torch.zeros_like(losses)).sum().backward()
                optimiser.step()
                totals, count = totals + values, count + 1
            train_seconds = time.perf_counter() - started
            alive = [r for r in range(len(configs)) if errors[r] is None]
            for g, r in zip(eval_generators, alive):   # as train.train seeds its evaluation each epoch
                g.manual_seed(configs[r].seed + train_mod.EVAL_SEED_OFFSET)
            x_eval, y_eval = (chunk.x_eval, chunk.y_eval) if len(alive) == len(configs) else \
                (chunk.x_eval[alive], chunk.y_eval[alive])
            scores_now = evaluate_runs(stacked.subset(alive), x_eval, y_eval,
                                       eval_generators[:len(alive)], iwae_samples=first.iwae_samples,
                                       iwae_examples=first.iwae_examples)
            for r, result in zip(alive, scores_now):
                split = chunk.preps[r].eval_split
                histories[r].append({"epoch": epoch, "step": step, "train_loss": float(totals[r]) / max(count, 1),
                                     **{f"{split}_{k}": v for k, v in result.items()},
                                     "train_seconds": train_seconds, "wall_seconds": time.perf_counter() - started})
            bar.update(1)
            if all(e is not None for e in errors):
                break
    finally:
        bar.close()
    outcomes = []
    for r, c in enumerate(configs):
        models[r].load_state_dict(stacked.run_state_dict(r))
        models[r].eval()
        ok = scores and errors[r] is None
        run_scores = _posterior_scores(models[r], chunk.x_eval[r], chunk.y_eval[r]) if ok else None
        outcomes.append(RunOutcome(c, histories[r], models[r], run_scores, errors[r], ds.name, ds.provenance))
    return outcomes


# ==========================================================================================
# chunking: how many runs fit on the device
# ==========================================================================================
def bytes_per_run(config: TrainConfig, input_dim: int, n_classes: int) -> int:
    """Rough upper estimate of the memory one run adds to a stacked training step (float32): parameters
    with their gradient and two Adam moments, plus about six tensors of the decoder's largest activation
    (logits, softplus, their product and gradients) for the unlabelled term (C enumerated classes for
    "m2", one concrete sample for "ssvae") and the supervised term (S samples)."""
    n_params = sum(p.numel() for p in train_mod.build_model(config, input_dim, n_classes).parameters())
    labelled = config.batch_size if config.labelling == "thesis" else config.labelled_batch_size
    rows = config.batch_size * (n_classes if config.objective == "m2" else 1) + labelled * config.n_samples
    return 4 * (4 * n_params + 6 * rows * (input_dim + config.hidden_dim) + 2 * config.batch_size * input_dim)


def runs_per_chunk(config: TrainConfig, input_dim: int, n_classes: int, device: torch.device | str,
                   max_runs: int | None = None) -> int:
    """How many runs of this shape to stack at once: as many as fit the device's memory budget by
    :func:`bytes_per_run` (CUDA: ``GPU_MEMORY_FRACTION`` of the free memory; CPU: ``CPU_MEMORY_BUDGET``),
    and at most ``max_runs`` (default: no further cap on CUDA, ``CPU_MAX_RUNS`` on a CPU, where larger
    stacks stop paying off). Always at least one."""
    device = torch.device(device)
    per_run = bytes_per_run(config, input_dim, n_classes)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        fit = int(GPU_MEMORY_FRACTION * free // per_run)
    else:
        fit = int(CPU_MEMORY_BUDGET // per_run)
        max_runs = CPU_MAX_RUNS if max_runs is None else max_runs
    return max(1, fit if max_runs is None else min(fit, max_runs))


# ==========================================================================================
# grouping runs that can share a stacked model
# ==========================================================================================
def plan(configs: Sequence[TrainConfig]) -> list[list[TrainConfig]]:
    """Group (effective) configs by :func:`stack_key`, keeping the grid order within each group."""
    groups: dict[tuple, list[TrainConfig]] = {}
    for c in configs:
        groups.setdefault(stack_key(c), []).append(c)
    return list(groups.values())
