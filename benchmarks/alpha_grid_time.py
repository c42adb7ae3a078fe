"""How long the thesis's α grid takes (``thesis-alpha``: 8 α × 4 M × 10 seeds = 320 runs of 40 epochs),
timed on a measured fraction and extrapolated.

    python benchmarks/alpha_grid_time.py [--runs 80] [--epochs 2] [--dataset mnist-t10k] [--device auto]
                                         [--max-train N] [--max-test N]

Trains ``--runs`` of the preset's runs (evenly spread over the grid, so every M is in it) as one stack with
``engine.train_runs`` (with the label-leakage scores, as ``store.run_sweep`` does) for ``--epochs`` epochs.
The stack's fixed cost (data, models, leakage scores: the time outside its epochs) and its last epoch's
time (warm: no CUDA start-up) give ``chunks × (fixed + 40 × epoch)`` for the whole grid, with chunks of
``--runs`` runs. Prints one line: ``measured X runs × Y epochs in S s; extrapolated 320 × 40: T min``
(and, on a separate ``#`` line, the chunk size ``store.run_sweep`` would pick on this device).
"""
import argparse
import dataclasses
import math
import time

import torch

from ssvae_lib import engine, grid
from ssvae_lib.config import resolve_device
from ssvae_lib.data import load_dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=80, help="runs trained together (one chunk)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs measured")
    parser.add_argument("--dataset", default="mnist-t10k")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-train", type=int, default=None, help="cap on the training pool (smoke tests)")
    parser.add_argument("--max-test", type=int, default=None, help="cap on the evaluation images (smoke tests)")
    args = parser.parse_args()
    spec = grid.preset("thesis-alpha")
    everything = spec.configs()
    step = len(everything) / args.runs
    picked = [everything[int(i * step)] for i in range(args.runs)]
    configs = [dataclasses.replace(c, dataset=args.dataset, epochs=args.epochs, device=args.device,
                                   max_train=args.max_train, max_test=args.max_test) for c in picked]
    ds = load_dataset(args.dataset)
    device = resolve_device(args.device)
    per_chunk = engine.runs_per_chunk(configs[0], ds.input_dim, ds.n_classes, device)
    print(f"# {ds.provenance}; device {device}; store.run_sweep would train {per_chunk} runs per chunk here",
          flush=True)
    started = time.perf_counter()
    outcomes = engine.train_runs(configs, dataset=ds, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    history = max((o.history for o in outcomes), key=len)   # a run that diverged stops early
    failed = sum(o.error is not None for o in outcomes)
    fixed = seconds - sum(r["wall_seconds"] for r in history)
    epoch = history[-1]["wall_seconds"]
    total = math.ceil(len(everything) / args.runs) * (fixed + spec.epochs * epoch)
    print(f"measured {args.runs} runs × {args.epochs} epochs in {seconds:.1f} s "
          f"(last epoch {epoch:.2f} s, fixed {fixed:.1f} s{f', {failed} diverged' if failed else ''}); "
          f"extrapolated {len(everything)} × {spec.epochs}: {total / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
