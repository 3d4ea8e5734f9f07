"""Laws recover known parameters from simulated data; accuracy links fit jointly."""

import numpy as np
import pandas as pd
import pytest

from datalaws.fit import FitConfig, fit, get_law
from datalaws.fit.validate import sbc_ranks, uniformity_pvalue

# four chains: the diagnostics the fit must pass (R-hat <= 1.01, ESS >= 400) need them
FAST = FitConfig(chains=4, warmup=500, draws=500, progress=False)


def _grid(rng, n):
    N = np.exp(rng.uniform(np.log(2e7), np.log(2e9), n))
    D = np.exp(rng.uniform(np.log(4e8), np.log(1e11), n))
    return N, D


TRUTH = {
    "chinchilla": {"E": 1.8, "a": 0.4, "alpha": 0.33, "b": 0.35, "beta": 0.3},
    "quality": {"E": 1.8, "a": 0.4, "alpha": 0.33, "b": 0.35, "beta": 0.3, "gamma": 0.8,
                "delta": -0.5},
    "quality_exp": {"E": 1.8, "a": 0.4, "alpha": 0.33, "b": 0.35, "beta": 0.3, "gamma": 1.0,
                    "delta": 0.0},
    "overtrain": {"E": 1.8, "a": 0.2, "b": 0.3, "eta": 0.15},
    "data_constrained": {"E": 1.8, "a": 0.4, "alpha": 0.33, "b": 0.35, "beta": 0.3, "r_star": 8.0},
}


def simulate_table(law_name, seed, n=80, sigma=0.01):
    rng = np.random.default_rng(seed)
    N, D = _grid(rng, n)
    df = pd.DataFrame({"params": N, "tokens": D})
    if law_name.startswith("quality"):
        df["diversity"] = rng.uniform(0.25, 0.45, n)
        df["syntheticity"] = np.exp(rng.uniform(np.log(0.02), np.log(0.1), n))
    if law_name == "data_constrained":
        df["unique_tokens"] = D / np.exp(rng.uniform(0, np.log(40), n))
        df["repetitions"] = df.tokens / df.unique_tokens
    law = get_law(law_name)
    scales = {r: float(np.exp(np.mean(np.log(df[c])))) for r, c in law.inputs.items()
              if r not in law.unscaled}
    x = {r: df[c].to_numpy() / scales.get(r, 1.0) for r, c in law.inputs.items()}
    mu = np.asarray(law.fn(x, TRUTH[law_name]))
    df["loss"] = mu * np.exp(sigma * rng.standard_normal(n))
    return df


@pytest.mark.parametrize("law_name", sorted(TRUTH))
def test_recovers_truth(law_name):
    covered, total = 0, 0
    for seed in (0, 1, 2):
        r = fit(simulate_table(law_name, seed), law_name, config=FAST, discrepancy="none")
        assert r.summary["diagnostics"]["ok"], r.summary["diagnostics"]["failures"]
        for name, true in TRUTH[law_name].items():
            p = r.summary["params"][name]
            covered += p["q05"] <= true <= p["q95"]
            total += 1
    # Marginal 90% intervals of correlated parameters miss together: one unlucky seed costs
    # several at once (overtrain, seed 0: E, b and eta), so ask for 3 in 4 over 3 seeds.
    assert covered >= 0.75 * total, f"only {covered}/{total} 90% intervals hold the truth"


def test_quality_effect_detected_and_absent():
    r = fit(simulate_table("quality", 3), "quality", config=FAST, discrepancy="none")
    g = r.summary["params"]["gamma"]
    assert g["q05"] > 0.2  # diversity matters (truth 0.8)
    r0 = fit(simulate_table("quality_exp", 3), "quality_exp", config=FAST, discrepancy="none")
    d = r0.summary["params"]["delta"]
    assert d["q05"] < 0 < d["q95"]  # syntheticity does not (truth 0)


def test_accuracy_link_joint_fit_recovers_and_correlates():
    rng = np.random.default_rng(5)
    df = simulate_table("chinchilla", 5, n=60)
    L = df.loss.to_numpy()
    floor, delta, k, L0 = 0.25, 0.1, 4.0, 2.6
    true_acc = floor + (1 - floor - delta) / (1 + np.exp(k * (L - L0)))
    df["acc.arc"] = np.clip(true_acc + 0.01 * rng.standard_normal(len(L)), 0, 1)
    r = fit(df, "chinchilla", config=FAST, discrepancy="none", accuracy="joint",
            floors={"arc": 0.25})
    s = r.summary["params"]
    assert s["acc_L0[0]"]["q05"] < L0 < s["acc_L0[0]"]["q95"]
    assert s["acc_k[0]"]["q05"] < k < s["acc_k[0]"]["q95"]
    assert r.summary["accuracy"]["pearson"]["q05"] > 0.9


