"""Accuracy as a second stage on simulated sweeps: the must-show of issue 19 for accuracy.

Each data set: 70 runs (2e7..6e9 parameters log-spaced, 7-54 tokens per parameter, 1% loss
noise) and three tasks whose accuracy is a known sigmoid in the law's loss (floors 0.25 /
0.5 / 0.25, 1% accuracy noise; "tail" never nears its ceiling); the runs with >= 2e9
parameters are held out. A second family ("turn") breaks the sigmoid below the fitted
losses: accuracy turns steeply upwards below loss 2.2, as tasks in the convex start of their
curve do.

Prints per family the pooled coverage of the held-out accuracies' 50/80/90% intervals with
the link's drift below the fitted losses (fit/link_drift.py) and without it, the median
|error|, each task's drift k, and whether the loss law's posterior is the same with and
without the accuracy columns (two-stage: the same sampler and seed give the same draws).
Usage: python bench/accuracy.py [data sets per family (3)]
"""

import copy
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from datalaws.fit import FitConfig, fit  # noqa: E402
from datalaws.fit.api import holdout_scores  # noqa: E402
from datalaws.fit.table import split_holdout  # noqa: E402

SETS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
CFG = FitConfig(chains=4, warmup=500, draws=500, progress=False)
LINKS = {"arc": (0.25, 0.1, 6.0, 2.45), "copa": (0.5, 0.05, 5.0, 2.55),
         "tail": (0.25, 0.2, 3.0, 1.9)}  # floor, delta (of 1 - floor), slope, midpoint
FLOORS = {t: v[0] for t, v in LINKS.items()}
HOLD = "params >= 2e9"


def table(seed: int, turn: bool, n: int = 70) -> pd.DataFrame:
    """A sweep of ``n`` log-spaced sizes at 7-54 tokens per parameter, as sweeps are laid out."""
    rng = np.random.default_rng(seed)
    size = np.geomspace(2e7, 6e9, n)
    tokens = size * 20 * np.exp(rng.uniform(-1, 1, n))
    law = 1.8 + 0.4 * (size / 1e8) ** -0.33 + 0.35 * (tokens / 2e9) ** -0.3
    df = pd.DataFrame({"params": size, "tokens": tokens,
                       "loss": law * np.exp(0.01 * rng.standard_normal(n))})
    for t, (floor, delta, s, L0) in LINKS.items():
        acc = floor + (1 - floor) * (1 - delta) / (1 + np.exp(s * (law - L0)))
        if turn:
            acc = acc + 2.0 * np.maximum(0.0, 2.2 - law) ** 1.5
        df[f"acc.{t}"] = np.clip(acc + 0.01 * rng.standard_normal(n), 0, 1)
    return df


def main() -> None:
    print(f"{SETS} data sets per family, {CFG.chains} chains x {CFG.warmup}+{CFG.draws} draws; "
          f"held out {HOLD}")
    for turn in (False, True):
        family = "sigmoid breaks below the fitted losses" if turn else "exact sigmoid links"
        hits = {"drift": np.zeros(3), "none": np.zeros(3)}
        n, errs, same = 0, [], []
        for seed in range(SETS):
            df = table(seed, turn)
            r = fit(df, "chinchilla", holdout=HOLD, discrepancy="none", config=CFG,
                    accuracy="sigmoid", floors=FLOORS)
            plain = fit(df.drop(columns=[f"acc.{t}" for t in LINKS]), "chinchilla",
                        holdout=HOLD, discrepancy="none", config=CFG)
            same.append(all(np.isclose(r.summary["params"][p]["q50"],
                                       plain.summary["params"][p]["q50"], rtol=1e-6)
                            for p in ("E", "a", "alpha", "b", "beta")))
            held = split_holdout(df, HOLD)[1]
            none = copy.copy(r)
            none.accuracy = {k: v for k, v in r.accuracy.items() if k != "drift"}
            for name, res in (("drift", r), ("none", none)):
                h = holdout_scores(res, held)
                for t in LINKS:
                    c = h[f"acc.{t}"]["coverage"]
                    hits[name] += h[f"acc.{t}"]["n"] * np.array([c["0.5"], c["0.8"], c["0.9"]])
            n += sum(holdout_scores(r, held)[f"acc.{t}"]["n"] for t in LINKS)
            errs += [holdout_scores(r, held)[f"acc.{t}"]["median_abs_err"] for t in LINKS]
            k = r.accuracy["drift"]["k_tasks"]
            print(f"  {family}, set {seed}: drift k " + ", ".join(
                f"{t} {v['q50']:.2g} [{v['q05']:.2g}, {v['q95']:.2g}]" for t, v in k.items()),
                flush=True)
        for name, h in hits.items():
            c = h / n
            print(f"{family:40s} {name:5s} coverage 50/80/90%: {c[0]:.2f} / {c[1]:.2f} / "
                  f"{c[2]:.2f} over {n} held-out accuracies")
        print(f"{family:40s} median |err| {np.median(errs):.4f}; loss law unchanged by the "
              f"accuracy columns in {sum(same)}/{len(same)} data sets", flush=True)


if __name__ == "__main__":
    main()
