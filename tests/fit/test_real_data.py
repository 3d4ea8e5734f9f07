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
    df = pd.read_csv(shared_data / "chinchilla.csv")
    cfg = FitConfig(progress=False, draws=600)
    plain = fit(df, "chinchilla", columns={"N": "N", "D": "D"}, holdout="N >= 2e9",
                discrepancy="none", config=cfg).summary["holdout"]["loss"]
    r = fit(df, "chinchilla", columns={"N": "N", "D": "D"}, holdout="N >= 2e9", config=cfg)
    h = r.summary["holdout"]["loss"]
    assert h["n"] == 57
    assert 0.85 <= h["coverage"]["0.9"] <= 0.95, h
    assert 0.40 <= h["coverage"]["0.5"] <= 0.60, h
    assert h["median_abs_err"] <= plain["median_abs_err"] * 1.05
    assert plain["coverage"]["0.9"] < 0.8  # the plain fit is overconfident out there
    assert r.summary["discrepancy"]["k"] > 0 and r.summary["discrepancy"]["backtest"]
