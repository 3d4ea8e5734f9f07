"""The mixture that minimises expected loss (or a posterior quantile) on the simplex.

Proportions are parameterised as ``r = softmax(z)``; from many starting points, Adam
descends the posterior objective — the mean over posterior draws of the predicted loss, or
a quantile of it for risk-averse choices — through the softmax. The answer comes with the
posterior probability that it beats a given default mixture (same draws, so the comparison
carries the correlation between the two predictions).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from datalaws.fit.laws import Law
from datalaws.fit.result import Fit

__all__ = ["optimise_mixture", "best_mixture", "eval_weights"]


def optimise_mixture(loss_draws: Callable[[jnp.ndarray], jnp.ndarray], n_domains: int, *,
                     quantile: float | None = None, default: Sequence[float] | None = None,
                     starts: int = 16, steps: int = 400, lr: float = 0.1, seed: int = 0,
                     min_gap: float = 0.1) -> dict:
    """Minimise ``mean`` (or ``quantile``) of ``loss_draws(r) -> [draws]`` over the simplex.

    Besides the pick, reports the runner-up: the best other candidate (another start's
    optimum, or a single-domain mixture) at L1 distance >= ``min_gap`` from the pick, and
    ``p_beats_runner_up``, the posterior probability that the pick's loss is the lower one.
    """

    def objective(z):
        draws = loss_draws(jax.nn.softmax(z))
        return jnp.mean(draws) if quantile is None else jnp.quantile(draws, quantile)

    opt = optax.adam(lr)

    def descend(z0):
        def step(carry, _):
            z, state = carry
            g = jax.grad(objective)(z)
            updates, state = opt.update(g, state, z)
            return (optax.apply_updates(z, updates), state), None

        (z, _), _ = jax.lax.scan(step, (z0, opt.init(z0)), None, length=steps)
        return z, objective(z)

    z0 = jax.random.normal(jax.random.PRNGKey(seed), (starts, n_domains)) * 2.0
    zs, values = jax.jit(jax.vmap(descend))(z0)
    best = int(jnp.argmin(values))
    r = np.asarray(jax.nn.softmax(zs[best]))
    out = {"mixture": r, "objective": float(values[best])}
    # runner-up: other optima and the pure domains, far enough from the pick to be a choice
    cands = np.concatenate([np.asarray(jax.nn.softmax(zs, axis=-1)), np.eye(n_domains)])
    cands = cands[np.abs(cands - r).sum(axis=1) >= min_gap]
    if len(cands):
        vals = [float(objective(jnp.log(jnp.asarray(c) + 1e-12))) for c in cands]
        second = cands[int(np.argmin(vals))]
        out["runner_up"] = second
        out["runner_up_objective"] = float(min(vals))
        out["p_beats_runner_up"] = float(jnp.mean(loss_draws(jnp.asarray(r))
                                                  < loss_draws(jnp.asarray(second))))
    if default is not None:
        d = jnp.asarray(default, dtype=jnp.float32)
        out["p_beats_default"] = float(jnp.mean(loss_draws(jnp.asarray(r)) < loss_draws(d)))
        out["default_objective"] = float(objective(jnp.log(d + 1e-12)))
    return out


def eval_weights(law: Law, evals: Mapping[str, float] | None) -> dict[str, float]:
    """Weights of the per-domain law's evaluation domains (0 where ``evals`` is silent);
    empty for laws of one overall loss. A clear error if they are missing or unknown."""
    domains = list(law.evals)
    if domains and not evals:
        raise ValueError(f"law {law.name!r} predicts a loss per evaluation domain: give evals "
                         f"(--evals domain=weight,...), the composition of the loss to "
                         f"optimise; domains: {domains}")
    unknown = set(evals or {}) - set(domains)
    if unknown:
        raise ValueError(f"evals name {sorted(unknown)}; law {law.name!r} predicts "
                         f"{domains or 'no per-domain losses'}")
    out = {d: float((evals or {}).get(d, 0.0)) for d in domains}
    if domains and (min(out.values()) < 0 or abs(sum(out.values()) - 1) > 0.01):
        raise ValueError(f"evals {dict(evals)}: weights must be >= 0 and sum to 1 (they are "
                         "the composition of the validation loss)")
    return out


def best_mixture(result: Fit, *, params: float | None = None,
                 tokens: float | None = None, quantile: float | None = None,
                 default: Mapping[str, float] | None = None,
                 evals: Mapping[str, float] | None = None, seed: int = 0) -> dict:
    """The best training mixture under a fitted mixing law (at a model size and token budget
    when the law has size terms; a law fitted at one size needs neither).

    For the per-domain law (``mixing_domains``) ``evals`` gives the composition of the
    validation loss to minimise, e.g. ``{"web": 0.7, "books": 0.3}``. The answer carries
    ``p_beats_runner_up`` (see ``optimise_mixture``) and, with a ``default``,
    ``p_beats_default``.
    """
    law = result.law
    domains = list(law.domains)
    if not domains:
        raise ValueError(f"law {law.name!r} has no mixture inputs; fit the mixing law")
    weights = eval_weights(law, evals)
    samples = {p.name: jnp.asarray(v) for p, v in
               ((p, result.samples()[p.name]) for p in law.params)}
    base = {}
    for role, value, flag in (("N", params, "params"), ("D", tokens, "tokens")):
        if role not in law.inputs:
            continue
        if value is None or not value > 0:
            raise ValueError(f"law {law.name!r} has a {role} term: give {flag} > 0")
        base[role] = jnp.asarray(value / result.scales[role])
    base |= {law.role("evals", e): jnp.asarray(w) for e, w in weights.items()}

    def loss_draws(r):
        x = base | {law.role("domains", d): r[i] for i, d in enumerate(domains)}
        return law.fn(x, samples)

    d = None if default is None else [default.get(k, 0.0) for k in domains]
    if d is not None and (min(d) < 0 or abs(sum(d) - 1) > 0.01):
        raise ValueError(f"default mixture {dict(default)} must be proportions summing to 1")
    out = optimise_mixture(loss_draws, len(domains), quantile=quantile, default=d, seed=seed)
    out["mixture"] = dict(zip(domains, map(float, out["mixture"])))
    if "runner_up" in out:
        out["runner_up"] = dict(zip(domains, map(float, out["runner_up"])))
    return out


def mixture_line(best: Mapping) -> str:
    """One printed line: the pick, P(beats the given mixture), P(beats the runner-up)."""
    return ("best mixture: " + ", ".join(f"{k}={v:.3f}" for k, v in best["mixture"].items())
            + (f"; P(beats --mixture) = {best['p_beats_default']:.2f}"
               if "p_beats_default" in best else "")
            + (f"; P(beats the runner-up) = {best['p_beats_runner_up']:.2f}"
               if "p_beats_runner_up" in best else ""))


def plan_mixture_only(result: Fit, *, mixture: Mapping[str, float] | None,
                      evals: Mapping[str, float] | None, objective: str = "mean") -> dict:
    """``plan --mixture`` for a mixing law fitted at one size: there is no size or token
    budget to plan (the law has no N or D term), only the mixture; the plan is the best
    mixture with P(beats --mixture) and P(beats the runner-up)."""
    q = None if objective == "mean" else int(objective[1:]) / 100
    best = best_mixture(result, quantile=q, default=mixture, evals=evals)
    return {"law": result.law.name, "objective": objective, "note": "fitted at one size: "
            "the mixture is planned, not the size (the law has no N or D term)",
            "mixture": best}
