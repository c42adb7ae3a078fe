"""Command line: ``python -m ssvae_lib {data,train,demo,sweep,figures} ...`` (``--help`` on each)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import typing
from pathlib import Path

from . import settings


def _config_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per TrainConfig field, typed from its annotation."""
    from .train import TrainConfig
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
        optional = type(None) in typing.get_args(hint)
        convert = (lambda s, b=base: None if s.lower() in ("none", "all") else b(s)) if optional else base
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=convert, default=f.default,
                            help=f"default: {f.default}" + (" ('all'/'none' for None)" if optional else ""))


def _config_from(args):
    from .train import TrainConfig
    return TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})


def cmd_data(args) -> int:
    from .data import describe
    print(describe(args.dataset, root=args.root))
    return 0


def write_run_outputs(result, out: Path) -> None:
    """history.json, config.json, model.pt and training_curves.{png,pdf} into ``out``."""
    from . import plots, train
    out.mkdir(parents=True, exist_ok=True)
    (out / "history.json").write_text(json.dumps(result.history, indent=1))
    (out / "config.json").write_text(json.dumps(result.config.to_dict(), indent=1))
    train.save(result, out / "model.pt")
    plots.save_figure(plots.training_curves(result.history), "training_curves", out)


def _report(result, seconds: float) -> None:
    last = result.history[-1] if result.history else {}
    print(f"dataset: {result.provenance}")
    print(f"epochs: {len(result.history)}{' (stopped early)' if result.stopped_early else ''}  "
          f"wall time: {seconds:.1f} s  fast mode: {settings.FAST}")
    if last:
        print(f"{last['split']} accuracy {last['accuracy']:.4f}  {last['split']} ELBO {last['elbo']:.2f}  "
              f"IWAE log p(x) {last['log_likelihood']:.2f} nats")


def cmd_train(args) -> int:
    from .train import train
    config = _config_from(args)
    started = time.perf_counter()
    result = train(config)
    write_run_outputs(result, Path(args.out))
    _report(result, time.perf_counter() - started)
    print(f"wrote {args.out}/history.json, config.json, model.pt, training_curves.png/.pdf")
    return 0


def demo_config() -> dict:
    """The validated settings (``train.TUNED``) with 40 epochs, so the demo stays under 3 minutes."""
    from .train import TUNED
    return {**TUNED, "n_labelled": 100, "epochs": 40}


def cmd_demo(args) -> int:
    """Train with the README's defaults on the best offline dataset and write the seminar figures."""
    import torch

    from . import latent, plots
    from .train import TrainConfig, train
    config = TrainConfig(**{**demo_config(), "seed": args.seed, "dataset": args.dataset})
    started = time.perf_counter()
    result = train(config)
    _report(result, time.perf_counter() - started)
    model, out = result.model, args.figures
    from .data import load_dataset
    ds = load_dataset(config.dataset, root=config.data_root)
    device = next(model.parameters()).device
    x = ds.x_test[:8].to(device)
    written = plots.save_figure(plots.training_curves(result.history), "demo_training_curves", out)
    written += plots.save_figure(plots.analogy_figure(x, latent.analogies(model, x), ds.image_shape),
                                 "demo_analogies", out)
    values = torch.linspace(-2, 2, 7)
    y = 2 % model.n_classes
    grid = latent.style_grid(model, y=y, dims=(0, 1), values=values)
    written += plots.save_figure(plots.style_figure(grid, ds.image_shape, y, (0, 1), values), "demo_style_grid", out)
    print("wrote " + ", ".join(str(p) for p in written if p.suffix == ".png") + " (and PDFs)")
    return 0


