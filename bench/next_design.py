"""`datalaws next` against a Chinchilla-style grid of the same cost, on simulated sweeps.

A known law generates the runs (1% noise): 15 small runs (1e6..1e7 parameters x 10, 20, 40
tokens per parameter) are fitted (NUTS + backtested discrepancy). The target is a run of
1e9 parameters on 2e10 tokens, 100x beyond the largest. `next` recommends new runs within a
FLOP budget; the reference spends the same FLOPs on a Chinchilla-style grid extending the
sweep upward (4 sizes log-spaced from the next size above the trained ones x 10, 20, 40
tokens per parameter). Both sets are simulated from the same law, each is added to the
small runs, the law is refitted, and the 90% predictive interval at the target is measured.

Printed per case and seed: the interval's width before and after each design, the ratio of
narrowing (width before - after, next over grid; the goal is >= 1.5), the ratio of the
widths left, and whether the true loss at the target lies inside each interval. Cases:
``exact`` (the Chinchilla law itself) and ``dn`` (a truth with a tokens-per-parameter
interaction the law lacks, +0.015 log(M/20)^2, so the backtest learns a discrepancy).
Usage: ``python bench/next_design.py [exact|dn ...] [--seeds 0,1] [--budget 1e18]``.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from datalaws.fit import FitConfig, fit  # noqa: E402
from datalaws.fit.api import predictive_draws  # noqa: E402
from datalaws.fit.design import chinchilla_grid, next_runs  # noqa: E402

warnings.simplefilter("ignore")
TARGET = (1e9, 2e10)
CASES = {"exact": lambda M: 0.0, "dn": lambda M: 0.015 * np.log(M / 20) ** 2}
CFG = FitConfig(chains=4, warmup=400, draws=500, progress=False)


def truth(N, D, extra):
    N, D = np.asarray(N, float), np.asarray(D, float)
    return 1.8 + 0.4 * (N / 1e8) ** -0.33 + 0.35 * (D / 2e9) ** -0.3 + extra(D / N)


def simulate(runs: pd.DataFrame, extra, rng) -> pd.DataFrame:
    loss = truth(runs.params, runs.tokens, extra) * np.exp(0.01 * rng.standard_normal(len(runs)))
    return pd.DataFrame({"params": runs.params.to_numpy(), "tokens": runs.tokens.to_numpy(),
                         "loss": loss})


def width90(result) -> tuple[float, float, float]:
    pt = pd.DataFrame({"params": [TARGET[0]], "tokens": [TARGET[1]]})
    lo, hi = np.quantile(predictive_draws(result, pt)["loss"][:, 0], [0.05, 0.95])
    return float(hi - lo), float(lo), float(hi)


def one(case: str, seed: int, budget: float) -> dict:
    extra, rng = CASES[case], np.random.default_rng(seed)
    n = np.repeat(np.geomspace(1e6, 1e7, 5), 3)
    small = simulate(pd.DataFrame({"params": n, "tokens": n * np.tile([10.0, 20.0, 40.0], 5)}),
                     extra, rng)
    t0 = time.perf_counter()
    base = fit(small, "chinchilla", config=CFG)
    w0, *_ = width90(base)
    t1 = time.perf_counter()
    design = next_runs(base, budget, *TARGET)
    t_next = time.perf_counter() - t1
    spent = float(design.runs.flops.sum())
    grid = chinchilla_grid(spent, 1e7 * 10 ** 0.25)
    out = {"case": case, "seed": seed, "k_before": base.discrepancy_k, "w_before": w0,
           "next_runs": len(design.runs), "grid_runs": len(grid), "flops": spent,
           "next_predicted_w": design.width90(design.sd_after), "next_s": t_next,
           "picks": "; ".join(f"{r.params:.2g}x{r.tokens:.2g}" for r in design.runs.itertuples()),
           "grid_top": float(grid.params.max())}
    true_loss = float(truth(*TARGET, extra))
    for name, runs in (("next", design.runs), ("grid", grid)):
        r = fit(pd.concat([small, simulate(runs, extra, rng)], ignore_index=True),
                "chinchilla", config=CFG)
        w, lo, hi = width90(r)
        out |= {f"w_{name}": w, f"k_{name}": r.discrepancy_k,
                f"covers_{name}": lo <= true_loss <= hi,
                f"diag_{name}": r.diagnostics.ok}
    # a grid whose refit widened the interval (its runs taught the backtest a larger k)
    # narrowed nothing: the ratio is then infinite
    g = w0 - out["w_grid"]
    out["narrowing_ratio"] = (w0 - out["w_next"]) / g if g > 0 else float("inf")
    out["width_ratio"] = out["w_grid"] / out["w_next"]
    out["fit_s"] = time.perf_counter() - t0 - t_next
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cases", nargs="*", default=["dn", "exact"])
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--budget", type=float, default=1e18)
    a = ap.parse_args()
    rows = []
    print(f"{'case':6s} {'seed':>4s} {'runs n/g':>8s} {'FLOPs':>8s} {'w90 before':>10s} "
          f"{'next':>7s} {'(pred)':>7s} {'grid':>7s} {'narrow ratio':>12s} {'width ratio':>11s}"
          f" {'covers n/g':>10s}  k before/next/grid", flush=True)
    for case in a.cases:
        for seed in (int(s) for s in a.seeds.split(",")):
            r = one(case, seed, a.budget)
            rows.append(r)
            print(f"{case:6s} {seed:4d} {r['next_runs']:>3d}/{r['grid_runs']:<4d} "
                  f"{r['flops']:8.2g} {r['w_before']:10.4f} {r['w_next']:7.4f} "
                  f"{r['next_predicted_w']:7.4f} {r['w_grid']:7.4f} "
                  f"{r['narrowing_ratio']:12.2f} {r['width_ratio']:11.2f} "
                  f"{str(r['covers_next'])[0]}/{str(r['covers_grid'])[0]:>8s}  "
                  f"{r['k_before']:.3g}/{r['k_next']:.3g}/{r['k_grid']:.3g}", flush=True)
            print(f"       next: {r['picks']} (N x D); grid: 4 sizes up to "
                  f"{r['grid_top']:.2g} x 10/20/40 tokens per parameter", flush=True)
    df = pd.DataFrame(rows)
    print(f"median narrowing ratio (next over grid, same FLOPs): "
          f"{df.narrowing_ratio.median():.2f} (goal >= 1.5); median width ratio "
          f"{df.width_ratio.median():.2f}; `next` itself took {df.next_s.median():.1f} s vs "
          f"{df.fit_s.median():.0f} s for the three fits (same run, shared machine)")


if __name__ == "__main__":
    main()
