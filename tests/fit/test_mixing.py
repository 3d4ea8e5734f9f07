"""The mixing law recovers its parameters; the optimiser finds known optimal mixtures."""

import jax.numpy as jnp
import numpy as np
import pandas as pd

from datalaws.fit import FitConfig, fit
from datalaws.fit.laws import mixing_law
from datalaws.fit.mixture import best_mixture, optimise_mixture

TRUTH = {"c": 1.6, "k": 0.4, "t_code": -0.8, "t_web": 0.6, "a": 0.4, "alpha": 0.33, "b": 0.35,
         "beta": 0.3}
SHIFT = (TRUTH["t_code"] + TRUTH["t_web"]) / 3
M = TRUTH["k"] * np.exp(SHIFT)
SAMPLED = TRUTH | {"m": M, "e_mid": TRUTH["c"] + M}


def _table(seed, n=60):
    rng = np.random.default_rng(seed)
    r = rng.dirichlet([1, 1, 1], n)
    df = pd.DataFrame({"params": np.exp(rng.uniform(np.log(2e7), np.log(2e9), n)),
                       "tokens": np.exp(rng.uniform(np.log(4e8), np.log(1e11), n))})
    for i, d in enumerate(("books", "code", "web")):
        df[f"mix.{d}"] = r[:, i]
    law = mixing_law(["books", "code", "web"])
    x = {"N": df.params / np.exp(np.log(df.params).mean()),
         "D": df.tokens / np.exp(np.log(df.tokens).mean())}
    x |= {f"r.{d}": df[f"mix.{d}"].to_numpy() for d in ("books", "code", "web")}
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
