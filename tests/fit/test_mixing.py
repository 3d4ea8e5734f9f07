"""The mixing laws: one size without size terms, per-domain with shrinkage, the joint form
over sizes, the implicit form; recovery, held-out coverage and error against the
least-squares baseline; the optimiser; every bad input named in one line."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from datalaws.fit import FitConfig, fit, predict
from datalaws.fit.infer import point_fit
from datalaws.fit.laws import get_law
from datalaws.fit.mixing import mixing_law
from datalaws.fit.mixture import best_mixture, optimise_mixture
from datalaws.fit.sampling import (
    slow_sampling_warning,
)
from datalaws.fit.table import TableError
from tests.fit.mixing_tables import effects, mixtures, per_domain_table

FAST = FitConfig(chains=4, warmup=400, draws=400, progress=False)
STEADY = dataclasses.replace(FAST, target_accept=0.99)  # 3 sizes: E against a N^-alpha


@pytest.mark.parametrize("J,evals,n", [(2, ["a", "b"], 40), (5, ["a", "b", "c"], 80)])
def test_per_domain_law_at_one_size(J, evals, n):
    df, law, truth, domains = per_domain_table(J, J, evals, n + 30)
    train, test = df.iloc[:n], df.iloc[n:]
    # "mixing_domains1": the paper's law (K = 1) as simulated; plain "mixing_domains" would
    # choose K by cross-validation (tests/fit/test_mixing_latent.py)
    # two domains: the curvature rests on one direction of mixtures (kappa's tail ESS ~310
    # at 4 x 400 draws): 600 draws per chain
    r = fit(train, "mixing_domains1", config=dataclasses.replace(STEADY, draws=600 if J == 2
                                                                 else 400),
            discrepancy="none")
    assert not any(k in r.law.inputs for k in ("N", "D")), "one size: no size terms"
    assert r.diagnostics.ok, r.diagnostics.failures()
    s = r.samples()
    hits = []
    for name in ("e_mid", "kappa"):
        lo, hi = np.quantile(s[name], [0.05, 0.95], axis=0)
        hits += list((lo <= truth[name]) & (truth[name] <= hi))
    lo, hi = np.quantile(effects(s, J, len(evals) >= 3), [0.05, 0.95], axis=0)
    tb = truth["z"][: len(evals) * J].reshape(len(evals), J)
    hits += list(((lo <= tb) & (tb <= hi)).ravel())
    assert np.mean(hits) >= 0.75, hits
    # held-out mixtures: calibrated, and no worse than the least-squares baseline
    base = fit(train, "mixing_domains1", method="point", config=FAST)
    cov, err, err_ls = [], [], []
    for i in evals:
        pts = test[[c for c in test if c.startswith("mix.")]].assign(**{f"eval.{i}": 1.0})
        y = test[f"loss.{i}"].to_numpy()
        p, q = predict(r, pts), predict(base, pts)
        cov += list((p.loss_q05 <= y) & (y <= p.loss_q95))
        err += list(np.abs(p.loss_law_q50 - y))
        err_ls += list(np.abs(q.loss_law_q50 - y))
    assert 0.75 <= np.mean(cov) <= 1.0, np.mean(cov)
    assert np.median(err) <= 1.1 * np.median(err_ls), (np.median(err), np.median(err_ls))


def test_joint_form_over_three_sizes():
    rng = np.random.default_rng(3)
    domains = ["books", "code", "web"]
    law = mixing_law(domains, sizes=("N",))
    truth = {"e_mid": 2.6, "kappa": 2.0, "z": np.array([0.5, -0.6, 0.1]), "a": 0.4,
             "alpha": 0.33}
    n = 90
    r = mixtures(rng, n, 3)
    params = np.repeat([2e7, 6e7, 2e8], n // 3)
    df = pd.DataFrame({"params": params} | {f"mix.{d}": r[:, j] for j, d in enumerate(domains)})
    x = {"N": params / np.exp(np.log(params).mean())} | {f"r.{d}": r[:, j]
                                                        for j, d in enumerate(domains)}
    df["loss"] = np.asarray(law.fn(x, truth)) * np.exp(0.01 * rng.standard_normal(n))
    res = fit(df, "mixing", config=dataclasses.replace(STEADY, draws=700), discrepancy="none")
    assert "N" in res.law.inputs and "D" not in res.law.inputs  # tokens not in the table
    checks = res.summary["diagnostics"]["checks"]  # e_mid trades against a N^-alpha over 3
    assert checks["r_hat"]["pass"] and checks["divergences"]["pass"], checks  # sizes: ESS
    assert min(checks["ess_bulk"]["value"], checks["ess_tail"]["value"]) >= 200, checks  # ~300
    for name in ("alpha", "kappa", "e_mid"):
        p = res.summary["params"][name]
        assert p["q05"] <= truth[name] <= p["q95"], (name, p)
    best = best_mixture(res, params=1e9, default={d: 1 / 3 for d in domains})
    assert best["mixture"]["code"] > 0.9  # the domain with the most negative effect
    assert best["p_beats_default"] > 0.9 and 0.0 <= best["p_beats_runner_up"] <= 1.0
    with pytest.raises(ValueError, match="params"):
        best_mixture(res)


def test_implicit_form_chooses_latent_domains_and_predicts():
    rng = np.random.default_rng(5)
    domains = ["books", "code", "web"]
    law = get_law("mixing_implicit2", domains=domains, sizes=())
    truth = {"e_mid": 3.0, "kappa1": 1.0, "gaps": np.array([4.0]),
             "z": np.array([0.6, -0.5, 0.0, -2.0, 0.5, 2.5])}  # latent 2 by t = kappa beta
    r = mixtures(rng, 160, 3)
    x = {f"r.{d}": r[:, j] for j, d in enumerate(domains)}
    df = pd.DataFrame({f"mix.{d}": r[:, j] for j, d in enumerate(domains)})
    df["loss"] = np.asarray(law.fn(x, truth)) * np.exp(0.005 * rng.standard_normal(160))
    res = fit(df.iloc[:120], "mixing_implicit", config=FAST, discrepancy="none")
    assert res.law.name in ("mixing_implicit2", "mixing_implicit3"), res.law.name
    s = res.samples()
    if "gaps" in s:
        assert (s["gaps"] > 0).all()  # latent domains stay ordered: no label switching
    true_law = np.asarray(law.fn({k: v[120:] for k, v in x.items()}, truth))
    pred = predict(res, df.iloc[120:].drop(columns="loss"))
    inside = (pred.loss_q05 <= true_law) & (true_law <= pred.loss_q95)
    assert inside.mean() >= 0.8, inside.mean()
    assert np.median(np.abs(pred.loss_law_q50 - true_law)) < 0.01


def test_point_fit_handles_hundreds_of_parameters():
    # 20 domains, one loss: 23 parameters in the fit, a grid of starts would need 2^23
    rng = np.random.default_rng(0)
    domains = [f"d{j:02d}" for j in range(20)]
    law = mixing_law(domains, sizes=())
    truth = {"e_mid": 3.0, "kappa": 2.0, "z": rng.normal(0, 0.5, 20)}
    r = mixtures(rng, 150, 20)
    x = {f"r.{d}": r[:, j] for j, d in enumerate(domains)}
    y = np.asarray(law.fn(x, truth)) * np.exp(0.002 * rng.standard_normal(150))
    p = point_fit(law, x, y, starts=3)
    b, tb = np.asarray(p["z"]), truth["z"]
    np.testing.assert_allclose(b - b.mean(), tb - tb.mean(), atol=0.05)
    assert abs(p["kappa"] - 2.0) < 0.3


def test_optimiser_finds_an_interior_optimum():
    # two eval domains in known composition, each best served by a different training domain
    t = jnp.array([[-2.0, 1.0, 0.5], [1.5, -1.5, 0.0]])
    s = jnp.array([0.5, 0.5])
    draws = jnp.exp(0.01 * jnp.arange(50) / 50)  # a trivially uncertain scale

    def loss(r):
        return draws * jnp.sum(s * jnp.exp(t @ r))

    grid = np.stack(np.meshgrid(np.linspace(0, 1, 401), np.linspace(0, 1, 401)), -1).reshape(-1, 2)
    grid = grid[grid.sum(1) <= 1]
    full = np.concatenate([grid, 1 - grid.sum(1, keepdims=True)], 1)
    vals = np.array([float(jnp.sum(s * jnp.exp(t @ r))) for r in full[::7]])
    truth = full[::7][vals.argmin()]
    out = optimise_mixture(loss, 3)
    assert np.abs(out["mixture"] - truth).sum() < 0.02, (out["mixture"], truth)
    assert np.abs(out["runner_up"] - out["mixture"]).sum() >= 0.1
    assert out["p_beats_runner_up"] > 0.9  # every draw shares the scale: the pick wins


@pytest.fixture(scope="module")
def small_fit():
    df, _, _, _ = per_domain_table(7, 3, ["a", "b"], 30)
    return df, fit(df, "mixing_domains", method="point", config=FAST)


@pytest.mark.parametrize("change,message", [
    ({"mix.d00": 1.5}, r"outside \[0, 1\]"),
    ({"mix.d00": 1.0, "mix.d01": 1.0, "mix.d02": 0.0}, "sum to 2"),
    ({"eval.a": 1.0, "eval.b": 1.0}, "sum to 2"),
    ({"eval.a": 0.0, "eval.b": 0.0}, "sum to 0"),
    ({"eval.a": -0.5, "eval.b": 1.5}, "negative"),
    ({"eval.a": 1.0, "eval.zz": 0.0}, r"eval\.zz"),
    ({"eval.a": 1.0, "mix.zz": 0.0}, r"mix\.zz"),
])
def test_bad_points_are_named_in_one_line(small_fit, change, message):
    df, res = small_fit
    pts = df[[c for c in df if c.startswith("mix.")]].head(2).assign(**{"eval.a": 1.0})
    pts = pts.assign(**change)
    with pytest.raises(TableError, match=message) as e:
        predict(res, pts)
    assert "\n" not in str(e.value)


def test_bad_tables_and_too_few_mixtures_are_named(small_fit):
    df, res = small_fit
    with pytest.raises(TableError, match="lacks mixture column"):
        predict(res, df.drop(columns="mix.d01").assign(**{"eval.a": 1.0}))
    bad = df.copy()
    bad.loc[2, "mix.d00"] += 0.5
    with pytest.raises(TableError, match=r"rows 2 .*sum to"):
        fit(bad, "mixing_domains", method="point", config=FAST)
    with pytest.raises(TableError, match=r"identifies 4 parameters per evaluation domain.*"
                                         r"at least 5 mixtures \(got 4\)"):
        fit(df.head(4), "mixing_domains", method="point", config=FAST)
    with pytest.raises(ValueError, match="sum to 1"):
        best_mixture(res, evals={"a": 1.0, "b": 1.0})
    one = best_mixture(res, evals={"a": 0.5, "b": 0.5})  # one size: no params or tokens
    assert abs(sum(one["mixture"].values()) - 1) < 1e-5 and "p_beats_runner_up" in one


def test_rounded_proportions_are_accepted_and_renormalised():
    df, _, _, _ = per_domain_table(8, 3, ["a"], 30)
    df["mix.d00"] = df["mix.d00"].round(3)  # published weights: sums within 0.002 of 1
    res = fit(df, "mixing_domains", method="point", config=FAST)
    out = predict(res, df.head(3).assign(**{"eval.a": 1.0}))
    assert np.isfinite(out.filter(like="loss").to_numpy()).all()
    assert res.summary["method"] == "point"
    # a point result still holds a posterior-shaped file: plan/predict read it as any fit
    assert dataclasses.is_dataclass(res)


def test_a_slow_joint_fit_says_so_and_what_to_do():
    evals = [f"e{i}" for i in range(8)]
    _, law, _, _ = per_domain_table(3, 10, evals, 40)
    msg = slow_sampling_warning(law, 1023.0)
    assert "1023 leapfrog steps" in msg and "8 evaluation domains" in msg
    assert "one domain at a time" in msg
    one = slow_sampling_warning(get_law("chinchilla"), 700.0)
    assert "700 leapfrog steps" in one and "evaluation domains" not in one


def test_diagnostics_skip_fixed_elements_but_not_stuck_ones():
    import arviz as az

    from datalaws.fit.diagnostics import diagnose

    rng = np.random.default_rng(0)
    stats = {"diverging": np.zeros((4, 500), bool), "energy": rng.normal(size=(4, 500))}
    fixed = np.concatenate([rng.normal(size=(4, 500, 2)), np.full((4, 500, 1), 3.0)], -1)
    assert diagnose(az.from_dict(posterior={"z": fixed}, sample_stats=stats), ["z"]).ok
    stuck = fixed.copy()
    stuck[0, :, 2] = 4.0  # one chain elsewhere: it moves across chains, so it is checked
    d = diagnose(az.from_dict(posterior={"z": stuck}, sample_stats=stats), ["z"])
    assert not d.ok and d.checks["r_hat"]["value"] > 1.1
