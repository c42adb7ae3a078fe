"""Settings side by side over seeds: for each ``--setting NAME:FIELD=VALUE,...`` the seeds train together
(``engine.train_runs``) and one line gives the mean ± standard deviation over seeds of the last epoch's
accuracy, ELBO and IWAE log p(x) (nats per image; ``train.scored_as`` says what they are) and, with
``--scores``, the label-leakage scores of the posterior-mean style. ``--set`` changes every setting.

    # what the reported likelihood is: grey-level Bernoulli, binarised, continuous Bernoulli
    python benchmarks/compare.py --setting grey: --setting binarised:binarize=true \\
        --setting continuous:observation=continuous_bernoulli --seeds 0,1,2 --set iwae_samples=50
    # Eq. 20 as written against its importance-weighted fix, style-first SSVAE
    python benchmarks/compare.py --setting as_written: --setting fixed:supervised_estimator=importance_weighted \\
        --set objective=ssvae --set order=style_first --seeds 0,1,2,3,4 --scores
"""
import argparse
import statistics
import time

from ssvae_lib import engine
from ssvae_lib.grid import parse_assignments, parse_values
from ssvae_lib.train import TrainConfig, scored_as


def spread(values) -> str:
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2g}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", action="append", required=True, metavar="NAME:FIELD=VALUE,...")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--scores", action="store_true", help="also the label-leakage scores")
    args = parser.parse_args()
    shared = parse_assignments(args.set)
    for setting in args.setting:
        name, _, fields = setting.partition(":")
        changes = {**shared, **parse_assignments([f for f in fields.split(",") if f])}
        configs = [TrainConfig(**{**changes, "seed": seed}) for seed in parse_values(args.seeds, int)]
        started = time.perf_counter()
        outcomes = engine.train_runs(configs, scores=args.scores)
        last = [o.history[-1] for o in outcomes]
        columns = {key: [r[key] for r in last] for key in ("accuracy", "elbo", "log_likelihood")}
        if args.scores:
            columns.update({key: [o.scores[key] for o in outcomes] for key in outcomes[0].scores})
        print(f"setting={name} dataset={outcomes[0].dataset_name} seeds={len(configs)} "
              f"epochs={len(outcomes[0].history)} split={last[0]['split']} "
              + " ".join(f"{key}={spread(values)}" for key, values in columns.items())
              + f" seconds={time.perf_counter() - started:.0f}")
        print(f"  ({scored_as(configs[0])}; changed: {changes or 'nothing'})", flush=True)


if __name__ == "__main__":
    main()
