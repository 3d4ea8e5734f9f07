"""Chinchilla law on the ~245 Chinchilla runs: 4 chains x 1000 draws vs the point fit.

Prints wall times (including compilation; timed after block_until_ready) and the ratio
NUTS / point fit measured in the same run. Goal: NUTS < 15 s on 2 CPU cores. Then one whole
fit with its rolling-origin backtests: its total time over its plain part (goal <= 4x).
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from datalaws.fit.infer import FitConfig, point_fit, run_nuts  # noqa: E402
from datalaws.fit.laws import get_law  # noqa: E402
from datalaws.fit.table import law_data  # noqa: E402

data = Path(__file__).resolve().parents[2] / "shared" / "data" / "chinchilla.csv"
if not data.exists():
    sys.exit(f"skip: {data} not found")
df = pd.read_csv(data)
law = get_law("chinchilla")
d = law_data(df, law.inputs, columns={"N": "N", "D": "D"})
scales = {r: float(np.exp(np.mean(np.log(v)))) for r, v in d.inputs.items()}
x = d.normalised(scales)
t0 = time.perf_counter()
point = point_fit(law, x, d.y)
t_point = time.perf_counter() - t0
t0 = time.perf_counter()
run_nuts(law, x, d.y, FitConfig(chains=4, warmup=500, draws=1000, progress=False), init=point)
t_nuts = time.perf_counter() - t0
print(f"point fit (Huber + L-BFGS, 32 starts): {t_point:.1f} s")
print(f"NUTS 4 chains x (500 warmup + 1000 draws): {t_nuts:.1f} s (goal < 15 s)")
print(f"ratio NUTS / point fit: {t_nuts / t_point:.2f}")

# the whole fit with every rolling-origin backtest vs the plain fit (point fit + NUTS), both
# from one fit's own timings (issue 19's goal: <= 4x)
from datalaws.fit import fit  # noqa: E402

t = fit(df, "chinchilla", columns={"N": "N", "D": "D"},
        config=FitConfig(progress=False)).timings
plain = t["point_fit_s"] + t["nuts_s"]
plain_cpu = t["point_fit_cpu_s"] + t["nuts_cpu_s"]
print(f"fit with backtests {t['total_s']:.1f} s vs plain {plain:.1f} s: ratio "
      f"{t['total_s'] / plain:.2f} (goal <= 4); in CPU seconds (steadier under other load) "
      f"{t['total_cpu_s']:.0f} vs {plain_cpu:.0f}: {t['total_cpu_s'] / plain_cpu:.2f}")