def _grid_from(args):
    """The grid of ``sweep``: a preset or a spec file, with the axes and fields given on the command line."""
    from . import sweep
    if (args.preset is None) == (args.spec is None):
        raise ValueError("give exactly one of --preset NAME or --spec FILE")
    spec = sweep.GridSpec.from_file(args.spec) if args.spec else sweep.preset(args.preset, fast=args.fast)
    changes = {}
    for axis, kind in (("alphas", float), ("corruption_rates", float), ("n_labelled", int), ("protocols", str),
                       ("objectives", str), ("seeds", int)):
        if getattr(args, axis) is not None:
            changes[axis] = sweep.parse_values(getattr(args, axis), kind)
    for name in ("name", "epochs", "dataset"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.set:
        changes["overrides"] = {**spec.overrides, **sweep.parse_assignments(args.set)}
    return dataclasses.replace(spec, **changes)


def cmd_sweep(args) -> int:
    from . import sweep
    from .train import fast_mode
    spec = _grid_from(args)
    out = Path(args.out) if args.out else settings.figures_dir() / "sweep"
    configs = spec.configs()
    groups = sweep.plan([fast_mode(c) for c in configs])
    print(f"grid {spec.name}: {len(configs)} runs in {len(groups)} stackable group(s); results in {out}")
    if args.dry_run:
        return 0
    started = time.perf_counter()
    rows = sweep.run_sweep(spec, out, max_runs=args.max_runs, scores=not args.no_scores, device=args.device)
    failed = [r for r in rows if r["status"] != "ok"]
    print(f"{len(rows)} runs recorded ({len(failed)} failed) in {time.perf_counter() - started:.1f} s; "
          f"wrote {out / 'results.csv'}")
    return 1 if failed else 0


def cmd_figures(args) -> int:
    from . import plots, sweep
    results = Path(args.results) if args.results else settings.figures_dir() / "sweep"
    grids = sweep.load_grids(results)
    if not any(grids.values()):
        raise FileNotFoundError(f"no sweep results under {results}; run 'python -m ssvae_lib sweep' first")
    written = plots.write_sweep_figures(grids, args.out)
    print("wrote " + ", ".join(str(p) for p in written if p.suffix != ".pdf") + " (and PDFs)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ssvae_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data", help="show which dataset 'auto' (or --dataset) picks, its sizes and provenance")
    p.add_argument("--dataset", default="auto")
    p.add_argument("--root", default=None, help="folder with MNIST idx files (default: $SSVAE_DATA_DIR or cache)")
    p.set_defaults(func=cmd_data)
    p = sub.add_parser("train", help="train one model; writes history, config, checkpoint and curves")
    _config_flags(p)
    p.add_argument("--out", default="runs/latest", help="output folder (default: runs/latest)")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("demo", help="the main job: train with sensible defaults, write figures/")
    p.add_argument("--dataset", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figures", default=None, help="output folder for the figures (default: the checkout's figures/)")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("sweep", help="train a grid of runs, many at once; resumable; one JSON per run + results.csv")
    p.add_argument("--preset", help="thesis-alpha, thesis-noise, paper-table (each also as NAME-fast)")
    p.add_argument("--spec", help="grid file (.json or .toml) with GridSpec fields, instead of a preset")
    p.add_argument("--fast", action="store_true", help="use the preset's -fast variant (seconds on a CPU)")
    p.add_argument("--out", default=None, help="results folder (default: the checkout's figures/sweep)")
    p.add_argument("--name", default=None, help="grid name for the results (default: the preset's)")
    p.add_argument("--alphas", help="comma-separated α values, e.g. 0.1,1,10,100")
    p.add_argument("--corruption-rates", help="comma-separated label corruption rates in [0, 1]")
    p.add_argument("--n-labelled", help="comma-separated labelled-set sizes M ('all' for every image)")
    p.add_argument("--protocols", help="comma-separated: thesis, corrected, or LABELLING/CORRUPTION")
    p.add_argument("--objectives", help="comma-separated: m2, ssvae")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--dataset", default=None)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="another TrainConfig field for every run (repeatable), e.g. --set max_train=4000")
    p.add_argument("--max-runs", type=int, default=None, help="stack at most this many runs at once")
    p.add_argument("--device", default=None, help="cpu, cuda[:i] (default: each config's, i.e. auto)")
    p.add_argument("--no-scores", action="store_true", help="skip the label-leakage scores")
    p.add_argument("--dry-run", action="store_true", help="print the number of runs and groups, train nothing")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("figures", help="thesis-style sweep figures (Fig. 2, 3, App. B) and the accuracy table")
    p.add_argument("--results", default=None, help="sweep results folder (default: the checkout's figures/sweep)")
    p.add_argument("--out", default=None, help="output folder (default: the checkout's figures/)")
    p.set_defaults(func=cmd_figures)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
