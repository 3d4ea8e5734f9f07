"""Fit time of a 5-domain mixing law on 40 runs, 4 chains x (500 warmup + 1000 draws), on
this machine's cores (chains run in parallel on host devices), beside the point fit's time
measured in the same run."""

import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from datalaws.fit import FitConfig, fit  # noqa: E402
from datalaws.fit.laws import mixing_law  # noqa: E402

DOMAINS = ["arxiv", "books", "code", "web", "wiki"]
rng = np.random.default_rng(0)
n = 40
r = rng.dirichlet(np.ones(5), n)
df = pd.DataFrame({"params": np.exp(rng.uniform(np.log(2e7), np.log(2e9), n)),
                   "tokens": np.exp(rng.uniform(np.log(4e8), np.log(1e11), n))})
for i, d in enumerate(DOMAINS):
    df[f"mix.{d}"] = r[:, i]
truth = {"e_mid": 2.0, "m": 0.3, "t_books": 0.5, "t_code": -1.0, "t_web": 0.8, "t_wiki": -0.3,
         "a": 0.4, "alpha": 0.33, "b": 0.35, "beta": 0.3}
x = {"N": df.params / np.exp(np.log(df.params).mean()),
     "D": df.tokens / np.exp(np.log(df.tokens).mean())} | {
    f"r.{d}": df[f"mix.{d}"].to_numpy() for d in DOMAINS}
df["loss"] = np.asarray(mixing_law(DOMAINS).fn(x, truth)) * np.exp(0.01 * rng.standard_normal(n))

t0 = time.perf_counter()
result = fit(df, "mixing", config=FitConfig(progress=False), discrepancy="none")
total = time.perf_counter() - t0
t = result.summary["timings"]
print(f"5-domain mixing law, {n} runs, 4 chains x (500+1000): total {total:.1f} s "
      f"(point fit {t['point_fit_s']:.1f} s, NUTS {t['nuts_s']:.1f} s; NUTS/point "
      f"{t['nuts_s'] / t['point_fit_s']:.1f}x); diagnostics "
      f"{result.summary['diagnostics']['failures'] or 'ok'}")
t0 = time.perf_counter()
fit(df, "mixing", config=FitConfig(progress=False), discrepancy="backtest")
with_backtest = time.perf_counter() - t0
print(f"with the size-ordered backtest: {with_backtest:.1f} s "
      f"({with_backtest / total:.2f}x the plain fit)")
