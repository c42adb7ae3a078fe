"""What the live training panel of notebook 04 costs on top of the training itself.

    python benchmarks/panel_overhead.py [--epochs 3] [--rounds 5] [--dataset auto] [--threads N]

Trains the same small run (notebook 04's panel: M = 100, α = 50, ``--epochs`` epochs, IWAE on 200 test
images) through :func:`ssvae_lib.train.train` and through :class:`ssvae_lib.widgets.TrainingPanel`
(``panel.train(blocking=True)``: the background thread, the progress bar and the live plot, headless: no
browser is needed), alternating the two, ``--rounds`` times each; the order flips every round so that a
drift of the machine's speed hits both alike. One untimed epoch first warms up torch. Prints every
timing, then ``train=<median s> panel=<median s> ratio=<panel / train>``.

On a CPU that other jobs share, use ``--threads 1``: with several threads, OpenMP's waiting in the main
thread (where ``train.train`` runs here) can make it several times slower than in the panel's training
thread, and the ratio then measures that, not the panel.
"""
import argparse
import statistics
import time

import torch

from ssvae_lib import data, settings, widgets
from ssvae_lib import train as train_mod
from ssvae_lib.train import TrainConfig


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the timed run")
    parser.add_argument("--rounds", type=int, default=5, help="timings of each way; the medians are compared")
    parser.add_argument("--dataset", default="auto", help="data set name for data.load_dataset")
    parser.add_argument("--device", default="auto", help="TrainConfig.device")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings.keep_freed_memory()
    dataset = data.load_dataset(args.dataset)
    config = TrainConfig(dataset=args.dataset, n_labelled=100, alpha=50.0, epochs=args.epochs, iwae_examples=200,
                         device=args.device)
    panel = widgets.TrainingPanel(config, dataset=dataset)

    def through_train() -> float:
        started = time.perf_counter()
        train_mod.train(config, dataset=dataset, progress=False)
        return time.perf_counter() - started

    def through_panel() -> float:
        panel.clear()                               # every round draws one run, as the first press does
        started = time.perf_counter()
        panel.train(blocking=True)
        return time.perf_counter() - started

    print(f"# {dataset.provenance}; {config.epochs} epochs, M = {config.n_labelled}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, device {train_mod.resolve_device(config.device)}", flush=True)
    train_mod.train(TrainConfig(**{**config.to_dict(), "epochs": 1}), dataset=dataset, progress=False)   # warm-up
    times = {"train": [], "panel": []}
    ways = {"train": through_train, "panel": through_panel}
    for round_ in range(args.rounds):
        order = ("train", "panel") if round_ % 2 == 0 else ("panel", "train")
        for name in order:
            times[name].append(ways[name]())
            print(f"round {round_ + 1}: {name:5s} {times[name][-1]:6.2f} s", flush=True)
    train_s, panel_s = statistics.median(times["train"]), statistics.median(times["panel"])
    print(f"train={train_s:.2f} panel={panel_s:.2f} ratio={panel_s / train_s:.3f}")


if __name__ == "__main__":
    main()
