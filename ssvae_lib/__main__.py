"""Command line: ``python -m ssvae_lib {data,train,demo} ...`` (``--help`` on each)."""
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


def _config_from(args) -> "TrainConfig":
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
    split = "validation" if "validation_accuracy" in last else "test"
    print(f"dataset: {result.provenance}")
    print(f"epochs: {len(result.history)}{' (stopped early)' if result.stopped_early else ''}  "
          f"wall time: {seconds:.1f} s  fast mode: {settings.FAST}")
    if last:
        print(f"{split} accuracy {last[split + '_accuracy']:.4f}  {split} ELBO {last[split + '_elbo']:.2f}  "
              f"IWAE log p(x) {last[split + '_log_likelihood']:.2f} nats")


def cmd_train(args) -> int:
    from .train import train
    config = _config_from(args)
    started = time.perf_counter()
    result = train(config)
    write_run_outputs(result, Path(args.out))
    _report(result, time.perf_counter() - started)
    print(f"wrote {args.out}/history.json, config.json, model.pt, training_curves.png/.pdf")
    return 0


DEMO_CONFIG = dict(n_labelled=100, epochs=20)


def cmd_demo(args) -> int:
    """Train with the README's defaults on the best offline dataset and write the seminar figures."""
    import torch

    from . import latent, plots
    from .train import TrainConfig, train
    config = TrainConfig(**{**DEMO_CONFIG, "seed": args.seed, "dataset": args.dataset})
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
