"""What the reported likelihood is, measured: the test ELBO and the IWAE estimate of log p(x) of M2 (the
thesis's §5.1 settings, M = 100 labels) under three ways of scoring pixels, several seeds each:

* ``grey``        Bernoulli decoder on grey-level pixels (the default): not a normalised density;
* ``binarised``   Bernoulli on binarised pixels (``binarize=True``: fresh draws in training, one fixed
                  binarisation for evaluation): a log-likelihood of binarised images;
* ``continuous``  continuous Bernoulli on grey-level pixels: a log-density on [0, 1]^D.

    python benchmarks/likelihood.py [--epochs 40] [--seeds 0,1,2] [--iwae-samples 50] [--set FIELD=VALUE]

The seeds of one setting train together (``engine.train_runs``). One line per setting: mean ± standard
deviation over seeds of accuracy, ELBO and IWAE log p(x) (nats per image), and what the numbers are.
"""
import argparse
import statistics
import time

from ssvae_lib import engine
from ssvae_lib.grid import parse_assignments, parse_values
from ssvae_lib.train import TrainConfig, scored_as

SETTINGS = {"grey": {}, "binarised": {"binarize": True}, "continuous": {"observation": "continuous_bernoulli"}}


def spread(values):
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--iwae-samples", type=int, default=50)
    parser.add_argument("--iwae-examples", type=int, default=1000)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args()
    extra = parse_assignments(args.set)
    for name in parse_values(args.settings, str):
        configs = [TrainConfig(**{"epochs": args.epochs, "iwae_samples": args.iwae_samples,
                                  "iwae_examples": args.iwae_examples, **SETTINGS[name], **extra, "seed": seed})
                   for seed in parse_values(args.seeds, int)]
        started = time.perf_counter()
        outcomes = engine.train_runs(configs, scores=False)
        last = [o.history[-1] for o in outcomes]
        print(f"setting={name} dataset={outcomes[0].dataset_name} seeds={len(configs)} "
              f"epochs={len(outcomes[0].history)} accuracy={spread([r['accuracy'] for r in last])} "
              f"elbo={spread([r['elbo'] for r in last])} "
              f"iwae_k{args.iwae_samples}={spread([r['log_likelihood'] for r in last])} "
              f"seconds={time.perf_counter() - started:.0f}")
        print(f"  ({scored_as(configs[0])})", flush=True)


if __name__ == "__main__":
    main()
