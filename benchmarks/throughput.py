"""Training throughput (examples/s) in the seminar thesis's setting: batch 128, S = 8 importance
samples, 784-256 MLP, 10 digit + 10 style units, for both objectives, on CPU (and CUDA when present).

    python benchmarks/throughput.py [--steps 50] [--repeats 5] [--warmup 20] [--devices cpu,cuda] [--threads N]

Counts every image a step consumes (unlabelled batch + labelled batch) on synthetic 784-d inputs, after
``--warmup`` steps (20); the median over ``--repeats`` timings of ``--steps`` steps each. One line per setting:
``objective=<name> device=<cpu|cuda> examples/s=<number>``. Like training, it first lets glibc keep
freed memory (``settings.keep_freed_memory``).
"""
import argparse
import statistics
import time

import torch

from ssvae_lib import settings
from ssvae_lib.models import SSVAE
from ssvae_lib.train import TrainConfig, step_loss


def measure(objective: str, device: torch.device, steps: int, repeats: int, order: str = "label_first",
            warmup: int = 20) -> float:
    config = TrainConfig(objective=objective, order=order, batch_size=128, labelled_batch_size=64,
                         n_samples=8, device=str(device))
    torch.manual_seed(0)
    model = SSVAE(784, 256, 10, 10, order=order).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator(device=device).manual_seed(0)
    x_u = torch.rand(config.batch_size, 784, device=device).round()
    x_l = torch.rand(config.labelled_batch_size, 784, device=device).round()
    y_l = torch.randint(0, 10, (config.labelled_batch_size,), device=device)

    def step():
        loss, _ = step_loss(model, config, x_u, x_l, y_l, g)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    def timed() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return steps * (config.batch_size + config.labelled_batch_size) / (time.perf_counter() - start)

    for _ in range(warmup):
        step()
    return statistics.median(timed() for _ in range(repeats))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50, help="steps per timing")
    parser.add_argument("--repeats", type=int, default=5, help="timings; the median is printed")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    parser.add_argument("--devices", default=None, help="comma-separated (default: cpu, and cuda when present)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings.keep_freed_memory()
    names = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    devices = [torch.device(name) for name in names]
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for device in devices:
        for objective, order in (("m2", "label_first"), ("ssvae", "label_first"), ("ssvae", "style_first")):
            rate = measure(objective, device, args.steps, args.repeats, order, args.warmup)
            print(f"objective={objective} order={order} device={device.type} examples/s={rate:,.0f}", flush=True)


if __name__ == "__main__":
    main()
