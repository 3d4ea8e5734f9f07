"""The mixing laws: one size without size terms, per-domain with shrinkage, the joint form
over sizes, the implicit form; recovery, held-out coverage and error against the
least-squares baseline; the optimiser; every bad input named in one line."""

import dataclasses
import warnings

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from datalaws.fit import FitConfig, fit, predict
from datalaws.fit.infer import point_fit
from datalaws.fit.laws import get_law
from datalaws.fit.mixing import mixing_domains_law, mixing_law
from datalaws.fit.mixture import best_mixture, optimise_mixture
from datalaws.fit.sampling import (
    ADAPT_MAX_PARAMS,
    run_nuts,
    slow_sampling_warning,
    unconstrained_size,
)
from datalaws.fit.table import TableError

FAST = FitConfig(chains=4, warmup=400, draws=400, progress=False)
STEADY = dataclasses.replace(FAST, target_accept=0.99)  # 3 sizes: E against a N^-alpha


def _mixtures(rng, n, J):
    # sparse Dirichlet mixtures like RegMix's (many proportions near 0)
    return rng.dirichlet(np.full(J, 0.7), n)


def _truth_domains(rng, domains, evals):
    E, J = len(evals), len(domains)
    z = rng.normal(0, 0.6, (E, J))
    z = (z - z.mean(axis=1, keepdims=True)).ravel()
    return {"e_mid": rng.uniform(2.5, 4.0, E), "kappa": rng.uniform(1.0, 4.0, E),
            "z": np.concatenate([z, np.zeros(J)]) if E >= 3 else z}  # + log tau if pooled


def _per_domain_table(seed, J, evals, n, sigma=0.01):
    rng = np.random.default_rng(seed)
    domains = [f"d{j:02d}" for j in range(J)]
    law = mixing_domains_law(domains, evals, sizes=())
    truth = _truth_domains(rng, domains, evals)
    r = _mixtures(rng, n, J)
    df = pd.DataFrame({f"mix.{d}": r[:, j] for j, d in enumerate(domains)})
    x = {f"r.{d}": r[:, j] for j, d in enumerate(domains)}
    for i in evals:
        onehot = {f"e.{e}": np.full(n, float(e == i)) for e in evals}
        df[f"loss.{i}"] = np.asarray(law.fn(x | onehot, truth)) * np.exp(
            sigma * rng.standard_normal(n))
    return df, law, truth, domains


def _effects(samples, J, pooled):
    """Centred linear effects beta_ij = tau_j z_ij [draws, E, J] (a common shift is not
    identified)."""
    z = samples["z"][:, :-J] if pooled else samples["z"]
    b = z.reshape(len(z), -1, J)
    return b - b.mean(axis=-1, keepdims=True)


@pytest.mark.parametrize("J,evals,n", [(2, ["a", "b"], 40), (5, ["a", "b", "c"], 80)])
def test_per_domain_law_at_one_size(J, evals, n):
    df, law, truth, domains = _per_domain_table(J, J, evals, n + 30)
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
    lo, hi = np.quantile(_effects(s, J, len(evals) >= 3), [0.05, 0.95], axis=0)
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
    r = _mixtures(rng, n, 3)
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
    r = _mixtures(rng, 160, 3)
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
    r = _mixtures(rng, 150, 20)
    x = {f"r.{d}": r[:, j] for j, d in enumerate(domains)}
    y = np.asarray(law.fn(x, truth)) * np.exp(0.002 * rng.standard_normal(150))
    p = point_fit(law, x, y, starts=3)
    b, tb = np.asarray(p["z"]), truth["z"]
    np.testing.assert_allclose(b - b.mean(), tb - tb.mean(), atol=0.05)
    assert abs(p["kappa"] - 2.0) < 0.3


def _long(df, domains, evals):
    """The per-domain table as the law's rows: one row per mixture and evaluation domain."""
    parts = [df[[f"mix.{d}" for d in domains]].assign(
        **{f"eval.{e}": float(e == i) for e in evals}) for i in evals]
    y = np.concatenate([df[f"loss.{i}"].to_numpy() for i in evals])
    pts = pd.concat(parts, ignore_index=True)
    x = {f"r.{d}": pts[f"mix.{d}"].to_numpy() for d in domains} | {
        f"e.{e}": pts[f"eval.{e}"].to_numpy() for e in evals}
    return pts, x, y


def test_many_domain_law_samples_in_few_steps_from_a_laplace_mass():
    # 10 domains x 8 evaluation domains sampled jointly (as rows of a known composition or
    # size terms make a fit do): 114 parameters, past ADAPT_MAX_PARAMS, so NUTS uses the fixed
    # Laplace mass (fit/sampling.py). numpyro's windowed dense adaptation took the maximum
    # 1023 leapfrog steps per draw at 420 effects (bench/mixing.py sim20).
    evals = [f"e{i}" for i in range(8)]
    df, law, truth, domains = _per_domain_table(3, 10, evals, 120)
    assert unconstrained_size(law) > ADAPT_MAX_PARAMS
    _, x, y = _long(df, domains, evals)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        mcmc = run_nuts(law, x, y, FitConfig(chains=2, warmup=200, draws=200, progress=False),
                        init=point_fit(law, x, y))
    assert not [w for w in seen if "leapfrog steps" in str(w.message)]  # a pace, not a size
    steps = np.asarray(mcmc.get_extra_fields()["num_steps"])
    assert np.mean(steps) < 128, np.mean(steps)  # depth <= 7 on average, never 10 throughout
    assert not np.any(mcmc.get_extra_fields()["diverging"])
    lo, hi = np.quantile(_effects(mcmc.get_samples(), 10, True), [0.05, 0.95], axis=0)
    tb = truth["z"][: 8 * 10].reshape(8, 10)
    assert np.mean((lo <= tb) & (tb <= hi)) >= 0.8


