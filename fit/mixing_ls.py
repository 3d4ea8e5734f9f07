"""The mixing laws' least squares (``datalaws.fit.infer.point_fit`` calls these through
``datalaws.fit.mixing``): where it searches, and how its answer becomes the sampler's start.

Least squares searches every latent term by its linear effects beta (``t_coords=False``):
random starts drawn from the prior of t (sd ``T_SCALE``) start strongly curved terms at
exponents of +-10 and more, and the search then stalls in worse optima (RegMix Pile-CC,
3-fold CV: 0.079 / 0.074 for K = 2 / 3 in t, 0.068 / 0.066 in beta). The sampler's terms 2+
are in t = kappa beta (``mixing_prior``): the answer is converted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from datalaws.fit.laws import Law
from datalaws.fit.mixing_prior import PooledEffects

__all__ = ["balance_point", "split_by_domain", "join_domains", "per_domain_rows"]


def _z_prior(law: Law):
    return next(p.prior for p in law.params if p.name == "z")


def _t_rows(law: Law) -> bool:
    """Whether the law holds terms 2+ by t (its effects' prior has a second kind)."""
    prior = _z_prior(law)
    if isinstance(prior, PooledEffects):
        return prior.G > 1
    base = getattr(prior, "base_dist", prior)
    return np.unique(np.asarray(getattr(base, "base_dist", base).scale)).size > 1


def balance_point(law: Law, point: Mapping) -> dict:
    """Least squares leaves two directions to the prior: a common shift of each series'
    effects (proportions sum to 1, so it changes no loss) and the split of ``beta = tau * z``.
    Centre the effects and set each ``tau_j`` to the rms of its effects, as the shrinkage
    prior would, so NUTS starts where the prior has mass; the fitted losses are unchanged."""
    point = dict(point)
    if law.family != "mixing" or "z" not in point:
        return point
    J = len(law.domains)
    prior = _z_prior(law)
    pooled = isinstance(prior, PooledEffects)
    z = np.asarray(point["z"], float)
    beta = (z[: prior.E * J] if pooled else z).reshape(-1, J)
    beta = beta - beta.mean(axis=1, keepdims=True)
    if not pooled:
        return point | {"z": beta.ravel().tolist()}
    kinds = np.asarray(prior.kinds)
    scale = np.stack([np.maximum(np.sqrt(np.mean(beta[kinds == g] ** 2, axis=0)), 1e-3)
                      for g in range(prior.G)])  # rms of each kind's effects
    return point | {"z": np.concatenate([beta.ravel(), np.log(scale).ravel()]).tolist()}


def split_by_domain(law: Law, x: Mapping[str, np.ndarray], y: np.ndarray):
    """Least-squares problems ``[(law, x, y), ...]`` whose answers ``join_domains`` makes
    this law's point: for the per-domain law without size terms on one-hot rows, one
    single-series problem per evaluation domain (least squares separates across domains:
    only the shrinkage prior, which it ignores, joins them); for the implicit law with
    K >= 2, the same law in linear-effect coordinates; else None."""
    from datalaws.fit.mixing import latent_count, mixing_implicit_law, mixing_law

    K, domains = latent_count(law), list(law.domains)
    if law.name.startswith("mixing_implicit"):
        return None if not _t_rows(law) else [(mixing_implicit_law(domains, K, law.sizes,
                                                         t_coords=False), x, y)]
    W = per_domain_rows(law, x)
    if W is None:
        return None
    sub = (mixing_law(domains, sizes=()) if K == 1
           else mixing_implicit_law(domains, K, (), t_coords=False))
    return [(sub, {f"r.{d}": np.asarray(x[f"r.{d}"])[W[:, k] == 1] for d in domains},
             np.asarray(y)[W[:, k] == 1]) for k in range(W.shape[1])]


def per_domain_rows(law: Law, x: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """The rows' evaluation weights [n, E] where the per-domain law separates by domain (no
    size terms, each row one domain's loss: one-hot weights), else None. Least squares
    (``split_by_domain``) and the sampler (``datalaws.fit.blocks``) split there."""
    from datalaws.fit.mixing import SIZE_ROLES

    if not law.name.startswith("mixing_domains") or any(r in law.inputs for r in SIZE_ROLES):
        return None
    W = np.stack([np.asarray(x[f"e.{i}"]) for i in law.evals], axis=1)
    if not np.all((W == 0) | (W == 1)) or not np.all(W.sum(axis=1) == 1):
        return None
    return W


def _to_t(point: Mapping, J: int) -> list[float]:
    """One series' effects with terms 2+ as t = kappa_k beta_k (kappa_k = kappa1 + gaps)."""
    z = np.array(point["z"], float).reshape(-1, J)  # a copy: the caller's point stays
    if len(z) > 1:
        kap = float(np.asarray(point["kappa1"])) + np.cumsum(np.asarray(point["gaps"], float))
        z[1:] *= kap[:, None]
    return z.ravel().tolist()


def join_domains(law: Law, points: Sequence[Mapping]) -> dict:
    """The law's point from the answers to ``split_by_domain``'s problems."""
    from datalaws.fit.mixing import latent_count

    J = len(law.domains)
    if law.name.startswith("mixing_implicit"):
        return balance_point(law, dict(points[0]) | {"z": _to_t(points[0], J)})
    out = {"e_mid": [p["e_mid"] for p in points],
           "z": [v for p in points for v in _to_t(p, J)]}
    if latent_count(law) == 1:
        out["kappa"] = [p["kappa"] for p in points]
    else:
        out["kappa1"] = [p["kappa1"] for p in points]
        out["gaps"] = [float(v) for p in points for v in p["gaps"]]
    prior = _z_prior(law)
    if isinstance(prior, PooledEffects):
        out["z"] += [0.0] * (prior.G * J)  # log tau: balanced
    return balance_point(law, out)
