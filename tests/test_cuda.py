"""The library on a CUDA device: training, the engine's stacked runs, evaluation, the results store,
checkpoints, the live panel, the per-device noise generators, and the CCVAE and weak supervision of notebook 09.

Every test is marked ``cuda`` and skipped where ``torch.cuda.is_available()`` is False (the reason is
printed by ``pytest -rs``). On a GPU machine: ``python -m pytest tests/test_cuda.py -m cuda -rs``
(``bash benchmarks/gpu.sh`` runs it with the benchmarks). Tiny runs on the 8x8 digits keep the whole
file to a few seconds on a GPU.

Dry run without a GPU: ``SSVAE_TEST_DEVICE=cpu python -m pytest tests/test_cuda.py -m cuda`` runs the same
bodies with device ``cpu`` (the device comparisons then compare the CPU with itself), which checks the
logic of the tests, not the GPU. The default device is ``cuda``.

Reproducibility is asserted bit for bit: the engine draws all noise from ``torch.Generator(device=...)``
(Philox on CUDA, a fixed stream per seed), and the kernels these models use are deterministic on one
device: cuBLAS GEMMs with one stream and a fixed shape, fixed-order reductions, index operations with
unique indices (no atomics that race), and TF32 is off for float32 matmuls by default.
"""
import dataclasses
import os

import pytest
import torch

from ssvae_lib import engine, store
from ssvae_lib import train as T
from ssvae_lib.grid import GridSpec
from tiny_run import tiny_config

DEVICE = os.environ.get("SSVAE_TEST_DEVICE", "cuda")
ON_CUDA = torch.device(DEVICE).type == "cuda"
TIMING_KEYS = ("train_seconds", "wall_seconds", "seconds")
HISTORY_KEYS = ("train_loss", "accuracy", "elbo", "log_likelihood")

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(),
                                 reason="needs a CUDA GPU (torch.cuda.is_available() is False); "
                                        "SSVAE_TEST_DEVICE=cpu dry-runs these tests on the CPU")]


def tiny(**overrides):
    return tiny_config(**{"device": DEVICE, **overrides})


def without_timing(history):
    return [{k: v for k, v in record.items() if k not in TIMING_KEYS} for record in history]


def on_device(model) -> bool:
    return all(p.device.type == torch.device(DEVICE).type for p in model.parameters())


# (a) + (g): one run, its device, its reproducibility, its generators ---------------------------------
def test_train_runs_on_the_device_and_repeats_exactly(digits, monkeypatch):
    used = []       # the device of every generator the engine draws noise from (its 5th argument)
    for name in ("draw_step_noise", "draw_eval_noise"):
        real = getattr(engine, name)
        monkeypatch.setattr(engine, name, lambda *a, _real=real: used.append(a[4].device) or _real(*a))
    config = tiny(objective="ssvae", order="style_first", labelling="thesis", corruption_protocol="per_epoch",
                  corruption_rate=0.2, augment_shift=1)
    first = T.train(config, dataset=digits, progress=False)
    assert on_device(first.model) and len(first.history) == 2
    for record in first.history:
        assert all(torch.isfinite(torch.tensor(record[k])) for k in HISTORY_KEYS), record
    # every step's and every evaluation's noise comes from a generator on the run's device
    assert len(used) >= 10 and all(d.type == torch.device(DEVICE).type for d in used), set(used)

    again = T.train(config, dataset=digits, progress=False)
    assert without_timing(again.history) == without_timing(first.history)       # bit for bit
    for (name, a), b in zip(first.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), name
    other = T.train(dataclasses.replace(config, seed=1), dataset=digits, progress=False)
    assert other.history[-1]["train_loss"] != first.history[-1]["train_loss"]   # the seed matters


def test_stacked_training_repeats_exactly(digits):
    configs = [tiny(seed=s, alpha=a) for s, a in ((0, 1.0), (1, 30.0))]
    first = engine.train_runs(configs, dataset=digits, scores=False, progress=False)
    again = engine.train_runs(configs, dataset=digits, scores=False, progress=False)
    for a, b in zip(first, again):
        assert on_device(a.model)
        assert without_timing(a.history) == without_timing(b.history)
        assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))


