"""Bayesian inference for a law: the point-fit baseline, and (re-exported from their own
modules) the NumPyro model (``datalaws.fit.model``), NUTS and the posterior predictive
(``datalaws.fit.sampling``) and the diagnostics (``datalaws.fit.diagnostics``).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions.transforms import biject_to
from threadpoolctl import threadpool_limits

from datalaws.fit.diagnostics import Diagnostics, diagnose
from datalaws.fit.laws import Law
from datalaws.fit.model import AccuracyLink, law_model, noise_prior
from datalaws.fit.sampling import (
    FitConfig,
    init_near,
    param_sizes,
    posterior_predictive,
    run_nuts,
)

__all__ = [
    "FitConfig",
    "AccuracyLink",
    "law_model",
    "point_fit",
    "run_nuts",
    "diagnose",
    "Diagnostics",
    "noise_prior",
    "init_near",
    "posterior_predictive",
]

# ---------------------------------------------------------------- point fit (the baseline)

def _huber(r: jnp.ndarray, delta: float) -> jnp.ndarray:
    a = jnp.abs(r)
    return jnp.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))


def point_fit(law: Law, x: Mapping[str, np.ndarray], y: np.ndarray, *, delta: float = 1e-3,
              starts: int | None = None, polish_best: int = 2, seed: int = 0,
              split: bool = True, polish_steps: int = 20000) -> dict[str, float]:
    """Huber loss on log loss minimised by L-BFGS from a few random starts (Hoffmann et al.;
    Epoch), for any number of parameters.

    Start 0 is every parameter's prior median, the others draw each parameter at a random
    prior quantile in (0.1, 0.9), on the unconstrained scale: memory grows with the number of
    starts times the parameters, never with a grid over them (2^P). All starts run 200 L-BFGS
    steps (SciPy L-BFGS-B), then the ``polish_best`` lowest run on to convergence; all in
    float64 (a Huber delta of 1e-3 is below float32's useful resolution of the objective).
    ``starts`` defaults to 16, or 6 beyond 50 parameters. Returns the best. The per-domain
    mixing law's least squares separates by evaluation domain: one small fit per domain.
    """
    from scipy.optimize import minimize

    from datalaws.fit import mixing

    # separable least squares: one fit per domain (``split=False``: one joint fit, one
    # compilation, as cross-validation over many domains wants)
    parts = mixing.split_by_domain(law, x, y) if split else None
    if parts is not None:
        return mixing.join_domains(law, [point_fit(sub, xs, ys, delta=delta, starts=starts,
                                                   polish_best=polish_best, seed=seed,
                                                   polish_steps=polish_steps)
                                         for sub, xs, ys in parts])
    if starts is None:
        starts = 16 if len(law.params) <= 50 else 6
    with jax.enable_x64(True):
        best = _point_fit(law, x, y, delta=delta, starts=starts, seed=seed,
                          polish_best=polish_best, minimize=minimize,
                          polish_steps=polish_steps)
    return mixing.balance_point(law, best)  # hierarchical scales: the split the prior favours


def _random_starts(law: Law, transforms, starts: int, seed: int) -> np.ndarray:
    """[starts, P] unconstrained starts: prior medians, then random prior quantiles, drawn
    for every element of every parameter."""
    sizes = param_sizes(law)
    qs = np.random.default_rng(seed).uniform(0.1, 0.9, (starts, sum(sizes)))
    qs[0] = 0.5
    cols, at = [], 0
    for j, (p, t, n) in enumerate(zip(law.params, transforms, sizes)):
        draws = np.asarray(p.prior.sample(jax.random.PRNGKey(j), (1000,))).reshape(1000, n)
        vals = np.stack([np.quantile(draws[:, k], qs[:, at + k]) for k in range(n)], axis=1)
        shape = p.prior.event_shape
        cols.append(np.stack([np.asarray(t.inv(jnp.asarray(v.reshape(shape)))).reshape(n)
                              for v in vals]))
        at += n
    return np.concatenate(cols, axis=1)


def _point_fit(law, x, y, *, delta, starts, seed, polish_best, minimize, polish_steps):
    names = [p.name for p in law.params]
    transforms = [biject_to(p.prior.support) for p in law.params]
    shapes = [p.prior.event_shape for p in law.params]
    ends = np.cumsum(param_sizes(law))
    u0 = _random_starts(law, transforms, starts, seed)
    xj = {k: jnp.asarray(v, jnp.float64) for k, v in x.items()}
    log_y = jnp.log(jnp.asarray(y, jnp.float64))

    def unpack(u):
        return {n: t(u[e - int(np.prod(sh)):e].reshape(sh))
                for n, t, sh, e in zip(names, transforms, shapes, ends)}

    def objective(u):
        mu = law.fn(xj, unpack(u))
        r = jnp.where(mu > 0, jnp.log(jnp.maximum(mu, 1e-30)) - log_y, 1e3)
        return jnp.sum(_huber(r, delta))

    # SciPy's L-BFGS-B from each start for a few hundred steps (one jitted value-and-gradient
    # shared by all), then the best few to convergence: memory is one start's, whatever P.
    value_and_grad = jax.jit(jax.value_and_grad(objective))

    def fun(u):
        v, g = value_and_grad(jnp.asarray(u, jnp.float64))
        v, g = float(v), np.asarray(g, dtype=np.float64)
        if not np.isfinite(v) or not np.all(np.isfinite(g)):
            return 1e10, np.zeros_like(g)
        return v, g

    def descend(u, steps):
        return minimize(fun, u, jac=True, method="L-BFGS-B", options={"maxiter": steps})

    # L-BFGS-B's small dense algebra goes through BLAS; its threads spin-wait on a busy
    # machine (100x slower measured on 2 shared cores): one thread
    with threadpool_limits(limits=1, user_api="blas"):
        first = sorted((descend(u, 200) for u in u0), key=lambda r: r.fun)
        best = min((descend(r.x, polish_steps) for r in first[:polish_best]),
                   key=lambda r: r.fun)
    return {n: np.asarray(v).tolist() for n, v in unpack(jnp.asarray(best.x)).items()}