def test_per_domain_rows_are_sampled_one_domain_at_a_time():
    # the same 10 x 8 sweep through fit(): each evaluation domain its own NUTS (fit/blocks.py),
    # stitched into the law's parameters, the pooled scales fixed at least squares' values
    evals = [f"e{i}" for i in range(8)]
    df, law, truth, domains = _per_domain_table(3, 10, evals, 160)
    train, test = df.iloc[:120], df.iloc[120:]
    r = fit(train, "mixing_domains1", config=FitConfig(chains=2, warmup=200, draws=200,
                                                         progress=False), discrepancy="none")
    post = r.idata.posterior
    assert post["sigma"].shape[-1] == 8 and post["nu"].shape[-1] == 8
    log_tau = post["z"].values[..., 80:]
    assert np.all(np.ptp(log_tau, axis=(0, 1)) == 0)  # fixed: empirical Bayes
    np.testing.assert_allclose(log_tau[0, 0], r.point["z"][80:], rtol=1e-6)
    # each domain's own step size: nowhere near NUTS's 1023-step cap (summed over 8 domains)
    steps = r.idata.sample_stats["n_steps"].values / 8
    assert np.mean(steps) < 128, np.mean(steps)
    c = r.diagnostics.to_dict()["checks"]
    # 2 x 200 draws: R-hat's own noise is ~0.02 here (the 1.01 bar is for 4 x 1000)
    assert c["r_hat"]["value"] < 1.06 and c["divergences"]["value"] == 0, c
    # the pointwise log likelihood is in the table's row order: each row's own domain's
    ll = r.idata.log_likelihood["log_loss"].values
    obs = r.idata.observed_data["log_loss"].values
    assert ll.shape[-1] == len(obs) == 8 * 120 and np.isfinite(ll).all()
    lo, hi = np.quantile(_effects(r.samples(), 10, True), [0.05, 0.95], axis=0)
    tb = truth["z"][: 8 * 10].reshape(8, 10)
    assert np.mean((lo <= tb) & (tb <= hi)) >= 0.8
    pts, _, y = _long(test, domains, evals)
    pred = predict(r, pts)
    assert 0.8 <= np.mean((pred.loss_q05 <= y) & (y <= pred.loss_q95)) <= 0.98


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
    df, _, _, _ = _per_domain_table(7, 3, ["a", "b"], 30)
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
    df, _, _, _ = _per_domain_table(8, 3, ["a"], 30)
    df["mix.d00"] = df["mix.d00"].round(3)  # published weights: sums within 0.002 of 1
    res = fit(df, "mixing_domains", method="point", config=FAST)
    out = predict(res, df.head(3).assign(**{"eval.a": 1.0}))
    assert np.isfinite(out.filter(like="loss").to_numpy()).all()
    assert res.summary["method"] == "point"
    # a point result still holds a posterior-shaped file: plan/predict read it as any fit
    assert dataclasses.is_dataclass(res)


def test_a_slow_joint_fit_says_so_and_what_to_do():
    evals = [f"e{i}" for i in range(8)]
    _, law, _, _ = _per_domain_table(3, 10, evals, 40)
    msg = slow_sampling_warning(law, 1023.0)
    assert "1023 leapfrog steps" in msg and "8 evaluation domains" in msg
    assert "one domain at a time" in msg
    one = slow_sampling_warning(get_law("chinchilla"), 700.0)
    assert "700 leapfrog steps" in one and "evaluation domains" not in one


def test_stitched_domains_keep_their_order_and_drop_stuck_chains_everywhere():
    from datalaws.fit.blocks import BlockRun, BlockSamples

    law = mixing_domains_law(["d0", "d1"], ["a", "b", "c"], sizes=())  # pooled: + log tau
    C, D = 4, 5

    def run(i, stuck=()):
        return BlockRun({"e_mid": np.full((C, D, 1), i), "kappa": np.full((C, D, 1), 10 + i),
                         "z": np.full((C, D, 2), 20 + i), "sigma": np.full((C, D), 0.1 * i),
                         "nu": np.full((C, D), 5.0 + i)},
                        {"diverging": np.zeros((C, D), bool) | (i == 1),
                         "energy": np.ones((C, D)), "num_steps": np.full((C, D), 7)},
                        np.zeros((C, D, 3)), stuck=stuck)

    log_tau = np.log([0.3, 0.4])
    s = BlockSamples(law, [], [run(0), run(1, (2,)), run(2)], log_tau, 9)
    assert s.kept == [0, 1, 3]  # chain 2 stuck in one domain: dropped from all three
    g = s.get_samples(group_by_chain=True)
    assert g["sigma"].shape == (3, D, 3) and np.allclose(g["sigma"][0, 0], [0, 0.1, 0.2])
    assert np.allclose(g["e_mid"][0, 0], [0, 1, 2]) and np.allclose(g["nu"][0, 0], [5, 6, 7])
    assert np.allclose(g["z"][0, 0], [20, 20, 21, 21, 22, 22, *log_tau])  # domain rows, tau
    assert s.get_samples()["z"].shape == (3 * D, 8)
    extra = s.get_extra_fields()
    assert extra["diverging"].all() and np.all(extra["num_steps"] == 21)  # any; summed
    many = BlockSamples(law, [], [run(0, (0,)), run(1, (1,)), run(2, (2,))], log_tau, 9)
    assert many.kept == [0, 1, 2, 3]  # half or more stuck: a failure to report, not hide


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
