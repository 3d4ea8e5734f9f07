"""Held-out extrapolation, discrepancy none vs backtest, on the public data in ../shared/data.

Chinchilla: fit N < 2e9, predict the 57 larger runs. Datablations (data_constrained law): fit N < 2e9,
predict the larger. Then three simulated tables (120 runs, 1e7..1e10 params, 1% noise, fit
N < 2e9): the Chinchilla law exactly right; a smoothly broken power law (size exponent 0.2 ->
0.5 around 2e8, inside the data); and a log-quadratic size term exp(-0.33 l - 0.03 l^2), whose
drift the training rows barely show. Prints coverage of the 50/80/90% intervals, median and
mean absolute error and mean 90% width, plus fit times (backtest / plain ratio).
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from datalaws.fit import FitConfig, fit  # noqa: E402

root = Path(__file__).resolve().parents[2] / "shared" / "data"
if not root.exists():
    sys.exit(f"skip: {root} not found")
cases = [
    ("chinchilla", pd.read_csv(root / "chinchilla.csv"), "chinchilla", {"N": "N", "D": "D"}),
    ("datablations", pd.read_csv(root / "datablations.csv").query("loss < 6 and name_consistent"),
     "data_constrained", {"N": "N", "U": "unique_tokens", "repetitions": "epochs"}),
]


def simulated(size_term, seed=0, n=120):
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    D = 20 * N * np.exp(rng.uniform(-1.5, 1.5, n))
    L = 1.8 + size_term(N) + 0.35 * (D / 2e9) ** -0.3
    return pd.DataFrame({"N": N, "D": D, "loss": L * np.exp(0.01 * rng.standard_normal(n))})


def log_quadratic(N):
    lg = np.log(N / 1e8)
    return 0.4 * np.exp(-0.33 * lg - 0.03 * lg ** 2)


ND = {"N": "N", "D": "D"}
cases += [
    ("sim right", simulated(lambda N: 0.4 * (N / 1e8) ** -0.33), "chinchilla", ND),
    ("sim broken", simulated(lambda N: 0.4 * (N / 2e8) ** -0.2 * (1 + (N / 2e8) ** 2) ** -0.15),
     "chinchilla", ND),
    ("sim logquad", simulated(log_quadratic), "chinchilla", ND),
]
print(f"{'data':13s} {'mode':9s} {'n':>3s} {'cov50':>6s} {'cov80':>6s} {'cov90':>6s} "
      f"{'med|err|':>8s} {'mean|err|':>9s} {'width90':>8s} {'fit s':>6s} {'k':>7s}")
for name, df, law, cols in cases:
    times = {}
    for mode in ("none", "backtest"):
        r = fit(df, law, columns=cols, holdout="N >= 2e9", discrepancy=mode,
                config=FitConfig(progress=False))
        h = r.summary["holdout"]["loss"]
        times[mode] = r.summary["timings"]["total_s"]
        c = h["coverage"]
        print(f"{name:13s} {mode:9s} {h['n']:3d} {c['0.5']:6.2f} {c['0.8']:6.2f} {c['0.9']:6.2f} "
              f"{h['median_abs_err']:8.4f} {h['mean_abs_err']:9.4f} {h['mean_width90']:8.4f} "
              f"{times[mode]:6.1f} {r.k:7.4f}")
    print(f"{name}: fit time backtest / plain = {times['backtest'] / times['none']:.2f}")
