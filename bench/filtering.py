"""Goyal et al.'s data-filtering law, recovered from data simulated with the authors' released
parameters (results/parameter_values.jsonl, tmars_imagenet1k_utility; error = 1 - accuracy):
five pools of 12.8M samples, 0.3% noise, fitted at the paper's budgets (2-20 passes),
predicted at larger budgets, on unions of pools never trained on, and planned over.

Prints: the paper's own top-k accuracies (estimate_best_pool.py's numbers) from our law;
each pool's b and tau with 90% intervals; held-out coverage and error; union prediction from
the per-pool fit; the planner's filtering level per budget with P(best) against the paper's.
Usage: python bench/filtering.py [chains warmup draws [backtest|none]]  (the discrepancy
scale k learned by size-ordered backtesting, as `datalaws fit` does, unless none; timings
are inflated by other load on the machine)
"""

import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from datalaws.fit import FitConfig, fit  # noqa: E402
from datalaws.fit.api import predictive_draws  # noqa: E402
from datalaws.fit.filtering import (  # noqa: E402
    N_REF,
    PAPER_A,
    PAPER_D,
    PAPER_POOL_SIZE,
    PAPER_POOLS,
    plan_filtering,
    union_error,
)

CHAINS, WARMUP, DRAWS = (int(v) for v in (sys.argv[1:4] if len(sys.argv) > 3 else (4, 500, 1000)))
DISCREPANCY = sys.argv[4] if len(sys.argv) > 4 else "backtest"
NOISE = 0.003  # sd of log error: 0.3%
FIT_BUDGETS = [25.6e6, 32e6, 51.2e6, 64e6, 76.8e6, 102.4e6, 128e6, 256e6]
HELD_BUDGETS = [640e6, 1.28e9, 2.56e9]
PLAN_BUDGETS = [32e6, 64e6, 128e6, 256e6, 640e6, 1.28e9, 2.56e9]
PAPER_CHOICE = ["top10", "top10", "top20", "top20", "top20", "top30", "top30"]
PAPER_TOP10 = [18.25, 24.62, 28.73, 31.18]  # estimate_best_pool.py at 32M, 64M, 128M, 640M
TOP = ["top10", "top10_20", "top20_30", "top30_40"]  # the paper's planner drops random25
LEVEL_NAMES = {"+".join(TOP[:k]): f"top{10 * k}" for k in range(1, 5)}


def true_error(D, pools):
    """Error of the union of ``pools`` (equal sizes) after D samples, the released fit."""
    shares = [1.0 / len(pools)] * len(pools)
    return float(union_error(D, len(pools) * PAPER_POOL_SIZE, shares,
                             [PAPER_POOLS[p][0] for p in pools],
                             [PAPER_POOLS[p][1] for p in pools], PAPER_A / N_REF, PAPER_D))


def simulate(rng):
    rows = []
    for pool in PAPER_POOLS:
        for D in FIT_BUDGETS + HELD_BUDGETS:
            rows.append({"tokens": D, "repetitions": D / PAPER_POOL_SIZE, "pool": pool,
                         "loss": true_error(D, [pool]) * np.exp(NOISE * rng.standard_normal())})
    unions = []
    for k in (2, 3, 4):
        for D in PLAN_BUDGETS:
            unions.append({"tokens": D, "repetitions": D / (k * PAPER_POOL_SIZE),
                           **{f"pool.{p}": (1.0 / k if p in TOP[:k] else 0.0)
                              for p in PAPER_POOLS},
                           "loss": true_error(D, TOP[:k]) * np.exp(NOISE * rng.standard_normal())})
    return pd.DataFrame(rows), pd.DataFrame(unions)


