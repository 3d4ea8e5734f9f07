"""The mixing law recovers its parameters; the optimiser finds known optimal mixtures."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from datalaws.fit import FitConfig, fit
from datalaws.fit.laws import mixing_law
from datalaws.fit.mixture import best_mixture, optimise_mixture
from datalaws.fit.plan import plan
from datalaws.fit.table import TableError

TRUTH = {"c": 1.6, "k": 0.4, "t_code": -0.8, "t_web": 0.6, "a": 0.4, "alpha": 0.33, "b": 0.35,
         "beta": 0.3}
SHIFT = (TRUTH["t_code"] + TRUTH["t_web"]) / 3
M = TRUTH["k"] * np.exp(SHIFT)
SAMPLED = TRUTH | {"m": M, "e_mid": TRUTH["c"] + M}


FAST = FitConfig(chains=4, warmup=500, draws=500, progress=False)
DOMAINS = ("books", "code", "web")


def _runs(seed, n):
    rng = np.random.default_rng(seed)
    r = rng.dirichlet([1, 1, 1], n)
    df = pd.DataFrame({"params": np.exp(rng.uniform(np.log(2e7), np.log(2e9), n)),
                       "tokens": np.exp(rng.uniform(np.log(4e8), np.log(1e11), n))})
    for i, d in enumerate(DOMAINS):
        df[f"mix.{d}"] = r[:, i]
    x = {"N": df.params / np.exp(np.log(df.params).mean()),
         "D": df.tokens / np.exp(np.log(df.tokens).mean())}
    x |= {f"r.{d}": df[f"mix.{d}"].to_numpy() for d in DOMAINS}
    return rng, df, x


def _table(seed, n=60):
    rng, df, x = _runs(seed, n)
    law = mixing_law(list(DOMAINS))
    df["loss"] = np.asarray(law.fn(x, SAMPLED)) * np.exp(0.01 * rng.standard_normal(n))
    return df


def test_mixing_law_recovers_truth_and_best_mixture():
    covered = total = 0
    for seed in (0, 1):
        r = fit(_table(seed), "mixing", config=FitConfig(progress=False),
                discrepancy="none")
        assert r.summary["diagnostics"]["ok"], r.summary["diagnostics"]["failures"]
        table = r.summary["params"] | r.summary["derived"]  # c and k are derived
        for name, true in TRUTH.items():
            p = table[name]
            covered += p["q05"] <= true <= p["q95"]
            total += 1
    assert covered >= 0.8 * total, f"{covered}/{total}"
    # exp(t . r) is smallest with all weight on the domain of smallest t: code (t = -0.8)
    best = best_mixture(r, params=1e9, tokens=2e10, default={"books": 1 / 3, "code": 1 / 3,
                                                             "web": 1 / 3})
    assert best["mixture"]["code"] > 0.98 and best["p_beats_default"] > 0.95


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


def _covered(summary, truth):
    table = summary["params"]
    return [table[k]["q05"] <= v <= table[k]["q95"] for k, v in truth.items()]


def test_per_domain_mixing_law_with_explicit_composition():
    from datalaws.fit import predict
    from datalaws.fit.laws import mixing_domains_law

    truth = {"e_mid_books": 2.2, "m_books": 0.3, "t_books_code": 0.5, "t_books_web": 1.0,
             "e_mid_web": 2.0, "m_web": 0.25, "t_web_code": 0.8, "t_web_web": -1.5,
             "a": 0.4, "alpha": 0.33, "b": 0.35, "beta": 0.3}
    law = mixing_domains_law(DOMAINS, ["books", "web"])
    rng, df, x = _runs(0, 40)
    for i in ("books", "web"):  # per-domain validation losses, as RunRecords give them
        onehot = {"e.books": float(i == "books"), "e.web": float(i == "web")}
        df[f"loss.{i}"] = np.asarray(law.fn(x | onehot, truth)) * np.exp(
            0.01 * rng.standard_normal(len(df)))
    r = fit(df, "mixing_domains", config=dataclasses.replace(FAST, target_accept=0.95),
            discrepancy="none")
    assert r.summary["diagnostics"]["ok"], r.summary["diagnostics"]["failures"]
    hits = _covered(r.summary, truth)
    assert np.mean(hits) >= 0.75, hits
    # the overall loss of a known composition is the weighted sum of the domain losses
    point = pd.DataFrame({"params": [1e9], "tokens": [2e10], "mix.books": [0.2],
                          "mix.code": [0.3], "mix.web": [0.5]})
    both = {i: predict(r, point.assign(**{"eval.books": float(i == "books"),
                                          "eval.web": float(i == "web")}))["loss_law_mean"][0]
            for i in ("books", "web")}
    mixed = predict(r, point.assign(**{"eval.books": 0.3, "eval.web": 0.7}))
    with pytest.raises(TableError, match=r"eval.<domain> weights"):
        predict(r, point)
    np.testing.assert_allclose(mixed["loss_law_mean"][0], 0.3 * both["books"] + 0.7 * both["web"],
                               rtol=1e-5)
    # the best mixture for a validation composition is (near) the true law's best one
    evals = {"books": 0.3, "web": 0.7}
    uniform = {d: 1 / len(DOMAINS) for d in DOMAINS}
    best = best_mixture(r, params=1e9, tokens=2e10, default=uniform, evals=evals)
    at = {"N": jnp.asarray(1e9 / np.exp(np.log(df.params).mean())),
          "D": jnp.asarray(2e10 / np.exp(np.log(df.tokens).mean()))}
    at |= {f"e.{e}": jnp.asarray(w) for e, w in evals.items()}

    def true_loss(mix):
        return law.fn(at | {f"r.{d}": mix[i] for i, d in enumerate(DOMAINS)}, truth)[None]

    optimum = optimise_mixture(true_loss, len(DOMAINS))["mixture"]
    regret = float(true_loss(jnp.asarray([best["mixture"][d] for d in DOMAINS]))[0]
                   - true_loss(jnp.asarray(optimum))[0])
    assert regret < 0.005, (best["mixture"], optimum, regret)
    with pytest.raises(ValueError, match="evals"):
        best_mixture(r, params=1e9, tokens=2e10)
    p = plan(r, 1e20, mixture=uniform, evals=evals)
    assert p.chosen["params"] > 0
    with pytest.raises(ValueError, match="evals"):
        plan(r, 1e20, mixture=uniform)


def test_implicit_latent_domains_predict_new_mixtures():
    from datalaws.fit import predict
    from datalaws.fit.laws import mixing_implicit_law

    truth = {"e_mid": 2.1, "q1": 0.3, "t1_code": -1.0, "t1_web": 0.5, "q2": 0.3, "gap2": 2.5,
             "t2_web": -1.5, "a": 0.4, "alpha": 0.33, "b": 0.35, "beta": 0.3}
    law = mixing_implicit_law(DOMAINS, 2)
    rng, df, x = _runs(1, 120)
    df["loss"] = np.asarray(law.fn(x, truth)) * np.exp(0.005 * rng.standard_normal(len(df)))
    r = fit(df, "mixing_implicit", config=FAST, discrepancy="none")
    # the ordering holds in every draw: latent 2's effect of code exceeds latent 1's
    assert (r.samples()["gap2"] > 0).all()
    # the latent components are weakly identified one by one (q_k trades off against
    # |t_k| along a curved ridge), but the loss surface they add up to is pinned down
    _, new, xn = _runs(2, 20)
    xn["N"] = new.params / np.exp(np.log(df.params).mean())  # the training table's scales
    xn["D"] = new.tokens / np.exp(np.log(df.tokens).mean())
    true_law = np.asarray(law.fn(xn, truth))
    pred = predict(r, new)
    inside = (pred["loss_law_q05"] <= true_law) & (true_law <= pred["loss_law_q95"])
    assert inside.mean() >= 0.8, inside
    assert np.median(np.abs(pred["loss_law_q50"] - true_law)) < 0.01
