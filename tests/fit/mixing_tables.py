"""Simulated mixture sweeps for the mixing-law tests: sparse Dirichlet mixtures, a known
per-domain law, and its rows as the law reads them."""

import numpy as np
import pandas as pd

from datalaws.fit.mixing import mixing_domains_law


def mixtures(rng, n, J):
    # sparse Dirichlet mixtures like RegMix's (many proportions near 0)
    return rng.dirichlet(np.full(J, 0.7), n)


def truth_domains(rng, domains, evals):
    E, J = len(evals), len(domains)
    z = rng.normal(0, 0.6, (E, J))
    z = (z - z.mean(axis=1, keepdims=True)).ravel()
    return {"e_mid": rng.uniform(2.5, 4.0, E), "kappa": rng.uniform(1.0, 4.0, E),
            "z": np.concatenate([z, np.zeros(J)]) if E >= 3 else z}  # + log tau if pooled


def per_domain_table(seed, J, evals, n, sigma=0.01):
    rng = np.random.default_rng(seed)
    domains = [f"d{j:02d}" for j in range(J)]
    law = mixing_domains_law(domains, evals, sizes=())
    truth = truth_domains(rng, domains, evals)
    r = mixtures(rng, n, J)
    df = pd.DataFrame({f"mix.{d}": r[:, j] for j, d in enumerate(domains)})
    x = {f"r.{d}": r[:, j] for j, d in enumerate(domains)}
    for i in evals:
        onehot = {f"e.{e}": np.full(n, float(e == i)) for e in evals}
        df[f"loss.{i}"] = np.asarray(law.fn(x | onehot, truth)) * np.exp(
            sigma * rng.standard_normal(n))
    return df, law, truth, domains


def effects(samples, J, pooled):
    """Centred linear effects beta_ij = tau_j z_ij [draws, E, J] (a common shift is not
    identified)."""
    z = samples["z"][:, :-J] if pooled else samples["z"]
    b = z.reshape(len(z), -1, J)
    return b - b.mean(axis=-1, keepdims=True)


def long_rows(df, domains, evals):
    """The per-domain table as the law's rows: one row per mixture and evaluation domain."""
    parts = [df[[f"mix.{d}" for d in domains]].assign(
        **{f"eval.{e}": float(e == i) for e in evals}) for i in evals]
    y = np.concatenate([df[f"loss.{i}"].to_numpy() for i in evals])
    pts = pd.concat(parts, ignore_index=True)
    x = {f"r.{d}": pts[f"mix.{d}"].to_numpy() for d in domains} | {
        f"e.{e}": pts[f"eval.{e}"].to_numpy() for e in evals}
    return pts, x, y
