"""On the public Chinchilla runs: Epoch's estimates, calibrated extrapolation."""

import pandas as pd

from datalaws.fit import FitConfig, fit

EPOCH = {"E": (1.77, 1.87), "A": (285, 744), "B": (1042, 5810), "alpha": (0.317, 0.373),
         "beta": (0.331, 0.415)}


def test_chinchilla_posterior_overlaps_epoch(shared_data):
    df = pd.read_csv(shared_data / "chinchilla.csv")
    r = fit(df, "chinchilla", columns={"N": "N", "D": "D"}, discrepancy="none",
            config=FitConfig(progress=False))
    assert r.summary["diagnostics"]["ok"], r.summary["diagnostics"]["failures"]
    table = r.summary["params"] | r.summary["derived"]
    for name, (lo, hi) in EPOCH.items():
        assert table[name]["q05"] <= hi and table[name]["q95"] >= lo, (name, table[name])


def test_chinchilla_holdout_is_calibrated_with_backtest(shared_data):
    import copy

    from datalaws.fit.api import holdout_scores
    from datalaws.fit.table import split_holdout

    df = pd.read_csv(shared_data / "chinchilla.csv")
    cols = {"N": "N", "D": "D"}
    r = fit(df, "chinchilla", columns=cols, holdout="N >= 2e9",
            config=FitConfig(progress=False, draws=600))
    h = r.summary["holdout"]["loss"]
    plain = copy.copy(r)  # the same posterior with k = 0
    plain.discrepancy = r.discrepancy | {"k_draws": None, "k": 0.0}
    before = holdout_scores(plain, split_holdout(df, "N >= 2e9")[1])["loss"]
    assert h["n"] == 57 and h["finite"]
    # the must-show bands (bench/extrapolation.py: 0.40-0.60 and 0.85-0.95), with room for
    # Monte Carlo error in a test
    assert 0.83 <= h["coverage"]["0.9"] <= 0.97, h
    assert 0.37 <= h["coverage"]["0.5"] <= 0.65, h
    assert h["median_abs_err"] <= 0.02
    assert before["coverage"]["0.9"] < 0.8  # the plain fit is overconfident out there
    d = r.summary["discrepancy"]
    assert d["k_source"].startswith("backtest") and all(f["ok"] for f in d["folds"])