def test_sbc_chinchilla_ranks_uniform():
    rng = np.random.default_rng(0)
    x = {"N": np.exp(rng.uniform(-2, 2, 30)), "D": np.exp(rng.uniform(-2, 2, 30))}
    ranks = sbc_ranks(get_law("chinchilla"), x, replicates=24, draws=99, warmup=250, seed=1)
    pvals = {k: uniformity_pvalue(v, 99) for k, v in ranks.items()}
    # 6 tests at level 0.01: a calibrated sampler fails one with probability ~6%
    assert min(pvals.values()) > 0.01, pvals
    assert all(len(v) >= 20 for v in ranks.values())


def test_cli_fit_exits_3_when_diagnostics_fail_and_where_filters_rows(tmp_path, capsys):
    import json

    from datalaws.cli import EXIT_BAD_DIAGNOSTICS, main

    csv = tmp_path / "runs.csv"
    simulate_table("chinchilla", 0, n=30).to_csv(csv, index=False)
    args = ["fit", "chinchilla", str(csv), "--chains", "2", "--warmup", "20", "--draws", "20",
            "--discrepancy", "none", "--where", "params < 1e9"]
    # 40 draws cannot reach the ESS >= 400 the checks ask for: written, but exit 3
    assert main(args + ["--out", str(tmp_path / "bad")]) == EXIT_BAD_DIAGNOSTICS
    summary = json.loads((tmp_path / "bad" / "summary.json").read_text())
    assert not summary["diagnostics"]["ok"]
    kept = (pd.read_csv(csv).params < 1e9).sum()
    assert summary["n_rows"] == kept < 30
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "accepted"), "--allow-bad",
                        "--holdout", "params >= 6e8"]) == 0
    held = (pd.read_csv(csv).query("params < 1e9").params >= 6e8).sum()
    assert held > 0
    # larger than every fitted run: beyond them, and said to be unwidened (no discrepancy)
    lines = [x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("loss ")]
    assert lines and lines[0].endswith(f"; {held} beyond the fitted runs, with no "
                                       "discrepancy term to widen them"), lines
    pd.read_csv(csv).head(2).to_csv(tmp_path / "pts.csv", index=False)
    assert main(["predict", str(tmp_path / "accepted"), "--at", str(tmp_path / "pts.csv"),
                 "--out", str(tmp_path / "p.csv")]) == 0
    pred = pd.read_csv(tmp_path / "p.csv")
    assert (pred.distance == pred.distance_unbacktested).all()  # no backtest: all of it


def test_small_sweeps_fit_with_a_warning_and_the_default_k_prior():
    from datalaws.fit.table import TableError

    df = simulate_table("chinchilla", 1, n=7)
    cfg = FitConfig(chains=2, warmup=200, draws=200, progress=False)
    with pytest.warns(UserWarning, match="only 7 runs"):
        r = fit(df, "chinchilla", config=cfg)
    d = r.summary["discrepancy"]
    assert d["k_source"].startswith("default prior") and d["k"] > 0  # never a silent k = 0
    with pytest.raises(TableError, match="at least 5 runs"):
        fit(df.iloc[:4], "chinchilla", config=cfg)


def test_the_discrepancy_prior_is_set_with_prior_k():
    df = simulate_table("chinchilla", 1, n=7)  # too small to backtest: k is its prior alone
    cfg = FitConfig(chains=2, warmup=100, draws=100, progress=False)
    with pytest.warns(UserWarning, match="only 7 runs"):
        r = fit(df, "chinchilla", config=cfg, priors={"k": "HalfNormal(0.004)"})
    d = r.summary["discrepancy"]
    assert d["k_prior"] == "HalfNormal(0.004)"
    # the half-normal's median is 0.674 s: the default (0.05, doubled below 10 runs) is 25x
    assert 0.002 < np.median(np.asarray(d["k_draws"])) < 0.004
    for bad in ("Normal(0, 1)", "HalfNormal(0)"):
        with pytest.raises(ValueError, match="prior k=.*HalfNormal"):
            fit(df, "chinchilla", config=cfg, priors={"k": bad})
