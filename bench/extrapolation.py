"""Held-out extrapolation on the public data in ../shared/data and on simulated sweeps: the
must-show table of issue 19.

Chinchilla (C = 6ND): hold out N >= 2e9, then C >= 1e21, then D/N >= 60, fitting the rest.
Datablations (data_constrained law, rows with loss < 6 and consistent names): hold out
N >= 2e9, then epochs >= 4. Simulated (110 runs, 2e7..3e9 params, 5..600 tokens per
parameter, 1% noise): the Chinchilla law exactly right, and a truth with a D/N interaction
the law lacks (+0.02 max(0, log(M/20)): tokens beyond 20 per parameter are worth less),
both holding out M = D/N >= 100.

Each case is fitted once with the backtests; the "none" row is the same posterior predicted
with k = 0, the "backtest" row with k's posterior (a new fold's k from the hierarchical model
in fit/discrepancy_hier.py, the prior's k beyond the folds' reach). Prints coverage of the
50/80/90% intervals, median |err|, whether every predicted value is finite, each axis' k (rms
of a new fold's k within the folds' reach: the sd it adds per unit of distance) and the fit
time with all backtests over the plain fit's (point fit + NUTS, timed in the same run;
timings on a shared machine are inflated, the ratio less so; beside it the same ratio in CPU
seconds of all threads, steadier when other work shares the cores), and how many fold fits
passed their R-hat bar. `far`: held-out rows past the backtests' reach, whose width there is
the discrepancy prior's.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import copy  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from datalaws.fit import FitConfig, fit  # noqa: E402
from datalaws.fit.api import holdout_scores  # noqa: E402
from datalaws.fit.table import split_holdout  # noqa: E402

root = Path(__file__).resolve().parents[2] / "shared" / "data"
if not root.exists():
    sys.exit(f"skip: {root} not found")
warnings.simplefilter("ignore")


def simulated(extra, seed=0, n=110):
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(2e7), np.log(3e9), n))
    M = np.exp(rng.uniform(np.log(5), np.log(600), n))
    D = M * N
    L = 1.8 + 0.4 * (N / 1e8) ** -0.33 + 0.35 * (D / 2e9) ** -0.3 + extra(M)
    return pd.DataFrame({"N": N, "D": D, "loss": L * np.exp(0.01 * rng.standard_normal(n))})


chin = pd.read_csv(root / "chinchilla.csv")
dbl = pd.read_csv(root / "datablations.csv").query("loss < 6 and name_consistent")
ND = {"N": "N", "D": "D"}
DC = {"N": "N", "U": "unique_tokens", "repetitions": "epochs"}
cases = [
    ("chinchilla", chin, "chinchilla", ND, "N >= 2e9"),
    ("chinchilla", chin, "chinchilla", ND, "C >= 1e21"),
    ("chinchilla", chin, "chinchilla", ND, "D / N >= 60"),
    ("datablations", dbl, "data_constrained", DC, "N >= 2e9"),
    ("datablations", dbl, "data_constrained", DC, "epochs >= 4"),
    ("sim exact", simulated(lambda M: 0.0), "chinchilla", ND, "D / N >= 100"),
    ("sim no D/N", simulated(lambda M: 0.02 * np.maximum(0.0, np.log(M / 20))), "chinchilla", ND,
     "D / N >= 100"),
]
only = sys.argv[1:]  # optional case indices
print(f"{'data':13s} {'holdout':13s} {'mode':8s} {'n':>3s} {'far':>3s} {'cov50':>6s} {'cov80':>6s} "
      f"{'cov90':>6s} {'med|err|':>8s} {'finite':>6s}  time ratio  k per axis (rms); folds")
for i, (name, df, law, cols, hold) in enumerate(cases):
    if only and str(i) not in only:
        continue
    r = fit(df, law, columns=cols, holdout=hold, config=FitConfig(progress=False))
    t = r.timings
    ratio = t["total_s"] / (t["point_fit_s"] + t["nuts_s"])
    cpu_ratio = t["total_cpu_s"] / (t["point_fit_cpu_s"] + t["nuts_cpu_s"])
    plain = copy.copy(r)
    plain.discrepancy = r.discrepancy | {"k_draws": None, "k": 0.0}
    held = split_holdout(df, hold)[1]
    groups = r.discrepancy["k_groups"]
    rms = np.sqrt((np.asarray(r.discrepancy["k_draws"])[:, :len(groups)] ** 2).mean(axis=0))
    ks = ", ".join(f"{g} {v:.3g}" for g, v in zip(groups, rms))
    folds = r.discrepancy["folds"]
    ks += (f"; folds R-hat <= 1.05: {sum(f['ok'] for f in folds)}/{len(folds)} (worst "
           f"{max((f['r_hat'] for f in folds), default=np.nan):.3f})")
    for mode, res in (("none", plain), ("backtest", r)):
        h = holdout_scores(res, held)["loss"]
        c = h["coverage"]
        print(f"{name:13s} {hold:13s} {mode:8s} {h['n']:3d} {h['n_unbacktested']:3d} "
              f"{c['0.5']:6.2f} {c['0.8']:6.2f} {c['0.9']:6.2f} {h['median_abs_err']:8.4f} "
              f"{str(h['finite']):>6s}  "
              + (f"{ratio:5.2f} ({cpu_ratio:.2f} cpu)  {ks}" if mode == "backtest" else ""),
              flush=True)