def test_step_noise_is_drawn_on_the_generator_device(digits):
    config = tiny(objective="ssvae")
    model = T.build_model(config, digits.input_dim, digits.n_classes).to(DEVICE)
    draw = lambda: engine.draw_step_noise(config, model, 8, 4, torch.Generator(device=DEVICE).manual_seed(3))  # noqa: E731
    noise = draw()
    assert all(v.device.type == torch.device(DEVICE).type for v in noise.values())
    assert all(torch.equal(v, noise[k]) for k, v in draw().items())


# (b) evaluation on the device vs on the CPU -----------------------------------------------------------
def test_evaluate_on_the_device_agrees_with_the_cpu(digits):
    result = T.train(tiny(epochs=1), dataset=digits, progress=False)
    x, y = digits.x_test[:200], digits.y_test[:200]
    # The same noise on both sides: a CPU generator (noise is drawn on the generator's device and then
    # moved to the images' device). The two sides differ only in float32 rounding: other GEMM kernels
    # and summation orders, ~1e-6 relative per value, so ELBO and IWAE means (sums of ~64 pixel terms
    # and a log-sum-exp over 4 samples) agree to rtol 1e-4, while a wrong noise draw or a layer left on
    # the wrong device changes them at the 1e-2 level; argmax predictions agree exactly (no near ties).
    kw = dict(iwae_samples=4, iwae_examples=100)
    here = T.evaluate(result.model, x.to(DEVICE), y.to(DEVICE), generator=torch.Generator().manual_seed(5), **kw)
    cpu_model = result.model.to("cpu")
    there = T.evaluate(cpu_model, x, y, generator=torch.Generator().manual_seed(5), **kw)
    assert here["accuracy"] == there["accuracy"]
    for key in ("elbo", "log_likelihood"):
        assert here[key] == pytest.approx(there[key], rel=1e-4), key
    # and with the default generator (drawn on the device itself) the scores are finite
    default = T.evaluate(result.model.to(DEVICE), x.to(DEVICE), y.to(DEVICE), **kw)
    assert all(torch.isfinite(torch.tensor(v)) for v in default.values())


# (c) R runs stacked on the device == each run alone on the device -----------------------------------
@pytest.mark.parametrize("objective, order, labelling, shift", [
    ("m2", "label_first", "fixed", 0), ("ssvae", "style_first", "thesis", 2)])
def test_runs_trained_together_equal_runs_trained_alone(digits, objective, order, labelling, shift):
    """As tests/test_engine.py's equivalence test (its docstring explains rtol 1e-4), on the device."""
    protocol = "per_epoch" if labelling == "thesis" else "fixed"
    configs = [tiny(objective=objective, order=order, labelling=labelling, corruption_protocol=protocol,
                    augment_shift=shift, **kw)
               for kw in (dict(seed=0, alpha=0.5, n_labelled=300),
                          dict(seed=1, alpha=20.0, n_labelled=100, corruption_rate=0.2, gamma=0.5),
                          dict(seed=2, alpha=5.0, n_labelled=50))]
    outcomes = engine.train_runs(configs, dataset=digits, scores=False, progress=False)
    for config, outcome in zip(configs, outcomes):
        reference = T.train(config, dataset=digits, progress=False)
        assert outcome.error is None and on_device(outcome.model) and on_device(reference.model)
        assert len(outcome.history) == len(reference.history) == 2
        for got, want in zip(outcome.history, reference.history):
            for key in HISTORY_KEYS:
                assert got[key] == pytest.approx(want[key], rel=1e-4), (config.seed, key)
        for name, value in reference.model.state_dict().items():
            torch.testing.assert_close(outcome.model.state_dict()[name], value, rtol=1e-4, atol=1e-6)


