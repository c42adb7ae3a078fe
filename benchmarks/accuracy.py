"""Test accuracy with M = 100 labels on the best offline dataset (MNIST-10k: 8k pool / 2k test),
mean and std over seeds, for both objectives, with wall time, and per seed the classifier's commonest
mistake (true digit -> predicted digit).

    python benchmarks/accuracy.py                       # train.TUNED settings, 5 seeds, test set
    python benchmarks/accuracy.py --tune                # the tuning grid, scored on a validation split
    python benchmarks/accuracy.py --set beta=1 --set lr=0.001 --seeds 3   # change any TrainConfig field

Tuning never looks at the test set: ``--tune`` carves ``--validation`` images from the training pool
(``TrainConfig.validation_size``) and reports validation accuracy only.
"""
import argparse
import itertools
import json
import statistics
import time

from ssvae_lib.grid import parse_assignments
from ssvae_lib.metrics import most_confused
from ssvae_lib.train import TUNED, TrainConfig, confusion, train

TUNING_GRID = {"beta": [6.0, 8.0], "gamma": [0.25, 0.5, 0.75, 1.0]}   # the second round (README)


def run(config_kwargs, seeds, split):
    accuracies, mistakes, started = [], [], time.perf_counter()
    for seed in seeds:
        result = train(TrainConfig(**{**config_kwargs, "seed": seed}), progress=False)
        accuracies.append(result.final("accuracy"))   # on the split the history names
        mistakes.append(most_confused(confusion(result)))   # (true, predicted, count)
    seconds = time.perf_counter() - started
    mean = statistics.mean(accuracies)
    std = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    return mean, std, accuracies, mistakes, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--objectives", default="m2,ssvae")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--validation", type=int, default=1000)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    try:
        base = {"n_labelled": 100, **TUNED, **parse_assignments(args.set)}
    except ValueError as err:
        parser.error(f"--set: {err}")
    rows = []
    grids = [dict(zip(TUNING_GRID, values)) for values in itertools.product(*TUNING_GRID.values())] \
        if args.tune else [{}]
    split = "validation" if args.tune or base.get("validation_size") else "test"
    for objective in args.objectives.split(","):
        for point in grids:
            kwargs = {**base, **point, "objective": objective}
            if args.tune:
                kwargs["validation_size"] = args.validation
            mean, std, accs, mistakes, seconds = run(kwargs, range(args.seeds), split)
            row = {"objective": objective, **point, **{k: v for k, v in base.items()},
                   f"{split}_accuracy_mean": mean, f"{split}_accuracy_std": std, "per_seed": accs,
                   "most_confused": mistakes,
                   "seeds": args.seeds, "wall_seconds": seconds}
            rows.append(row)
            settings = " ".join(f"{k}={v}" for k, v in {**base, **point}.items())
            print(f"objective={objective} {settings} {split}_accuracy={mean:.4f}±{std:.4f} "
                  f"(n={args.seeds} seeds) wall={seconds:.0f}s", flush=True)
            for seed, (acc, (true, predicted, count)) in enumerate(zip(accs, mistakes)):
                print(f"  seed={seed} {split}_accuracy={acc:.4f} most_confused={true}->{predicted} ({count} images)",
                      flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
