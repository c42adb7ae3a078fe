"""Command line: ``python -m ssvae_lib {data,train,demo,sweep,figures} ...`` (``--help`` on each).

Exit codes: 0 done; 1 a file, folder or download failed (e.g. MNIST missing offline); 2 a bad argument or
setting; 3 a run diverged (its checkpoint and history up to the last complete epoch are written);
130 interrupted by Ctrl-C (what finished is kept: a run's checkpoint and history, a sweep's finished runs).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from . import grid, latent, plots, settings, store, train
from .data import describe, load_dataset
from .grid import field_type, parse_value
from .train import TUNED, TrainConfig


def _config_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per TrainConfig field, typed by ``grid.parse_value``."""

    def typed(name):
        def convert(text):
            try:
                return parse_value(name, text)
            except ValueError as err:
                raise argparse.ArgumentTypeError(str(err)) from None
        return convert

    for f in dataclasses.fields(TrainConfig):
        optional = field_type(f.name)[1]
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=typed(f.name), default=f.default,
                            help=f"default: {f.default}" + (" ('all'/'none' for None)" if optional else ""))


def _config_from(args):
    return TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})


def cmd_data(args) -> int:
    print(describe(args.dataset, root=args.root))
    return 0


def write_run_outputs(result, out: Path) -> None:
    """history.json, config.json, model.pt and training_curves.{png,pdf} into ``out``."""
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
              f"IWAE bound {last['log_likelihood']:.2f} nats")
        print(f"ELBO and IWAE: {train.scored_as(result.config)}")


def cmd_train(args) -> int:
    """Train, then write the run (also a diverged or interrupted one: what was done is kept)."""
    config, out = _config_from(args), Path(args.out)
    train.resolve_device(config.device)           # a bad device fails before anything is written
    out.mkdir(parents=True, exist_ok=True)        # a folder that cannot be written fails before training
    started = time.perf_counter()
    try:
        result, error = train.train(config), None
    except train.DivergenceError as err:
        result, error = err.result, err
    write_run_outputs(result, out)
    _report(result, time.perf_counter() - started)
    print(f"wrote {out}/history.json, config.json, model.pt, training_curves.png/.pdf")
    if error is not None:
        print(f"error: the run diverged ({error}); {out} holds its last complete epoch", file=sys.stderr)
        return 3
    return 130 if result.stopped_early else 0


def demo_config() -> dict:
    """The validated settings (``train.TUNED``) with 40 epochs, so the demo stays under 3 minutes."""
    return {**TUNED, "n_labelled": 100, "epochs": 40}


def cmd_demo(args) -> int:
    """Train with the README's defaults on the best dataset available and write the seminar figures;
    the first line says which dataset that is."""
    import torch

    config = TrainConfig(**{**demo_config(), "seed": args.seed, "dataset": args.dataset})
    ds = load_dataset(config.dataset, root=config.data_root)
    print(f"dataset: {ds.name} ({ds.provenance})", flush=True)
    started = time.perf_counter()
    result = train.train(config, dataset=ds)
    _report(result, time.perf_counter() - started)
    model, out = result.model, args.figures
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
    return 130 if result.stopped_early else 0


