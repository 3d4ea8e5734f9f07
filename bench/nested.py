"""Nested prediction (Ye et al.'s pipeline) on simulated data with a known truth: the
hierarchical model vs chained point fits, at an unseen mixture, 7.5x the largest model and
2x the longest run. Prints median/mean absolute error and 50/90% interval coverage, and the
hierarchical fit's divergences and worst R-hat at the default sampler settings.

``python bench/nested.py [DATASETS] [datablations]``: with ``datablations``, also the
hierarchical fit at its defaults on ../shared/data/datablations_curves.csv (single-epoch
curves of c4 and oscar, 3 sizes: the data set as two one-hot "mixtures"), its divergences
and diagnostics.

The chained pipeline's interval is +-z * the mixing stage's residual standard error, the
interval it can give without resampling every stage.
"""

import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import arviz as az  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import norm  # noqa: E402

from datalaws.fit.diagnostics import diagnose  # noqa: E402
from datalaws.fit.nested import chained_point_fit, fit_nested, simulate_nested  # noqa: E402

DATASETS = next((int(a) for a in sys.argv[1:] if a.isdigit()), 8)
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


def datablations_curves(points_per_curve: int = 25):
    """Single-epoch curves (no repetition: the model has no term for it), the data set as a
    one-hot mixture, steps thinned log-uniformly past the first 5% of each run."""
    import pandas as pd

    d = pd.read_csv(os.path.join(DATA, "datablations_curves.csv"))
    d = d[d.epochs == 1]
    rows = []
    for _, g in d.groupby(["data", "N_label"]):
        g = g.sort_values("tokens_seen")
        g = g[g.tokens_seen >= 0.05 * g.tokens_seen.max()]
        idx = np.unique(np.round(np.geomspace(1, len(g), points_per_curve)).astype(int) - 1)
        rows.append(g.iloc[idx])
    d = pd.concat(rows)
    return pd.DataFrame({"mix.c4": (d.data == "c4").astype(float),
                         "mix.oscar": (d.data == "oscar").astype(float),
                         "params": d.N_nominal, "step": d.tokens_seen, "loss": d.loss})


def check_datablations() -> None:
    table = datablations_curves()
    t0 = time.perf_counter()
    f = fit_nested(table)  # the defaults
    idata = az.from_numpyro(f.mcmc)
    diag = diagnose(idata, [v for v in idata.posterior.data_vars if not v.startswith("z_")])
    print(f"datablations (epochs=1, {len(table)} points, 2 data sets x 3 sizes): "
          f"{int(diag.checks['divergences']['value'])} divergences, worst R-hat "
          f"{diag.checks['r_hat']['value']:.3f}, diagnostics "
          f"{'pass' if diag.ok else 'FAIL ' + str(diag.failures())}, "
          f"{time.perf_counter() - t0:.0f} s", flush=True)


if "datablations" in sys.argv:
    check_datablations()
if DATASETS == 0:
    sys.exit(0)
TARGETS = 5  # unseen mixtures per dataset
N_TARGET, S_TARGET = 1.2e9, 16000

rows = {"hierarchical": [], "chained": []}
t_hier = t_chain = 0.0
divergences, worst_rhat, diag_ok = 0, 1.0, 0
for seed in range(DATASETS):
    table, heldout = simulate_nested(seed)
    t0 = time.perf_counter()
    f = fit_nested(table, seed=seed)  # the defaults: 4 chains x (500 + 1000)
    t_hier += time.perf_counter() - t0
    idata = az.from_numpyro(f.mcmc)
    diag = diagnose(idata, [v for v in idata.posterior.data_vars if not v.startswith("z_")])
    divergences += int(diag.checks["divergences"]["value"])
    worst_rhat = max(worst_rhat, diag.checks["r_hat"]["value"])
    diag_ok += diag.ok
    t0 = time.perf_counter()
    chained = chained_point_fit(table)
    rng = np.random.default_rng(1000 + seed)
    for _ in range(TARGETS):
        r = rng.dirichlet(np.ones(3))
        y = heldout(r, N_TARGET, S_TARGET, rng)
        point, sd = chained(r, N_TARGET, S_TARGET)
        rows["chained"].append((abs(point - y), abs(point - y) <= norm.ppf(0.75) * sd,
                                abs(point - y) <= norm.ppf(0.95) * sd, 2 * norm.ppf(0.95) * sd))
        t_chain += time.perf_counter() - t0
        draws = f.predict(r, N_TARGET, S_TARGET, seed=seed)
        q = np.quantile(draws, [0.05, 0.25, 0.5, 0.75, 0.95])
        rows["hierarchical"].append((abs(q[2] - y), q[1] <= y <= q[3], q[0] <= y <= q[4],
                                     q[4] - q[0]))
        t0 = time.perf_counter()
    print(f"dataset {seed + 1}/{DATASETS} done", flush=True)

print(f"\n{DATASETS} datasets x {TARGETS} unseen mixtures; held-out losses carry Gaussian "
      "noise, sd 0.006 on log loss")
print(f"{'method':14s} {'median err':>10s} {'mean err':>9s} {'cov50':>6s} {'cov90':>6s} "
      f"{'width90':>8s}")
for name, r in rows.items():
    a = np.array(r, float)
    print(f"{name:14s} {np.median(a[:, 0]):10.4f} {a[:, 0].mean():9.4f} {a[:, 1].mean():6.2f} "
          f"{a[:, 2].mean():6.2f} {a[:, 3].mean():8.4f}")
print(f"hierarchical sampler: {divergences} divergences in all, worst R-hat {worst_rhat:.3f}, "
      f"diagnostics passed on {diag_ok}/{DATASETS} datasets")
print(f"time: hierarchical NUTS {t_hier / DATASETS:.1f} s per dataset; chained point fits "
      f"{t_chain / DATASETS:.1f} s per dataset ({TARGETS} predictions)")