def main():
    print("1. the paper's numbers from our law (accuracy %, top-k = union of the k best pools)")
    print(f"{'budget':>9s} " + " ".join(f"{n:>7s}" for n in LEVEL_NAMES.values()) + "  best")
    ours = []
    for D in PLAN_BUDGETS:
        acc = [100 * (1 - true_error(D, TOP[:k])) for k in range(1, 5)]
        ours.append(f"top{10 * (1 + int(np.argmax(acc)))}")
        print(f"{D:9.3g} " + " ".join(f"{a:7.2f}" for a in acc) + f"  {ours[-1]}")
    top10 = [round(100 * (1 - true_error(D, ["top10"])), 2) for D in (32e6, 64e6, 128e6, 640e6)]
    print(f"top-10% at 32M/64M/128M/640M: {top10} (estimate_best_pool.py: {PAPER_TOP10}); "
          f"choices equal the paper's: {ours == PAPER_CHOICE}")

    table, unions = simulate(np.random.default_rng(0))
    t0 = time.perf_counter()
    r = fit(table, "filtering", holdout="tokens >= 6e8", discrepancy=DISCREPANCY,
            config=FitConfig(chains=CHAINS, warmup=WARMUP, draws=DRAWS, progress=False))
    print(f"\n2. fit: {len(table) - len(HELD_BUDGETS) * 5} runs (5 pools x {len(FIT_BUDGETS)} "
          f"budgets {FIT_BUDGETS[0]:.3g}-{FIT_BUDGETS[-1]:.3g}), {CHAINS} chains x "
          f"{WARMUP}+{DRAWS}, discrepancy {DISCREPANCY} (k = {r.discrepancy_k:.3g}), "
          f"{time.perf_counter() - t0:.0f} s; diagnostics "
          f"{'pass' if r.summary['diagnostics']['ok'] else r.summary['diagnostics']['failures']}")
    der = r.summary["derived"]
    print(f"{'param':>16s} {'true':>8s} {'q05':>8s} {'q50':>8s} {'q95':>8s} covered")
    n_cov = 0
    for pool, (b, tau) in PAPER_POOLS.items():
        for name, true in ((f"b_{pool}", b), (f"tau_{pool}", tau)):
            q = der[name]
            ok = q["q05"] <= true <= q["q95"]
            n_cov += ok
            print(f"{name:>16s} {true:8.4g} {q['q05']:8.4g} {q['q50']:8.4g} {q['q95']:8.4g} {ok}")
    q = der["a_paper"]
    print(f"{'a (per 1e5)':>16s} {PAPER_A:8.4g} {q['q05']:8.4g} {q['q50']:8.4g} {q['q95']:8.4g}")
    order = sorted(PAPER_POOLS, key=lambda p: der[f"b_{p}"]["q50"])
    print(f"intervals covering: {n_cov}/10; utility order {order} (true "
          f"{sorted(PAPER_POOLS, key=lambda p: PAPER_POOLS[p][0])})")

    h = r.summary["holdout"]
    print(f"\n3. held out ({len(HELD_BUDGETS) * 5} runs at {HELD_BUDGETS}): run coverage "
          f"50% {h['loss']['coverage']['0.5']:.2f}, 90% {h['loss']['coverage']['0.9']:.2f}; "
          f"law-only median |err| {h['loss_law']['median_abs_err']:.4f}")

    draws = predictive_draws(r, unions)
    med = np.median(draws["loss_law"], axis=0)
    lo, hi = np.quantile(draws["loss"], [0.05, 0.95], axis=0)
    y = unions.loss.to_numpy()
    print(f"\n4. unions top20/top30/top40 at {len(PLAN_BUDGETS)} budgets ({len(y)} runs) from the "
          f"per-pool fit: median |err| {np.median(np.abs(med - y)):.4f}, 90% coverage "
          f"{np.mean((lo <= y) & (y <= hi)):.2f}")

    fp = plan_filtering(r, PLAN_BUDGETS, {p: PAPER_POOL_SIZE for p in TOP})
    picks = [LEVEL_NAMES[v] for v in fp.best.level]
    agree = sum(a == b for a, b in zip(picks, PAPER_CHOICE))
    print("\n5. planner on the fit: best filtering level per budget")
    for D, pick, paper, p in zip(PLAN_BUDGETS, picks, PAPER_CHOICE, fp.best.p_best):
        print(f"{D:9.3g}  {pick:6s} P(best) {p:.2f}   paper's code: {paper}")
    print(f"agrees with the paper's code at {agree}/{len(PLAN_BUDGETS)} budgets")


if __name__ == "__main__":
    main()