def _grid_from(args):
    """The grid of ``sweep``: a preset or a spec file, with the axes and fields given on the command line."""
    if (args.preset is None) == (args.spec is None):
        raise ValueError("give exactly one of --preset NAME or --spec FILE")
    spec = grid.GridSpec.from_file(args.spec) if args.spec else grid.preset(args.preset, fast=args.fast)
    changes = {}
    for axis, kind in (("alphas", float), ("corruption_rates", float), ("n_labelled", int), ("protocols", str),
                       ("objectives", str), ("seeds", int)):
        if getattr(args, axis) is not None:
            changes[axis] = grid.parse_values(getattr(args, axis), kind)
    for name in ("name", "epochs", "dataset"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.set:
        try:
            changes["overrides"] = {**spec.overrides, **grid.parse_assignments(args.set)}
        except ValueError as err:
            raise ValueError(f"--set: {err}") from None
    return dataclasses.replace(spec, **changes)


def cmd_sweep(args) -> int:
    """Plan first (every check, nothing written), then train what is missing; ``--dry-run`` stops after
    the plan."""
    spec = _grid_from(args)
    out = Path(args.out)
    plan = store.plan_sweep(spec, out, max_runs=args.max_runs, device=args.device,
                            retry_failed=args.retry_failed)
    print(plan.summary())
    if args.dry_run:
        return 0
    started = time.perf_counter()
    try:
        rows = store.run_sweep(spec, out, max_runs=args.max_runs, scores=not args.no_scores, device=args.device,
                               datasets=plan.datasets, retry_failed=args.retry_failed)
    except KeyboardInterrupt:
        print(f"interrupted: the runs of finished chunks are recorded in {out}; run the same command to resume",
              file=sys.stderr)
        return 130
    failed = [r for r in rows if r["status"] != "ok"]
    print(f"{len(rows)} runs recorded ({len(failed)} failed) in {time.perf_counter() - started:.1f} s; "
          f"wrote {out / store.CSV_NAME}")
    if failed:
        print(f"{len(failed)} run(s) diverged; they are recorded as failed and count as done "
              "(--retry-failed trains them again)", file=sys.stderr)
    return 3 if failed else 0


def cmd_figures(args) -> int:
    """Figures of every grid under ``--results`` (or of the ``--grid`` ones); an error, and nothing
    written, when a requested grid has no finished run."""
    results = Path(args.results) if args.results else settings.checkout_figures() / "sweep"
    grids = store.load_grids(results)
    wanted = args.grid or sorted(grids)
    if not wanted:
        raise FileNotFoundError(f"no sweep results under {results}; run 'python -m ssvae_lib sweep' first")
    unknown = [name for name in wanted if name not in grids]
    if unknown:
        raise FileNotFoundError(f"no grid {', '.join(unknown)} under {results} (grids there: "
                                f"{', '.join(sorted(grids)) or 'none'})")
    empty = [name for name in wanted if not any(r["status"] == "ok" for r in grids[name])]
    if empty:
        raise ValueError(f"grid {', '.join(empty)} under {results} has no finished run; nothing written "
                         "(choose other grids with --grid NAME)")
    written = plots.write_sweep_figures({name: grids[name] for name in wanted},
                                        args.out or settings.checkout_figures())
    print("wrote " + ", ".join(str(p) for p in written if p.suffix != ".pdf") + " (and PDFs)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ssvae_lib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data", help="show which dataset 'auto' (or --dataset) picks, its sizes and provenance")
    p.add_argument("--dataset", default="auto")
    p.add_argument("--root", default=None, help="folder with MNIST idx files (default: $SSVAE_DATA_DIR or cache)")
    p.set_defaults(func=cmd_data)
    p = sub.add_parser("train", help="train one model; writes history, config, checkpoint and curves")
    _config_flags(p)
    p.add_argument("--out", default="runs/latest", help="output folder (default: runs/latest)")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("demo", help="the main job: train with sensible defaults, write its figures to runs/figures")
    p.add_argument("--dataset", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figures", default=None,
                   help="output folder for the figures (default: runs/figures, or $SSVAE_FIGURES_DIR)")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("sweep", help="train a grid of runs, many at once; resumable; one JSON per run + results.csv")
    p.add_argument("--preset", help="thesis-alpha, thesis-noise, paper-table (each also as NAME-fast)")
    p.add_argument("--spec", help="grid file (.json or .toml) with GridSpec fields, instead of a preset")
    p.add_argument("--fast", action="store_true", help="use the preset's -fast variant (seconds on a CPU)")
    p.add_argument("--out", default="runs/sweep", help="results folder (default: runs/sweep)")
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
    p.add_argument("--retry-failed", action="store_true", help="train runs recorded as failed again")
    p.add_argument("--dry-run", action="store_true",
                   help="print how many runs are done, failed and left (and in how many chunks); train "
                        "and write nothing")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("figures", help="thesis-style sweep figures (Fig. 2, 3, App. B) and the accuracy table")
    p.add_argument("--results", default=None, help="sweep results folder (default: the checkout's figures/sweep)")
    p.add_argument("--out", default=None, help="output folder (default: the checkout's figures/)")
    p.add_argument("--grid", action="append", default=[], metavar="NAME",
                   help="draw only this grid (repeatable; default: every grid under --results)")
    p.set_defaults(func=cmd_figures)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError) as err:     # a bad argument or setting
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:                     # files, folders, downloads
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