# (d) the results store on the device ------------------------------------------------------------------
def test_sweep_on_the_device_records_every_run_and_resumes(tmp_path, digits, monkeypatch):
    spec = GridSpec("device-small", dataset="digits", epochs=1, seeds=(0, 1), alphas=(1.0, 30.0), n_labelled=(50,),
                    overrides=dict(hidden_dim=32, style_dim=4, n_samples=2, iwae_samples=2, iwae_examples=40,
                                   max_train=300, max_test=100, labelled_batch_size=25))
    rows = store.run_sweep(spec, tmp_path, scores=False, progress=False, device=DEVICE,
                           datasets={"digits": digits})
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    records = store.load_records(tmp_path)
    assert sorted(records) == sorted(store.run_key(c) for c in spec.configs())
    assert all(r["device"].startswith(torch.device(DEVICE).type) and len(r["history"]) == 1
               for r in records.values())
    calls = []
    monkeypatch.setattr(store.engine, "train_runs", lambda configs, **kw: calls.append(configs) or [])
    again = store.run_sweep(spec, tmp_path, scores=False, progress=False, device=DEVICE,
                            datasets={"digits": digits})
    assert calls == [] and again == rows                                 # a rerun trains nothing


# (e) a checkpoint written on the device loads on the CPU ----------------------------------------------
def test_checkpoint_from_the_device_loads_on_the_cpu(tmp_path, digits):
    result = T.train(tiny(epochs=1), dataset=digits, progress=False)
    assert on_device(result.model)
    loaded = T.load(T.save(result, tmp_path / "run.pt"))
    assert all(p.device.type == "cpu" for p in loaded.model.parameters())
    for (name, a), b in zip(result.model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(a.cpu(), b), name
    assert loaded.history == result.history
    x = digits.x_test[:200]
    on_gpu = T.predict(result.model.eval(), x.to(DEVICE)).cpu()
    assert torch.equal(T.predict(loaded.model, x), on_gpu)                          # CPU vs device
    assert torch.equal(T.predict(loaded.model.to(DEVICE), x.to(DEVICE)).cpu(), on_gpu)  # moved back


# (f) the live training panel on the device ------------------------------------------------------------
def test_training_panel_trains_on_the_device(digits):
    pytest.importorskip("ipywidgets", reason="the training panel needs ipywidgets (pip install ipywidgets)")
    from ssvae_lib import widgets

    panel = widgets.TrainingPanel(tiny(n_labelled=100, iwae_samples=2, iwae_examples=40, max_test=100),
                                  dataset=digits, redraw_seconds=0.5)
    assert torch.device(DEVICE).type in panel.info.value
    result = panel.train(blocking=True)
    assert on_device(result.model) and len(result.history) == 2 and not result.stopped_early
    assert panel.history == result.history and panel.plot.value[:4] == b"\x89PNG"
    assert "finished" in panel.status.value and "accuracy" in panel.status.value


# the models of notebook 09: the CCVAE through the engine, the Ada-GVAE through engine.fit ------------
def test_ccvae_and_weak_supervision_train_on_the_device_and_repeat_exactly(digits):
    from ssvae_lib import data, metrics, shapes, weak
    config = tiny(objective="ccvae", n_samples=2)
    first, again = (T.train(config, dataset=digits, progress=False) for _ in range(2))
    assert on_device(first.model) and without_timing(first.history) == without_timing(again.history)
    ds = data.load_dataset("shapes")
    weak_config = weak.WeakConfig(n_pairs=40, epochs=1, max_train=300, hidden_dim=16, seed=0)
    runs = [weak.train_weak(weak_config, dataset=ds, device=DEVICE) for _ in range(2)]
    assert on_device(runs[0].model) and without_timing(runs[0].history) == without_timing(runs[1].history)
    x = ds.x_test[:20].to(DEVICE)
    assert runs[0].model.representation(x).device.type == torch.device(DEVICE).type
    reference = torch.as_tensor(shapes.render_all()[:200].copy())
    found = metrics.nearest_factors(runs[0].model.reconstruct(x).cpu(), reference, shapes.all_factors()[:200])
    assert found.shape == (20, 5)
