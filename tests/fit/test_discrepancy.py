"""The discrepancy term: distance from the hull of the fitted runs along every axis a law
extrapolates, k shrinking when the law is right, coverage restored when it drifts (on real
data: test_real_data.py and bench/extrapolation.py)."""

import copy

import numpy as np
import pandas as pd

from datalaws.fit import FitConfig, fit, predict
from datalaws.fit import discrepancy as disc
from datalaws.fit.laws import get_law

CFG = FitConfig(chains=2, warmup=300, draws=400, progress=False)


def test_distance_sees_overtrained_runs_inside_the_size_range():
    rng = np.random.default_rng(0)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e9), 200))
    D = N * np.exp(rng.uniform(np.log(10), np.log(40), 200))
    law = get_law("chinchilla")
    hull = disc.hull_of(disc.axis_coords(law.axes, {"N": N, "D": D}))
    pts = disc.axis_coords(law.axes, {"N": np.array([1e8, 1e8, 1e10]),
                                      "D": np.array([2e9, 2e10, 2e11])})
    d = disc.hull_offsets(pts, hull, disc.axis_groups(law.axes))  # [points, (N, D, C, M)]
    assert np.all(d[0] < 1e-3)  # inside
    # 200 tokens/param at a fitted size: beyond the hull by ~log(200/40)/sqrt(2) in (log N,
    # log D), along tokens per parameter
    assert abs(np.linalg.norm(d[1]) - np.log(5) / np.sqrt(2)) < 0.05 and np.argmax(d[1]) == 3
    # larger than every fitted size, and more tokens too: mostly along compute
    assert np.linalg.norm(d[2]) > 0.9 * np.log(1e10 / 1e9) and np.argmax(d[2]) == 2


def _table(extra, seed=0, n=110):
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(2e7), np.log(3e9), n))
    M = np.exp(rng.uniform(np.log(5), np.log(600), n))  # tokens per parameter
    D = M * N
    L = 1.8 + 0.4 * (N / 1e8) ** -0.33 + 0.35 * (D / 2e9) ** -0.3 + extra(M)
    return pd.DataFrame({"params": N, "tokens": D,
                         "loss": L * np.exp(0.01 * rng.standard_normal(n))})


def _plain(r, df, hold):
    """The same posterior predicted with k = 0 (no discrepancy)."""
    from datalaws.fit.api import holdout_scores
    from datalaws.fit.table import split_holdout

    plain = copy.copy(r)
    plain.discrepancy = r.discrepancy | {"k_draws": None, "k": 0.0}
    return holdout_scores(plain, split_holdout(df, hold)[1])["loss"]


HOLD = "tokens / params >= 100"


def test_k_small_for_the_exact_law_and_restores_coverage_along_tokens_per_parameter():
    exact = fit(_table(lambda M: 0.0), "chinchilla", holdout=HOLD, config=CFG)
    # the truth has a D/N interaction the Chinchilla law lacks: tokens beyond 20 per
    # parameter are worth less (+0.02 log(M/20)); the fit sees M < 100 and predicts beyond
    df = _table(lambda M: 0.02 * np.maximum(0.0, np.log(M / 20)))
    r = fit(df, "chinchilla", holdout=HOLD, config=CFG)
    d, h = exact.summary["discrepancy"], exact.summary["holdout"]["loss"]
    assert d["k_source"].startswith("backtest") and len(d["folds"]) >= 4
    broken = r.summary["discrepancy"]["k_axes"]
    # the exact law's k shrinks to 0: every direction more likely needs none than not
    # (the hierarchical k; bench/extrapolation.py: P(k = 0) 0.5-0.7, median k 0)
    assert all(v["q50"] < 0.002 for v in d["k_axes"].values()), d["k_axes"]
    assert np.mean([v["p_zero"] for v in d["k_axes"].values()]) > 0.5, d["k_axes"]
    # the drifting law's is not 0 along some direction (the drift shows along D as much as
    # along M: at a fixed size they are one)
    assert min(v["p_zero"] for v in broken.values()) < 0.3, broken
    # the exact law stays nominal: not over-covered (the earlier conservative score gave 0.84
    # at 50%) nor under-covered
    assert 0.35 <= h["coverage"]["0.5"] <= 0.75 and h["coverage"]["0.9"] >= 0.83, h
    before, after = _plain(r, df, HOLD), r.summary["holdout"]["loss"]
    assert before["coverage"]["0.8"] < 0.7, before  # the plain fit is confidently wrong
    assert after["coverage"]["0.5"] >= 0.3 and after["coverage"]["0.9"] >= 0.85, after
    assert after["median_abs_err"] <= before["median_abs_err"] * 1.1  # wider, not moved

    assert exact.samples()["nu"].min() > 2  # the likelihood keeps its variance finite
    far = pd.DataFrame({"params": [1e5, 1e13, 1e9], "tokens": [1e6, 1e15, 1e13]})
    fitted = df.query(f"not ({HOLD})").iloc[:1][["params", "tokens"]]
    out = predict(r, pd.concat([far, fitted]))
    assert np.isfinite(out.drop(columns=["params", "tokens"]).to_numpy()).all()
    # how far each point extrapolates, and how much of that no backtest fold reached: per
    # direction the distance past that direction's reach
    dist, unchecked = out["distance"].to_numpy(), out["distance_unbacktested"].to_numpy()
    assert dist[3] == 0 == unchecked[3], out  # a fitted run
    rd = r.discrepancy
    g = disc.hull_offsets(disc.axis_coords(r.law.axes, {"N": far.params.to_numpy(),
                                                        "D": far.tokens.to_numpy()}),
                          np.asarray(rd["hull"]), disc.axis_groups(r.law.axes))
    past = np.sqrt(np.maximum(g ** 2 - np.asarray(rd["k_reach"]) ** 2, 0.0))
    np.testing.assert_allclose(dist[:3], np.linalg.norm(g, axis=1), rtol=1e-6)
    np.testing.assert_allclose(unchecked[:3], np.linalg.norm(past, axis=1), rtol=1e-6)
    assert np.all((unchecked[:3] > 0) & (unchecked[:3] < dist[:3])), out
    held = predict(r, df.query(HOLD)[["params", "tokens"]])  # and in the held-out scores
    assert after["n_unbacktested"] == int((held["distance_unbacktested"] > 0).sum())
    # one backtest row per fold x distance bin: each fold's held-back rows counted once
    bt = pd.DataFrame(d["backtest"])
    per_fold = bt.groupby("fold").n.sum().to_numpy()
    np.testing.assert_array_equal(per_fold, [f["n_test"] for f in d["folds"]])


def test_compare_ranks_by_the_backtest_folds_fits_share():
    from datalaws.fit.backtest import backtest_ranking

    def scores(*rows):
        return {"discrepancy": {"backtest_scores": [
            {"direction": d, "cut": c, "n": n, "log_score": s} for d, c, n, s in rows]}}

    ranked = backtest_ranking({
        "a": scores(("N", 1e9, 10, 2.0), ("M", 40.0, 10, 1.0)),
        "b": scores(("N", 1e9, 10, 2.5), ("M", 40.0, 10, 1.5), ("U", 1e9, 5, -9.0)),
        "c": {"discrepancy": {}},  # fitted without a backtest: last
    })
    assert [r["fit"] for r in ranked] == ["b", "a", "c"]
    assert ranked[0]["folds"] == 2 and ranked[0]["backtest_log_score"] == 2.0  # U not shared
