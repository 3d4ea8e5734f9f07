"""Held-out extrapolation, discrepancy none vs backtest, on the public data in ../shared/data.

Chinchilla: fit N < 2e9, predict the 57 larger runs. Datablations (datacon law): fit N < 2e9,
predict the larger. Prints coverage of the 50/80/90% intervals, median and mean absolute
error and mean 90% width, plus fit times (backtest / plain ratio).
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from datalaws.fit import FitConfig, fit  # noqa: E402

root = Path(__file__).resolve().parents[2] / "shared" / "data"
if not root.exists():
    sys.exit(f"skip: {root} not found")
cases = [
    ("chinchilla", pd.read_csv(root / "chinchilla.csv"), "chinchilla", {"N": "N", "D": "D"}),
    ("datablations", pd.read_csv(root / "datablations.csv").query("loss < 6 and name_consistent"),
     "datacon", {"N": "N", "U": "unique_tokens", "repetitions": "epochs"}),
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
