"""The discrepancy term shrinks when the law is right and restores coverage when the law's
form drifts (on real data: the Chinchilla runs in test_real_data.py)."""

import numpy as np
import pandas as pd

from datalaws.fit import FitConfig, fit

CFG = FitConfig(chains=2, warmup=400, draws=500, progress=False)


def _table(misspecified, seed=0, n=120):
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    D = 20 * N * np.exp(rng.uniform(-1.5, 1.5, n))
    # a smoothly broken power law: the size exponent steepens from 0.2 to 0.5 around 2e8,
    # inside the training range. One power law fits a compromise exponent and drifts beyond
    # the data; backtests cut below the break see the same kind of drift.
    size = (0.4 * (N / 2e8) ** -0.2 * (1 + (N / 2e8) ** 2) ** -0.15 if misspecified
            else 0.4 * (N / 1e8) ** -0.33)
    L = 1.8 + size + 0.35 * (D / 2e9) ** -0.3
    return pd.DataFrame({"params": N, "tokens": D,
                         "loss": L * np.exp(0.01 * rng.standard_normal(n))})


def test_k_small_and_coverage_kept_when_law_is_right():
    r = fit(_table(False), "chinchilla", holdout="params >= 2e9", config=CFG)
    h = r.summary["holdout"]["loss"]
    assert r.summary["discrepancy"]["k"] < 0.01
    assert h["coverage"]["0.9"] >= 0.8
    assert h["coverage"]["0.5"] <= 0.75  # not inflated to cover everything


def test_backtest_restores_coverage_when_the_law_drifts():
    df = _table(True)
    plain = fit(df, "chinchilla", holdout="params >= 2e9", discrepancy="none", config=CFG)
    r = fit(df, "chinchilla", holdout="params >= 2e9", config=CFG)
    before, after = plain.summary["holdout"]["loss"], r.summary["holdout"]["loss"]
    assert before["coverage"]["0.9"] < 0.7, before  # the plain fit is confidently wrong
    assert r.summary["discrepancy"]["k"] > 0.01
    assert after["coverage"]["0.9"] >= 0.85 and after["coverage"]["0.8"] >= 0.7, after
    # the discrepancy widens the intervals; it does not move their centres
    assert after["median_abs_err"] <= before["median_abs_err"] * 1.1
    # backtest rows: the widening grows with the distance beyond each fold's data
    pts = pd.DataFrame(r.summary["discrepancy"]["backtest_points"])
    extra = (pts.hi90_k - pts.lo90_k) - (pts.hi90_none - pts.lo90_none)
    assert len(pts) > 20 and np.corrcoef(pts.d, extra)[0, 1] > 0.8
