"""The engine: one training step, one evaluation and one loop, for R >= 1 runs of the one model.

``train.train(config)`` is :func:`train_runs` of one config; a sweep trains many at once. R runs of one
architecture are vectorised from the same :class:`~ssvae_lib.models.SSVAE` with ``torch.func``
(:class:`Runs`: ``stack_module_state`` + ``functional_call`` + ``vmap``), with all noise passed in
explicitly. Each run keeps what makes it itself: its initialisation (``torch.manual_seed(seed)``), its
pool, labelled set, corrupted labels and batch order (``schedule.batches`` with its own ``rng``), its own
noise stream (:func:`draw_step_noise` / :func:`draw_eval_noise`, the one place that fixes the order of
the draws), its α and γ, and its Adam state (Adam is elementwise: one Adam over stacked parameters is R
independent Adams). Run r of a stack equals training it alone up to float rounding.

The thesis's batch-keyed labelling makes a step supervised for some runs and unsupervised for others:
runs are grouped by which terms their step has, and each group is one vectorised call.

The CCVAE (``objective="ccvae"``, ``models.CCVAE``) goes through the same step, loop and evaluation: only
:func:`bounds` (its Eq. 4 and Eq. 5) and the evaluation's bound and IWAE estimate differ. :func:`fit` is the
same loop for a model trained on one set of examples without a labelled schedule (the K-label model of
``multilabel``, the pairs of ``weak``).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from . import data as data_mod
from . import metrics, objectives, settings
from .config import TrainConfig, build_model, fast_mode, resolve_device
from .models import SSVAE
from .schedule import PreparedData, batches, prepare_data

EVAL_SEED_OFFSET = 1_000_003   # evaluation noise: generator seeded with seed + this, every epoch
EVAL_BATCH = 500               # images per evaluation batch (each batch draws its own noise)
# TrainConfig fields that may differ between runs trained together.
PER_RUN_FIELDS = ("seed", "n_labelled", "alpha", "gamma", "corruption_rate", "corruption_protocol")
CPU_MAX_RUNS = 8                 # runs per stack on a CPU (benchmarks/sweep_throughput.py)
CPU_MEMORY_BUDGET = 2 << 30      # bytes a chunk may use on a CPU
CPU_EVAL_PASS = 512 << 20        # bytes of one evaluation pass on a CPU
GPU_MEMORY_FRACTION = 0.6        # share of the free GPU memory a chunk may use
# A run diverges when a step's loss is not finite or exceeds this many times its first step's loss (in
# magnitude, at least 1 nat per image): a sane run's loss falls from its first step, it never grows 10,000-fold.
DIVERGENCE_FACTOR = 10_000


# -- noise: the order of every draw, defined once ------------------------------------------
def _normal(shape, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else None
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32)


def draw_step_noise(config: TrainConfig, model: SSVAE, n_unlabelled: int | None, n_labelled: int | None,
                    generator: torch.Generator | None) -> dict:
    """The noise of one step (from torch's global generator when ``generator`` is None), in the order the
    bounds use it: the unsupervised term first (``"m2"``
    enumeration: eps ``[1, B, Dz]``; ``"ssvae"`` concrete: label_first gumbel ``[1, B, C]`` then eps,
    style_first eps then gumbel), then the supervised term (eps ``[S, B_l, Dz]``)."""
    noise, dz, c = {}, model.latent_dim, model.n_classes
    if n_unlabelled is not None:
        if config.objective in ("m2", "ccvae") or model.order == "style_first":
            noise["u_eps"] = _normal((1, n_unlabelled, dz), generator)
        if config.objective == "ssvae":
            noise["u_gumbel"] = objectives.standard_gumbel((1, n_unlabelled, c), generator=generator)
        if config.objective == "ssvae" and model.order == "label_first":
            noise["u_eps"] = _normal((1, n_unlabelled, dz), generator)
    if n_labelled is not None:
        noise["l_eps"] = _normal((config.n_samples, n_labelled, dz), generator)
    return noise


def draw_eval_noise(n_images: int, n_iwae: int, iwae_samples: int, latent_dim: int,
                    generator: torch.Generator | None, batch_size: int = EVAL_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise of one evaluation, one draw per batch of ``batch_size`` images: ELBO eps
    ``[1, n_images, Dz]`` (all batches), then IWAE eps ``[K, n_iwae, Dz]``."""
    def drawn(n, samples):
        return torch.cat([_normal((samples, min(batch_size, n - start), latent_dim), generator)
                          for start in range(0, n, batch_size)], dim=1)
    return drawn(n_images, 1), drawn(n_iwae, iwae_samples)


# -- one run: the step's terms and the evaluation's sums, as functions of (model, inputs) ---
def bounds(model, config: TrainConfig, x: torch.Tensor, y: torch.Tensor | None, *, alpha=None, beta=None,
           noise: dict | None = None, generator: torch.Generator | None = None,
           validate: bool = True) -> torch.Tensor:
    """Per-example bound to maximise: L_S(x, y) (Eq. 8, or Eq. 20 as written or importance-weighted by
    ``config.supervised_estimator``) when labels are given, L_U(x) (Eq. 9,
    enumerated or concrete) otherwise; noise from ``noise`` (see :func:`draw_step_noise`) or drawn.
    ``beta``: the style's KL weight (a number or a learned tensor; default ``config.beta``)."""
    noise = noise or {}
    alpha = config.alpha if alpha is None else alpha
    beta = config.beta if beta is None else beta
    if config.objective == "ccvae":
        if y is not None:
            return objectives.characteristic_supervised_bound(model, x, y, alpha,
                                                              n_samples=config.n_samples, eps=noise.get("l_eps"),
                                                              generator=generator, validate=validate)
        return objectives.characteristic_unsupervised_bound(model, x, eps=noise.get("u_eps"), generator=generator,
                                                            validate=validate)
    if y is not None:
        estimator = "m2" if config.objective == "m2" else "is"
        weighted = estimator == "is" and config.supervised_estimator == "importance_weighted"
        return objectives.supervised_bound(model, x, y, alpha, estimator=estimator, n_samples=config.n_samples,
                                           weighted=weighted, beta=beta, eps=noise.get("l_eps"),
                                           generator=generator, validate=validate)
    method = "enumerate" if config.objective == "m2" else "concrete"
    return objectives.unsupervised_bound(model, x, method=method, temperature=config.temperature,
                                         beta=beta, eps=noise.get("u_eps"), gumbel=noise.get("u_gumbel"),
                                         generator=generator, validate=validate)


def step_terms(model, config: TrainConfig, inputs: dict, validate: bool = False) -> torch.Tensor:
    """[unsupervised, supervised] terms of the negative Eq. 10 minibatch estimate, each divided by the
    nominal unlabelled batch ``config.batch_size`` (also for an epoch's smaller last batch, so no step
    over-weights the labelled term). ``inputs``: ``x_u`` and/or ``x_l, y_l``, their noise, ``alpha`` and
    ``gamma`` (numbers, or tensors when runs are vectorised).

    ``config.learn_beta`` (L-VAE, 003 Eq. 6): with s = exp(model.log_loss_weights) the loss is
    (reconstruction)/s₀ + KL/s₁ + s₀ + s₁, i.e. the negative bound at β̂ = s₀/s₁, divided by s₀, plus s₀ + s₁
    (added to the unsupervised term); at its minimum s₀ = √reconstruction, s₁ = √KL."""
    unsupervised = supervised = torch.zeros((), device=inputs.get("x_u", inputs.get("x_l")).device)
    beta, scale = None, 1.0
    if config.learn_beta:
        log_s = model.log_loss_weights
        beta, scale = torch.exp(log_s[0] - log_s[1]), torch.exp(-log_s[0])
        unsupervised = log_s.exp().sum()
    if "x_u" in inputs:
        bound = bounds(model, config, inputs["x_u"], None, beta=beta, noise=inputs, validate=validate)
        unsupervised = unsupervised - scale * bound.sum() / config.batch_size
    if "x_l" in inputs:
        bound = bounds(model, config, inputs["x_l"], inputs["y_l"], alpha=inputs["alpha"], beta=beta,
                       noise=inputs, validate=validate)
        supervised = -scale * inputs["gamma"] * bound.sum() / config.batch_size
    return torch.stack([unsupervised, supervised])


def step_loss(model, config: TrainConfig, x_unlab, x_lab, y_lab, generator=None) -> tuple[torch.Tensor, dict]:
    """One run's loss for one step (noise drawn from ``generator`` by :func:`draw_step_noise`) and its
    terms by name: the step the engine takes, for one model."""
    noise = draw_step_noise(config, model, None if x_unlab is None else len(x_unlab),
                            None if x_lab is None else len(x_lab), generator)
    inputs = {**noise, "alpha": config.alpha, "gamma": config.gamma}
    if x_unlab is not None:
        inputs["x_u"] = x_unlab
    if x_lab is not None:
        inputs.update(x_l=x_lab, y_l=y_lab)
    terms = step_terms(model, config, inputs, validate=True)
    named = {name: term for name, key, term in zip(("unsupervised", "supervised"), ("x_u", "x_l"), terms)
             if key in inputs}
    return terms.sum(), named


def _elbo_sums(model, x, y, eps):
    """(correct predictions, Σ ELBO) of one batch: argmax q(y|x) and Eq. 9 by enumeration (for a CCVAE its
    Eq. 5, Joy et al. 2021)."""
    correct = (model.classify(x).argmax(-1) == y).sum().float()
    if hasattr(model, "conditional_prior"):
        return correct, objectives.characteristic_unsupervised_bound(model, x, eps=eps, validate=False).sum()
    return correct, objectives.unsupervised_bound(model, x, method="enumerate", eps=eps, validate=False).sum()


def _iwae_sum(model, x, eps):
    return metrics.iwae_log_likelihood(model, x, eps.shape[0], eps=eps, validate=False).sum()


# -- many runs of one model ----------------------------------------------------------------
class Runs:
    """R models of one architecture as one set of trainable tensors. With R = 1 these are the model's own
    parameters (trained in place); with R > 1 they are stacked along a leading run dimension
    (``torch.func.stack_module_state``) and :meth:`map` evaluates a function of the model for several runs
    at once with ``vmap`` over ``functional_call``."""

    def __init__(self, models: Sequence[SSVAE]):
        if not models:
            raise ValueError("Runs needs at least one model")
        for m in models[1:]:
            if m.config() != models[0].config():
                raise ValueError(f"runs differ in architecture: {m.config()} vs {models[0].config()}")
        self.models, self.n_runs = list(models), len(models)
        if self.n_runs > 1:
            self.params, _ = stack_module_state(self.models)
            self.base = copy.deepcopy(self.models[0]).to("meta")

    def parameters(self) -> list[torch.Tensor]:
        return list(self.models[0].parameters()) if self.n_runs == 1 else list(self.params.values())

    def map(self, fn, runs: Sequence[int], inputs: dict) -> torch.Tensor:
        """``fn(model_r, inputs_r)`` for each selected run r, stacked; ``inputs`` hold one row per selected run."""
        if self.n_runs == 1:
            return fn(self.models[0], {k: v[0] for k, v in inputs.items()})[None]
        params = self.params if len(runs) == self.n_runs else \
            {k: v[torch.as_tensor(list(runs), device=v.device)] for k, v in self.params.items()}
        return vmap(lambda p, inp: functional_call(self.base, p, (fn, inp)))(params, inputs)

    def weights(self) -> list[torch.Tensor]:
        """A copy of :meth:`parameters` (every run's weights), for :meth:`copy_weights`."""
        return [p.detach().clone() for p in self.parameters()]

    @torch.no_grad()
    def copy_weights(self, source: list[torch.Tensor], target: list[torch.Tensor], runs: Sequence[int]) -> None:
        """The weights of ``runs`` from ``source`` into ``target`` (lists like :meth:`parameters`)."""
        if not runs:
            return
        for s, t in zip(source, target):
            if self.n_runs == 1:
                t.copy_(s)
            else:
                index = torch.as_tensor(list(runs), device=t.device)
                t[index] = s[index]

    def model(self, run: int) -> SSVAE:
        """Run ``run``'s model with its current weights (the model itself when R = 1)."""
        model = self.models[run]
        if self.n_runs > 1:
            model.load_state_dict({k: v[run].detach() for k, v in self.params.items()})
        return model

    def train(self, mode: bool = True) -> None:
        for m in self.models:
            m.train(mode)
        if self.n_runs > 1:
            self.base.train(mode)


def eval_rows_per_run(model: SSVAE, n_runs: int, iwae_samples: int, device: torch.device) -> int:
    """Images per run in one evaluation pass: its largest tensors are the IWAE's ``[C, K, rows, D]``
    decoder outputs (and a few of that size), kept within ``CPU_EVAL_PASS`` on a CPU and
    ``GPU_MEMORY_FRACTION`` of the free memory on CUDA."""
    budget = CPU_EVAL_PASS
    if device.type == "cuda":
        budget = int(GPU_MEMORY_FRACTION * torch.cuda.mem_get_info(device)[0])
    per_image = 4 * 4 * model.n_classes * iwae_samples * max(model.input_dim, model.hidden_dim)
    return max(1, budget // (per_image * n_runs))


@torch.no_grad()
def evaluate_runs(runs: Runs, x: torch.Tensor, y: torch.Tensor, generators: Sequence[torch.Generator], *,
                  iwae_samples: int = 16, iwae_examples: int = 500, rows: int | None = None,
                  batch_size: int = EVAL_BATCH) -> list[dict]:
    """Per run r: accuracy of argmax q(y|x), mean ELBO (Eq. 9, exact enumeration) and mean IWAE estimate of
    log p(x) with ``iwae_samples`` samples on the first ``iwae_examples`` images (nats per image), on its
    images ``x[r] [n, D]`` and labels ``y[r] [n]``, with noise from ``generators[r]``
    (:func:`draw_eval_noise`, one draw per ``batch_size`` images). ``rows``: images per run and pass. The
    images are the callers' to check (``model.check_input``: :func:`evaluate`, :func:`train_runs`)."""
    n_runs, n = x.shape[0], x.shape[1]
    if n_runs != runs.n_runs or len(generators) != n_runs or tuple(y.shape) != (n_runs, n) or n == 0:
        raise ValueError(f"evaluate: {runs.n_runs} runs, images {tuple(x.shape)}, labels {tuple(y.shape)} "
                         f"and {len(generators)} generators do not match (one row of n > 0 images per run)")
    n_iwae = min(iwae_examples, n)
    noise = [draw_eval_noise(n, n_iwae, iwae_samples, runs.models[0].latent_dim, g, batch_size) for g in generators]
    elbo_eps = torch.stack([e for e, _ in noise]).to(x.device)            # [R, 1, n, Dz]
    iwae_eps = torch.stack([e for _, e in noise]).to(x.device)            # [R, K, n_iwae, Dz]
    rows = rows or eval_rows_per_run(runs.models[0], n_runs, iwae_samples, x.device)
    every = list(range(n_runs))
    totals = torch.zeros(3, n_runs, dtype=torch.float64)
    training = runs.models[0].training
    runs.train(False)
    for start in range(0, n, rows):
        part = slice(start, start + rows)
        correct, elbo = runs.map(lambda m, i: torch.stack(_elbo_sums(m, i["x"], i["y"], i["eps"])), every,
                                 {"x": x[:, part], "y": y[:, part], "eps": elbo_eps[:, :, part]}).T
        totals[0] += correct.double().cpu()
        totals[1] += elbo.double().cpu()
        if start < n_iwae:
            part = slice(start, min(start + rows, n_iwae))
            totals[2] += runs.map(lambda m, i: _iwae_sum(m, i["x"], i["eps"]), every,
                                  {"x": x[:, part], "eps": iwae_eps[:, :, part]}).double().cpu()
    runs.train(training)                   # left in the mode it was found in
    return [{"accuracy": float(totals[0, r]) / n, "elbo": float(totals[1, r]) / n,
             "log_likelihood": float(totals[2, r]) / n_iwae} for r in range(n_runs)]


def evaluate(model: SSVAE, x: torch.Tensor, y: torch.Tensor, *, iwae_samples: int = 16,
             iwae_examples: int = 500, batch_size: int = EVAL_BATCH, generator=None) -> dict:
    """:func:`evaluate_runs` of one model on images ``x [n, D]`` (``model.check_input``) with integer labels
    ``y [n]`` (noise from ``generator``, else from torch's global generator)."""
    x = model.check_input(x)
    if len(x) == 0:
        raise ValueError("evaluate needs at least one image, got an empty batch")
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or tuple(y.shape) != (len(x),):
        got = f"{list(y.shape)} {y.dtype}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"labels y must be integer class indices of shape [{len(x)}], got {got} "
                         "(for one-hot labels pass y.argmax(1))")
    if int(y.min()) < 0 or int(y.max()) >= model.n_classes:
        raise ValueError(f"labels must lie in [0, {model.n_classes - 1}], got {int(y.min())} to {int(y.max())}")
    return evaluate_runs(Runs([model]), x[None], y[None].to(x.device), [generator], iwae_samples=iwae_samples,
                         iwae_examples=iwae_examples, rows=batch_size, batch_size=batch_size)[0]


@torch.no_grad()
def predict(model: SSVAE, x: torch.Tensor, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """argmax q(y|x) per image, in batches (deterministic: no sampling)."""
    return torch.cat([model.classify(x[start:start + batch_size]).argmax(-1)
                      for start in range(0, len(x), batch_size)])


# -- the loop ------------------------------------------------------------------------------
def upgrade_record(record: dict) -> dict:
    """A history record in the current form: the split as a field and plain score names. Records written
    before the split became a field carry it as a prefix (``test_accuracy``); they are rewritten."""
    if "split" in record:
        return record
    split = "validation" if "validation_accuracy" in record else "test"
    prefix = split + "_"
    return {"split": split, **{k[len(prefix):] if k.startswith(prefix) else k: v for k, v in record.items()}}


class DivergenceError(FloatingPointError):
    """A run diverged (a loss term not finite, or past ``DIVERGENCE_FACTOR`` times its first step's); names
    the step and the term. ``result`` keeps the run so far: the history up to the last complete epoch and
    the model with that epoch's weights."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


@dataclass
class TrainState:
    """What callbacks see: the live run."""

    config: TrainConfig
    model: SSVAE
    history: list
    epoch: int = 0
    step: int = 0
    steps_per_epoch: int = 0
    loss: float = float("nan")


class Callback:
    """Override any of these; ``every_n_steps`` sets how often ``on_step`` fires."""

    every_n_steps: int = 50

    def on_train_begin(self, state: TrainState): ...
    def on_step(self, state: TrainState): ...
    def on_epoch_end(self, state: TrainState): ...
    def on_train_end(self, state: TrainState): ...


@dataclass
class RunOutcome:
    """One run of :func:`train_runs`: ``error`` says why it stopped if it diverged (its history then ends
    with its last complete epoch); ``stopped_early`` when Ctrl-C or ``stop`` ended the training."""

    config: TrainConfig
    history: list
    model: SSVAE
    scores: dict | None = None
    error: str | None = None
    dataset_name: str = ""
    provenance: str = ""
    stopped_early: bool = False


def stack_key(config: TrainConfig) -> tuple:
    """Runs with equal keys can be trained together: everything but the per-run fields must agree, and
    (fixed labelling) the labelled batch shape min(labelled_batch_size, M)."""
    rest = {k: v for k, v in config.to_dict().items() if k not in PER_RUN_FIELDS}
    per_step = None
    if config.labelling == "fixed":
        per_step = config.labelled_batch_size if config.n_labelled is None \
            else min(config.labelled_batch_size, config.n_labelled)
    return tuple(sorted(rest.items())) + (("labelled_per_step", per_step),)


def plan(configs: Sequence[TrainConfig]) -> list[list[TrainConfig]]:
    """Group configs by :func:`stack_key`, keeping their order within each group."""
    groups: dict[tuple, list[TrainConfig]] = {}
    for c in configs:
        groups.setdefault(stack_key(c), []).append(c)
    return list(groups.values())


def _index_dataset(ds: data_mod.Dataset) -> data_mod.Dataset:
    """The dataset with each image replaced by its row number, so that ``prepare_data`` (pool cap,
    validation split, labelled set: all per seed) returns rows of the one copy of the images."""
    rows = lambda n: torch.arange(n, dtype=torch.float32)[:, None]  # noqa: E731  (exact below 2**24)
    return dataclasses.replace(ds, x_train=rows(ds.n_train), x_test=rows(ds.n_test), image_shape=(1,),
                               factors_train=None, factors_test=None)


def posterior_scores(model: SSVAE, x: torch.Tensor, y: torch.Tensor) -> dict:
    """``metrics.leakage_scores`` of the posterior-mean z (``model.infer_style``) against the labels."""
    z = torch.cat([model.infer_style(x[i:i + 1000]) for i in range(0, len(x), 1000)])
    return {k: float(v) for k, v in metrics.leakage_scores(z.cpu(), y.cpu()).items()}


def _diverged(terms: torch.Tensor, first: float, epoch: int, step: int) -> str | None:
    """Why a run's step counts as diverged (see ``DIVERGENCE_FACTOR``), or None. ``terms``: its
    [unsupervised, supervised] loss terms; ``first``: its first step's loss."""
    where, loss = f"at epoch {epoch}, step {step}", float(terms.sum())
    if not math.isfinite(loss):
        names = [n for n, t in zip(("unsupervised", "supervised"), terms.tolist()) if not math.isfinite(t)]
        values = ", ".join(str(t) for t in terms.tolist() if not math.isfinite(t))
        return f"non-finite loss {where}: term(s) {', '.join(names) or 'total'} = {values}"
    if abs(loss) > DIVERGENCE_FACTOR * max(abs(first), 1.0):
        return (f"loss exploded {where}: {loss:.4g} nats per image, more than {DIVERGENCE_FACTOR:,} times the "
                f"first step's ({first:.4g}); lower lr")
    return None


def train_runs(configs: Sequence[TrainConfig], *, dataset: data_mod.Dataset | None = None, scores: bool = True,
               progress: bool = True, callbacks: Iterable[Callback] = (),
               stop: threading.Event | None = None) -> list[RunOutcome]:
    """Train the runs of ``configs`` together (they must share :func:`stack_key`). A run whose loss turns
    non-finite stops (``error``) while the others go on; Ctrl-C or ``stop.set()`` ends all of them cleanly
    (``stopped_early``). ``scores``: label-leakage scores of each finished run; ``callbacks``: see :class:`Callback` (one run)."""
    configs = [fast_mode(c) for c in configs]
    if not configs:
        return []
    first = configs[0]
    if any(stack_key(c) != stack_key(first) for c in configs):
        raise ValueError("train_runs: these configs cannot be trained together (they differ in more than "
                         f"{PER_RUN_FIELDS}); group them with plan()")
    device = resolve_device(first.device)
    if device.type == "cpu":
        settings.keep_freed_memory()
    ds = dataset if dataset is not None else data_mod.load_dataset(first.dataset, root=first.data_root)
    index_ds = _index_dataset(ds)
    preps: list[PreparedData] = [prepare_data(c, index_ds) for c in configs]
    x_train, x_test = ds.x_train.to(device), ds.x_test.to(device)
    scored = {"validation": x_train, "test": x_test}            # the images evaluation scores
    if first.binarize:
        scored = {"validation": data_mod.binarized(ds.x_train).to(device),
                  "test": data_mod.binarized(ds.x_test).to(device)}
    pool_rows = [p.x_pool[:, 0].long().to(device) for p in preps]
    x_eval = torch.stack([scored[p.eval_split][p.x_eval[:, 0].long().to(device)] for p in preps])
    y_eval = torch.stack([p.y_eval for p in preps]).to(device)
    models = []
    for c in configs:
        torch.manual_seed(c.seed)
        models.append(build_model(c, ds.input_dim, ds.n_classes).to(device))
    for x in (x_train, x_test):                # checked once, where the data enter
        models[0].check_input(x)
    runs = Runs(models)
    good = runs.weights()     # each run's weights at the end of its last complete epoch
    optimiser = torch.optim.Adam(runs.parameters(), lr=first.lr)
    generators = [torch.Generator(device=device).manual_seed(c.seed) for c in configs]
    eval_generators = [torch.Generator(device=device) for _ in configs]
    rngs = [np.random.default_rng(np.random.SeedSequence([c.seed, 11])) for c in configs]
    alpha = torch.tensor([c.alpha for c in configs], device=device, dtype=torch.float32)
    gamma = torch.tensor([c.gamma for c in configs], device=device, dtype=torch.float32)
    n_runs = len(configs)
    histories, errors, first_loss = [[] for _ in configs], [None] * n_runs, None
    callbacks = list(callbacks)
    if callbacks and n_runs > 1:
        raise ValueError("train_runs: callbacks watch a single run; train one config to use them")
    state = TrainState(first, models[0], histories[0])
    state.steps_per_epoch = math.ceil(len(preps[0].y_pool) / first.batch_size)
    bar = tqdm(total=first.epochs * state.steps_per_epoch, disable=not progress, unit="step", leave=False,
               desc="training" if n_runs == 1 else f"{n_runs} runs")
    stopped = False
    for cb in callbacks:
        cb.on_train_begin(state)
    try:
        for epoch in range(1, first.epochs + 1):
            state.epoch = epoch
            started, totals, count = time.perf_counter(), torch.zeros(n_runs, dtype=torch.float64), 0
            schedules = [batches(c, p, epoch, rng) for c, p, rng in zip(configs, preps, rngs)]
            weight = gamma if epoch > first.pretrain_epochs else torch.zeros_like(gamma)   # pretraining: no labels
            for per_run in zip(*schedules, strict=True):
                if stop is not None and stop.is_set():
                    raise KeyboardInterrupt
                state.step += 1
                terms = _step(runs, configs, per_run, errors, x_train, pool_rows, ds.image_shape, generators,
                              alpha, weight)
                losses = terms.sum(1)
                values = terms.detach().cpu().double()
                first_loss = values.sum(1) if first_loss is None else first_loss
                for r in range(n_runs):
                    if errors[r] is None:
                        errors[r] = _diverged(values[r], float(first_loss[r]), epoch, state.step)
                if all(e is not None for e in errors):
                    break                          # no step: the last run keeps its last finite weights
                alive = torch.tensor([e is None for e in errors], device=device)
                optimiser.zero_grad(set_to_none=True)
                torch.where(alive, losses, torch.zeros_like(losses)).sum().backward()
                optimiser.step()
                totals, count = totals + values.sum(1), count + 1
                state.loss = float(values[0].sum())
                bar.update(1)
                for cb in callbacks:
                    if state.step % max(cb.every_n_steps, 1) == 0:
                        cb.on_step(state)
            train_seconds = time.perf_counter() - started
            alive = [r for r in range(n_runs) if errors[r] is None]
            if not alive:
                break
            for r in alive:   # every epoch's evaluation draws the same noise
                eval_generators[r].manual_seed(configs[r].seed + EVAL_SEED_OFFSET)
            view = runs if len(alive) == n_runs else Runs([runs.model(r) for r in alive])
            evaluated = evaluate_runs(view, x_eval[alive], y_eval[alive], [eval_generators[r] for r in alive],
                                      iwae_samples=first.iwae_samples, iwae_examples=first.iwae_examples,
                                      rows=EVAL_BATCH if n_runs == 1 else None)
            runs.copy_weights(runs.parameters(), good, alive)
            for r, result in zip(alive, evaluated):
                if first.learn_beta:
                    result["learned_beta"] = runs.model(r).learned_beta()
                histories[r].append({"epoch": epoch, "step": state.step, "split": preps[r].eval_split,
                                     "train_loss": float(totals[r]) / max(count, 1), **result,
                                     "train_seconds": train_seconds, "wall_seconds": time.perf_counter() - started})
            bar.set_postfix(epoch=epoch, loss=f"{float(totals[0]) / max(count, 1):.1f}")
            for cb in callbacks:
                cb.on_epoch_end(state)
    except KeyboardInterrupt:
        stopped = True
    finally:
        bar.close()
    runs.copy_weights(good, runs.parameters(), [r for r in range(n_runs) if errors[r] is not None])
    for cb in callbacks:
        cb.on_train_end(state)
    outcomes = []
    for r, c in enumerate(configs):
        model = runs.model(r)
        model.eval()
        run_scores = posterior_scores(model, x_eval[r], y_eval[r]) if scores and errors[r] is None else None
        outcomes.append(RunOutcome(c, histories[r], model, run_scores, errors[r], ds.name, ds.provenance, stopped))
    return outcomes


def fit_examples(config, n_examples: int):
    """What :func:`fit` trains on for ``config`` (a dataclass with ``epochs``, ``max_train`` and ``seed``):
    the config after the fast-mode shrink (``SSVAE_FAST``: at most 2 epochs and 1,500 examples) and the
    sorted rows kept of the ``n_examples`` (``max_train`` of them drawn with numpy seeded ``seed``; all of
    them when it is None or not smaller), int64 ``[n_kept]``."""
    if settings.FAST:
        cap = 1500 if config.max_train is None else min(config.max_train, 1500)
        config = dataclasses.replace(config, epochs=min(config.epochs, 2), max_train=cap)
    if config.max_train is None or config.max_train >= n_examples:
        return config, torch.arange(n_examples)
    return config, torch.as_tensor(np.sort(np.random.default_rng(config.seed).permutation(n_examples)
                                           [:config.max_train]))


def fit(model: torch.nn.Module, batch_loss, n_examples: int, *, epochs: int, batch_size: int, lr: float,
        seed: int, evaluate=None, stream: int = 23, progress: bool = False) -> list[dict]:
    """The loop of a model trained on one set of examples (no labelled/unlabelled schedule): each epoch
    visits the ``n_examples`` rows in a shuffled order (numpy, seeded ``[seed, stream]``) in batches of
    ``batch_size``, and Adam (``lr``) takes a step on ``batch_loss(rows, generator)`` (a scalar to minimise;
    ``generator``: the run's noise stream, seeded ``seed``). After each epoch ``evaluate(generator)`` (its
    generator re-seeded with ``seed + EVAL_SEED_OFFSET``, so every epoch draws the same noise) adds its
    scores to the epoch's record. A non-finite loss raises :class:`DivergenceError`. Returns the history.
    Seed torch before building the model: same seed, same result on the CPU."""
    device = next(model.parameters()).device
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator(device=device).manual_seed(seed)
    eval_generator = torch.Generator(device=device)
    rng = np.random.default_rng(np.random.SeedSequence([seed, stream]))
    history, steps = [], math.ceil(n_examples / batch_size)
    bar = tqdm(total=epochs * steps, disable=not progress, unit="step", leave=False, desc="training")
    for epoch in range(1, epochs + 1):
        started, total, count = time.perf_counter(), 0.0, 0
        for rows in torch.as_tensor(rng.permutation(n_examples), device=device).split(batch_size):
            loss = batch_loss(rows, generator)
            if not torch.isfinite(loss):
                bar.close()
                raise DivergenceError(f"non-finite loss at epoch {epoch}: {float(loss.detach())}")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total, count = total + float(loss.detach()), count + 1
            bar.update(1)
        record = {"epoch": epoch, "train_loss": total / count}
        if evaluate is not None:
            eval_generator.manual_seed(seed + EVAL_SEED_OFFSET)
            model.eval()
            record.update(evaluate(eval_generator))
            model.train()
        history.append({**record, "seconds": time.perf_counter() - started})
    bar.close()
    model.eval()
    return history


def _step(runs: Runs, configs, per_run, errors, x_train, pool_rows, image_shape, generators, alpha, gamma):
    """Every live run's [unsupervised, supervised] terms of one step, ``[R, 2]`` (zeros for stopped runs).
    ``per_run``: each run's (unlabelled rows, labelled rows, observed labels) from ``schedule.batches``;
    runs with the same terms are one vectorised call."""
    first, device = configs[0], alpha.device
    groups: dict[tuple, list[int]] = {}
    rows = [{} for _ in configs]
    for r, (u, l, y) in enumerate(per_run):
        if errors[r] is not None:
            continue
        groups.setdefault((u is not None, l is not None), []).append(r)
        if l is not None:
            x_l = x_train[pool_rows[r][l.to(device)]]
            if first.augment_shift:   # drawn before the step noise
                x_l = data_mod.random_shift(x_l, image_shape, first.augment_shift, generators[r])
            if first.binarize:        # then the labelled, then the unlabelled binarisation
                x_l = torch.bernoulli(x_l, generator=generators[r])
            rows[r].update(x_l=x_l, y_l=y.to(device))
        if u is not None:
            x_u = x_train[pool_rows[r][u.to(device)]]
            rows[r]["x_u"] = torch.bernoulli(x_u, generator=generators[r]) if first.binarize else x_u
        rows[r].update(draw_step_noise(configs[r], runs.models[0], None if u is None else len(u),
                                       None if l is None else len(l), generators[r]))
    terms = torch.zeros(len(configs), 2, device=device)
    for members in groups.values():
        inputs = {k: torch.stack([rows[r][k] for r in members]) for k in rows[members[0]]}
        index = torch.as_tensor(members, device=device)
        inputs.update(alpha=alpha[index], gamma=gamma[index])
        values = runs.map(lambda m, i: step_terms(m, first, i), members, inputs)
        terms = terms.index_copy(0, index, values)
    return terms


# -- chunking: how many runs fit on the device ---------------------------------------------
def bytes_per_run(config: TrainConfig, input_dim: int, n_classes: int) -> int:
    """Rough upper estimate of the memory one run adds to a step (float32): parameters with their gradient
    and two Adam moments, plus about six tensors of the decoder's largest activation for the unlabelled
    term (C enumerated classes for "m2", one concrete sample for "ssvae") and the supervised term (S samples)."""
    n_params = sum(p.numel() for p in build_model(config, input_dim, n_classes).parameters())
    labelled = config.batch_size if config.labelling == "thesis" else config.labelled_batch_size
    rows = config.batch_size * (n_classes if config.objective == "m2" else 1) + labelled * config.n_samples
    return 4 * (4 * n_params + 6 * rows * (input_dim + config.hidden_dim) + 2 * config.batch_size * input_dim)


def runs_per_chunk(config: TrainConfig, input_dim: int, n_classes: int, device: torch.device | str,
                   max_runs: int | None = None) -> int:
    """How many runs of this shape to train at once: as many as fit the memory budget by
    :func:`bytes_per_run` (CUDA: ``GPU_MEMORY_FRACTION`` of the free memory; CPU: ``CPU_MEMORY_BUDGET``),
    and at most ``max_runs`` (default: no further cap on CUDA, ``CPU_MAX_RUNS`` on a CPU). At least one."""
    device = torch.device(device)
    per_run = bytes_per_run(config, input_dim, n_classes)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        fit = int(GPU_MEMORY_FRACTION * free // per_run)
    else:
        fit = int(CPU_MEMORY_BUDGET // per_run)
        max_runs = CPU_MAX_RUNS if max_runs is None else max_runs
    return max(1, fit if max_runs is None else min(fit, max_runs))
