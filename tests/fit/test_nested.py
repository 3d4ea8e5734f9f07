"""Nested step/size/mixture model: recovers a known truth and predicts an unseen mixture at
an extrapolated size and step better than Ye's chained point fits."""

import numpy as np
import pytest

from datalaws.fit.nested import NESTED_TRUTH, chained_point_fit, fit_nested, simulate_nested
from datalaws.fit.table import TableError

SCALE_FREE = ("e_mid", "kappa", "z", "alpha", "beta", "g_a", "g_b", "tau_a", "tau_b", "sigma")
EFFECTS = ("z", "g_a", "g_b")  # centred: a common shift of them changes no loss


@pytest.fixture(scope="module")
def fitted():
    table, heldout = simulate_nested(0)
    return table, heldout, fit_nested(table, warmup=400, draws=400)


def test_recovers_the_truth(fitted):
    _, _, f = fitted
    # the mixing term by linear effects and curvature: no ridge for the sampler to fall off
    assert int(f.mcmc.get_extra_fields()["diverging"].sum()) == 0
    hits = []
    for name in SCALE_FREE:  # mu_a, mu_b depend on the normalisation, the rest do not
        v = f.samples[name]
        v = v - v.mean(axis=-1, keepdims=True) if name in EFFECTS else v
        lo, hi = np.quantile(v, [0.05, 0.95], axis=0)
        hits += list(np.atleast_1d((lo <= NESTED_TRUTH[name]) & (NESTED_TRUTH[name] <= hi)))
    assert np.mean(hits) >= 0.75, hits


def test_unseen_mixture_at_larger_size_and_longer_training(fitted):
    table, heldout, f = fitted
    chained = chained_point_fit(table)
    rng = np.random.default_rng(1)
    inside, err_h, err_c = 0, [], []
    for _ in range(5):
        r = rng.dirichlet(np.ones(3))
        y = heldout(r, 1.2e9, 16000, rng)  # 7.5x the largest size, 2x the longest run
        lo, med, hi = np.quantile(f.predict(r, 1.2e9, 16000), [0.05, 0.5, 0.95])
        inside += lo <= y <= hi
        err_h.append(abs(med - y))
        err_c.append(abs(chained(r, 1.2e9, 16000)[0] - y))
    assert inside >= 4
    assert np.median(err_h) < np.median(err_c)
    # a training mixture reuses its own fitted coefficients: a tighter interval
    seen = f.mixtures[0]
    width_seen = np.subtract(*np.quantile(f.predict(seen, 1.6e8, 8000), [0.95, 0.05]))
    width_new = np.subtract(*np.quantile(f.predict(r, 1.6e8, 8000), [0.95, 0.05]))
    assert width_seen < width_new


def test_bad_tables_are_named():
    table, _ = simulate_nested(0, mixtures=2)
    with pytest.raises(TableError, match="missing"):
        fit_nested(table.drop(columns="step"))
    bad = table.copy()
    bad.loc[3, "loss"] = -1.0
    with pytest.raises(TableError, match=r"rows \[3\]"):
        fit_nested(bad)


def test_bad_points_are_named(fitted):
    import pandas as pd

    _, _, f = fitted
    with pytest.raises(TableError, match="sum to 2"):
        f.predict_table(pd.DataFrame({"mix.d0": [1.0], "mix.d1": [1.0], "mix.d2": [0.0],
                                      "params": [1e9], "step": [100]}))
    with pytest.raises(TableError, match=r"mix\.zz"):
        f.predict_table(pd.DataFrame({"mix.d0": [1.0], "mix.d1": [0.0], "mix.d2": [0.0],
                                      "mix.zz": [0.0], "params": [1e9], "step": [100]}))
    out = f.predict_table(pd.DataFrame({"mix.d0": [0.2], "mix.d1": [0.3], "mix.d2": [0.5],
                                        "params": [1e9], "step": [100]}), quantiles=(0.25, 0.75))
    assert type(out.loss_q25[0].item()) is float and out.loss_q25[0] < out.loss_q75[0]


def test_nested_command_writes_fit_and_predictions(tmp_path):
    import json

    import pandas as pd

    from datalaws.cli import main

    table, _ = simulate_nested(3, mixtures=4, sizes=(2e7, 8e7), steps=(500, 2000, 8000))
    table.to_csv(tmp_path / "curves.csv", index=False)
    pd.DataFrame({"mix.d0": [0.2], "mix.d1": [0.3], "mix.d2": [0.5], "params": [1e9],
                  "step": [16000]}).to_csv(tmp_path / "at.csv", index=False)
    code = main(["nested", str(tmp_path / "curves.csv"), "--at", str(tmp_path / "at.csv"),
                 "--out", str(tmp_path / "n"), "--warmup", "200", "--draws", "200",
                 "--allow-bad", "--quantiles", "0.1,0.5,0.9"])
    assert code == 0
    pred = pd.read_csv(tmp_path / "n" / "predictions.csv")
    assert pred.loss_q10[0] < pred.loss_q50[0] < pred.loss_q90[0]
    assert "np.float64" not in (tmp_path / "n" / "summary.json").read_text()
    assert (tmp_path / "n" / "posterior.nc").exists()
    assert "alpha" in json.loads((tmp_path / "n" / "summary.json").read_text())["params"]
