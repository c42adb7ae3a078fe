"""Sweep throughput: run-epochs per second, runs trained one by one (``train.train``) vs stacked
(``engine.train_runs``), on CPU (and CUDA when present).

    python benchmarks/sweep_throughput.py [--dataset auto] [--max-train 2000] [--max-test 2000]
                                          [--iwae-examples 500] [--epochs 1] [--stack 1,4,8,16]
                                          [--objective ssvae] [--labelling fixed] [--rounds 2] [--threads N]
                                          [--devices cpu,cuda]

The runs are an α sweep (the thesis's eight α values, repeated over seeds) on the chosen dataset with
the thesis's architecture and batch sizes; each measurement includes the per-epoch evaluation (accuracy,
ELBO, IWAE) but not the label-leakage scores, whose cost per run is printed separately. One line per
setting and round: ``device=<cpu|cuda> mode=<sequential|stacked> runs=<R> run-epochs/s=<wall-clock rate>
run-epochs/cpu-s=<rate per CPU second of this process> training-steps-only run-epochs/s=<wall-clock rate
of the optimisation steps without evaluation> round=<k>``.
"""
import argparse
import dataclasses
import time

import torch

from ssvae_lib import engine, grid
from ssvae_lib.data import load_dataset
from ssvae_lib.train import TrainConfig, train


def alpha_runs(n: int, base: TrainConfig) -> list[TrainConfig]:
    return [dataclasses.replace(base, alpha=grid.THESIS_ALPHAS[i % 8], seed=i // 8) for i in range(n)]


def timed(fn) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of this process, wall seconds of the training steps alone) of ``fn()``,
    which returns histories. CPU time is the fairer measure of work on a machine shared with other jobs."""
    wall, cpu = time.perf_counter(), time.process_time()
    histories = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, histories


def sequential(configs, ds):
    wall, cpu, histories = timed(lambda: [train(c, dataset=ds, progress=False).history for c in configs])
    return wall, cpu, sum(r["train_seconds"] for h in histories for r in h)


def stacked(configs, ds):
    wall, cpu, histories = timed(lambda: [o.history for o in engine.train_runs(configs, dataset=ds, scores=False,
                                                                              progress=False)])
    return wall, cpu, sum(r["train_seconds"] for r in histories[0])   # one clock for the whole stack


def scores_seconds(ds, base) -> float:
    outcome = engine.train_runs([dataclasses.replace(base, epochs=1)], dataset=ds, scores=False, progress=False)[0]
    x, y = ds.x_test[:base.max_test], ds.y_test[:base.max_test]
    started = time.perf_counter()
    engine.posterior_scores(outcome.model, x.to(next(outcome.model.parameters()).device), y)
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="auto")
    parser.add_argument("--max-train", type=int, default=2000, help="training pool per run (0: all)")
    parser.add_argument("--max-test", type=int, default=2000, help="evaluation images per epoch")
    parser.add_argument("--iwae-examples", type=int, default=500, help="images of the IWAE estimate per epoch")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--stack", default="1,4,8,16", help="stack sizes R to measure")
    parser.add_argument("--sequential-runs", type=int, default=4, help="runs timed one by one")
    parser.add_argument("--objective", default="ssvae")
    parser.add_argument("--labelling", default="fixed")
    parser.add_argument("--rounds", type=int, default=2, help="repetitions of every setting, interleaved")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--devices", default=None, help="comma-separated (default: cpu, and cuda when present)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} CPU threads; {ds.provenance}")
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    stack_sizes = [int(s) for s in args.stack.split(",")]
    for device in devices:
        base = TrainConfig(dataset=ds.name, objective=args.objective, labelling=args.labelling,
                           epochs=args.epochs, n_labelled=100, max_train=args.max_train or None,
                           max_test=args.max_test, iwae_examples=args.iwae_examples, device=device)
        print(f"# {args.objective}, {args.labelling} labelling, {args.epochs} epoch(s) of "
              f"{min(args.max_train or ds.n_train, ds.n_train)} images, evaluation on {args.max_test} "
              f"(IWAE on {args.iwae_examples})", flush=True)
        settings = [("sequential", 1, args.sequential_runs)] + [("stacked", r, r) for r in stack_sizes]
        for round_ in range(args.rounds):  # rounds interleave the settings, so load changes hit all alike
            for mode, size, n in settings:
                configs = alpha_runs(n, base)
                wall, cpu, steps = (sequential if mode == "sequential" else stacked)(configs, ds)
                work = n * base.epochs
                print(f"device={device} mode={mode} runs={size} run-epochs/s={work / wall:.3f} "
                      f"run-epochs/cpu-s={work / cpu:.3f} training-steps-only run-epochs/s={work / steps:.3f} "
                      f"round={round_ + 1}", flush=True)
        print(f"# leakage scores: {scores_seconds(ds, base):.2f} s per run", flush=True)


if __name__ == "__main__":
    main()
