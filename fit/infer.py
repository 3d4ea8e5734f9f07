"""Bayesian inference for a law: the point-fit baseline, and (re-exported from their own
modules) the NumPyro model (``datalaws.fit.model``), NUTS and the posterior predictive
(``datalaws.fit.sampling``) and the diagnostics (``datalaws.fit.diagnostics``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro.distributions.transforms import biject_to

from datalaws.fit.diagnostics import Diagnostics, diagnose
from datalaws.fit.laws import Law
from datalaws.fit.model import AccuracyLink, law_model, noise_prior
from datalaws.fit.sampling import FitConfig, init_near, posterior_predictive, run_nuts

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
              grid: int = 2, max_starts: int = 128, polish_best: int = 4, seed: int = 0
              ) -> dict[str, float]:
    """Huber loss on log loss minimised by L-BFGS from a grid of starts (Hoffmann et al.; Epoch).

    The grid spans each parameter's prior (quantiles 0.2 / 0.8 for ``grid=2``) on the
    unconstrained scale. All starts run 100 L-BFGS steps together (optax, vmapped), then the
    ``polish_best`` lowest run SciPy's L-BFGS-B to convergence; all in float64 (a Huber delta
    of 1e-3 is below float32's useful resolution of the objective). Returns the best.
    """
    from scipy.optimize import minimize

    with jax.enable_x64(True):
        return _point_fit(law, x, y, delta=delta, grid=grid, max_starts=max_starts, seed=seed,
                          polish_best=polish_best, minimize=minimize)


def _point_fit(law, x, y, *, delta, grid, max_starts, seed, polish_best, minimize):
    names = [p.name for p in law.params]
    transforms = [biject_to(p.prior.support) for p in law.params]
    qs = np.linspace(0.2, 0.8, grid) if grid > 1 else np.array([0.5])
    axes = []
    for p, t in zip(law.params, transforms):
        draws = p.prior.sample(jax.random.PRNGKey(0), (2000,))
        axes.append(np.asarray(t.inv(jnp.quantile(draws, qs))))
    starts = np.array(list(itertools.product(*axes)))
    if len(starts) > max_starts:
        starts = starts[np.random.default_rng(seed).choice(len(starts), max_starts, False)]
    xj = {k: jnp.asarray(v, jnp.float64) for k, v in x.items()}
    log_y = jnp.log(jnp.asarray(y, jnp.float64))

    def unpack(u):
        return {n: t(u[i]) for i, (n, t) in enumerate(zip(names, transforms))}

    def objective(u):
        mu = law.fn(xj, unpack(u))
        r = jnp.where(mu > 0, jnp.log(jnp.maximum(mu, 1e-30)) - log_y, 1e3)
        return jnp.sum(_huber(r, delta))

    # Every start descends at once: optax L-BFGS, vmapped over starts in one jitted scan
    # (one Python call instead of thousands); the best few are then polished by SciPy.
    solver = optax.lbfgs()
    value_and_grad_from_state = optax.value_and_grad_from_state(objective)

    def descend(u0):
        def step(carry, _):
            u, state = carry
            v, g = value_and_grad_from_state(u, state=state)
            g = jnp.where(jnp.isfinite(g), g, 0.0)
            updates, state = solver.update(g, state, u, value=v, grad=g, value_fn=objective)
            return (optax.apply_updates(u, updates), state), None

        (u, _), _ = jax.lax.scan(step, (u0, solver.init(u0)), None, length=100)
        v = objective(u)
        return u, jnp.where(jnp.isfinite(v), v, jnp.inf)

    us, vals = jax.jit(jax.vmap(descend))(jnp.asarray(starts, jnp.float64))
    us, vals = np.asarray(us), np.asarray(vals)
    value_and_grad = jax.jit(jax.value_and_grad(objective))

    def fun(u):
        v, g = value_and_grad(jnp.asarray(u, jnp.float64))
        v, g = float(v), np.asarray(g, dtype=np.float64)
        if not np.isfinite(v) or not np.all(np.isfinite(g)):
            return 1e10, np.zeros_like(g)
        return v, g

    finite = np.flatnonzero(np.isfinite(vals) & np.all(np.isfinite(us), axis=1))
    polish = finite[np.argsort(vals[finite])[:polish_best]] if finite.size else []
    candidates = [us[i] for i in polish] or list(starts[:polish_best])
    best = min((minimize(fun, u, jac=True, method="L-BFGS-B") for u in candidates),
               key=lambda r: r.fun)
    return {n: float(v) for n, v in unpack(jnp.asarray(best.x)).items()}
