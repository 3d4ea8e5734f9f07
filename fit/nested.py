"""Nested prediction of a large model on an unseen mixture, as one hierarchical model.

Ye et al. 2024 predict the loss of a big model trained long on a new data mixture from small,
short runs by chaining three point fits: a step law per (mixture, size) run to extrapolate
along steps, a size law per mixture on those extrapolations, then the mixing law across
mixtures. Each stage treats the last one's point estimates as data, so the final number
carries no uncertainty of the stages before it. Here the three laws are one surface,

    L(r, N, S) = E(r) + a_m * (N/N0)^-alpha + b_m * (S/S0)^-beta
    E(r)       = e_mid + (exp(kappa * g) - 1) / kappa,  g = z . (r - u)   (Ye eq. 1)
    log a_m    = mu_a + g_a . (r_m - u) + tau_a * z_a[m]     (partial pooling)
    log b_m    = mu_b + g_b . (r_m - u) + tau_b * z_b[m]

fitted jointly to every point of every loss curve with NUTS. The surface is a ``Law``
(``nested_law``) sampled by the project's own ``law_model`` (Student-t on log loss, the
shared noise priors), and its mixing term is ``mixing_law(domains, sizes=())`` itself (Ye's
``c + k exp(t . r)`` sampled by centred linear effects ``z`` and a curvature ``kappa``: no
ridge between k and the size of t), not a restatement. The per-mixture size and step
coefficients are pooled toward a regression on the mixture, so an unseen mixture gets a
coefficient drawn from that population (``z ~ N(0, 1)``): its prediction carries the
uncertainty of all three stages. ``chained_point_fit`` is Ye's pipeline, kept as the baseline
(bench/nested.py compares them).

Input table: one row per evaluated point of a run, with ``mix.<domain>`` proportions,
``params`` (N), ``step`` (S) and ``loss``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pandas as pd
from numpyro.infer import MCMC, NUTS, init_to_median
from scipy.optimize import curve_fit, least_squares

from datalaws.fit.laws import Law, Param
from datalaws.fit.mixing import _front, _vec, mixing_law
from datalaws.fit.model import law_model
from datalaws.fit.table import TableError

__all__ = ["NestedFit", "fit_nested", "chained_point_fit", "nested_law", "simulate_nested",
           "NESTED_TRUTH"]


def _ln(median: float, s: float) -> dist.Distribution:
    return dist.LogNormal(jnp.log(median), s)


def _coef(p, c: str, r, z):
    """``log c_m = mu_c + g_c . (r - u) + tau_c * z`` (``c`` is ``a`` or ``b``); r [J, ...]
    stacked proportions, z the mixture's standardised deviation (drawn for a new one)."""
    g = _front(p[f"g_{c}"])
    lin = jnp.einsum("j...,j...->...", g, r - 1.0 / r.shape[0])
    return jnp.exp(p[f"mu_{c}"] + lin + p[f"tau_{c}"] * z)


def nested_law(domains: Sequence[str], mixtures: int, curved: bool = True) -> Law:
    """The surface above as a ``Law`` over ``M = mixtures`` distinct training mixtures.

    The mixing term is ``mixing_law(domains, sizes=())`` itself (its fn and priors: ``e_mid``,
    ``kappa``, centred effects ``z``); the pooled size and step coefficients add ``mu``,
    effects ``g``, a scale ``tau`` (log-normal: kept off the funnel's neck at 0, as the mixing
    law's pooled scales) and one standardised deviation per training mixture. Inputs:
    ``r.<d>``, ``N`` = N/N0, ``S`` = S/S0, ``m`` the row's mixture (index into the M), and
    optionally ``z_a``/``z_b`` (a new mixture's drawn deviations, with ``m`` = -1).

    ``curved=False``: the mixing term's curvature is 0 (the law's linear limit) and not
    sampled; ``fit_nested`` does so when there are too few distinct mixtures to identify it
    (fewer than J + 2: the level, J - 1 effects and kappa need more points than that)."""
    domains = sorted(domains)  # as the mixing law orders them
    mix = mixing_law(domains, sizes=())
    J = len(domains)

    def fn(x, p):
        r = jnp.stack([jnp.asarray(x[f"r.{d}"]) for d in domains])
        m = jnp.asarray(x["m"]).astype(jnp.int32)
        out = mix.fn(x, p if curved else {**p, "kappa": 0.0})
        for c, size, e in (("a", "N", "alpha"), ("b", "S", "beta")):
            z = x.get(f"z_{c}")
            if z is None:  # training rows: their mixture's own deviation
                z = jnp.take(p[f"z_{c}"], jnp.maximum(m, 0), axis=-1)
            out = out + _coef(p, c, r, z) * jnp.asarray(x[size]) ** -p[e]
        return out

    pooled = []
    for c, what in (("a", "size"), ("b", "step")):
        pooled += [Param(f"mu_{c}", dist.Normal(jnp.log(0.5), 1.0), f"log {what} coefficient "
                         "at the uniform mixture"),
                   Param(f"g_{c}", _vec(dist.Normal(0.0, 1.0), J), f"linear effects of the "
                         f"mixture on the log {what} coefficient"),
                   Param(f"tau_{c}", _ln(0.1, 0.75), f"spread of the {what} coefficient "
                         "between mixtures beyond those effects"),
                   Param(f"z_{c}", _vec(dist.Normal(0.0, 1.0), mixtures), "each training "
                         f"mixture's standardised {what}-coefficient deviation")]
    params = (*(q for q in mix.params if curved or q.name != "kappa"),
              Param("alpha", _ln(0.35, 0.5), "model-size exponent"),
              Param("beta", _ln(0.35, 0.5), "step exponent"), *pooled)
    return Law(name="nested", formula=mix.formula + " + a_m*(N/N0)^-alpha + b_m*(S/S0)^-beta",
               inputs={f"r.{d}": f"mix.{d}" for d in domains} | {
                   "N": "params", "S": "step", "m": "mixture"},
               params=params, fn=fn, axis="N", reference="Ye et al. 2024 (nested scaling "
               "laws, one hierarchical model)", unscaled=mix.unscaled)


@dataclasses.dataclass(frozen=True)
class _Curves:
    """A checked curve table: the runs' sizes, steps and losses, the distinct mixtures with
    each row's index into them, and the geometric-mean scales N0, S0."""

    domains: list[str]
    N: np.ndarray
    S: np.ndarray
    loss: np.ndarray
    mixtures: np.ndarray  # [M, D]
    idx: np.ndarray  # [rows] -> mixture
    N0: float
    S0: float


def _curves(table: pd.DataFrame, domains: Sequence[str] | None) -> _Curves:
    domains = sorted(domains or [c[4:] for c in table.columns if c.startswith("mix.")])
    need = [f"mix.{d}" for d in domains] + ["params", "step", "loss"]
    missing = [c for c in need if c not in table.columns]
    if missing or len(domains) < 2:
        raise TableError(f"nested fit needs columns {need} (>= 2 mix.<domain>); missing "
                         f"{missing}")
    sub = table[need].astype(float)
    bad = ~np.isfinite(sub.to_numpy()).all(1) | (sub[["params", "step", "loss"]] <= 0).any(
        axis=1).to_numpy()
    if bad.any():
        raise TableError(f"rows {np.flatnonzero(bad)[:10].tolist()} have missing, non-finite or "
                         "non-positive params/step/loss")
    r = sub[[f"mix.{d}" for d in domains]].to_numpy()
    if np.abs(r.sum(1) - 1).max() > 1e-3:
        raise TableError("mix.<domain> proportions must sum to 1 on every row")
    N, S = sub["params"].to_numpy(), sub["step"].to_numpy()
    mixtures, idx = np.unique(np.round(r, 9), axis=0, return_inverse=True)
    return _Curves(list(domains), N, S, sub["loss"].to_numpy(), mixtures, idx.ravel(),
                   float(np.exp(np.log(N).mean())), float(np.exp(np.log(S).mean())))


@dataclasses.dataclass
class NestedFit:
    """Posterior of the nested model; ``predict`` gives draws of loss for new points."""

    domains: list[str]
    mixtures: np.ndarray  # [M, D] distinct training mixtures
    N0: float
    S0: float
    samples: dict[str, np.ndarray]  # flattened over chains
    mcmc: MCMC

    def predict(self, r: Sequence[float], params: float, step: float, *, noise: bool = True,
                seed: int = 0) -> np.ndarray:
        """Loss draws at mixture ``r`` (in ``domains`` order), size ``params``, ``step``."""
        s, r = self.samples, np.asarray(r, float)
        D = len(self.domains)
        if r.shape != (D,) or abs(r.sum() - 1) > 1e-6 or (r < 0).any():
            raise ValueError(f"mixture {list(r)} must be {D} proportions summing to 1")
        if not (params > 0 and step > 0):
            raise ValueError(f"params={params} and step={step} must be > 0")
        n = len(s["alpha"])
        rng = np.random.default_rng(seed)
        seen = np.flatnonzero(np.abs(self.mixtures - r).max(1) < 1e-9)
        x = {f"r.{d}": jnp.asarray(v) for d, v in zip(self.domains, r)} | {
            "N": jnp.asarray(params / self.N0), "S": jnp.asarray(step / self.S0),
            "m": jnp.asarray(seen[0] if seen.size else -1)}
        if not seen.size:  # a new mixture: its size/step coefficients drawn from the population
            x |= {"z_a": jnp.asarray(rng.standard_normal(n)),
                  "z_b": jnp.asarray(rng.standard_normal(n))}
        law = nested_law(self.domains, len(self.mixtures), curved="kappa" in s)
        out = np.asarray(law.fn(x, {k: jnp.asarray(v) for k, v in s.items()}), float)
        if noise:  # the likelihood of law_model: Student-t (or normal) on log loss
            eps = rng.standard_t(s["nu"]) if "nu" in s else rng.standard_normal(n)
            out = out * np.exp(s["sigma"] * eps)
        return out

    def predict_table(self, points: pd.DataFrame, *, quantiles: Sequence[float] = (0.05, 0.5,
                      0.95), seed: int = 0) -> pd.DataFrame:
        """``points`` (mix.<domain>, params, step) with ``loss_mean`` and ``loss_qNN`` columns;
        proportions are checked (in [0, 1], summing to 1, no unknown domains)."""
        from datalaws.fit.mixing import check_mixtures, check_unknown_mix

        check_unknown_mix(points, self.domains, "the points")
        r = check_mixtures(points, self.domains, where="the points")
        missing = [c for c in ("params", "step") if c not in points.columns]
        if missing:
            raise TableError(f"the points lack column(s) {missing}")
        rows = []
        for i, row in enumerate(r.to_dict(orient="records")):
            draws = self.predict([row[f"mix.{d}"] for d in self.domains], float(row["params"]),
                                 float(row["step"]), seed=seed + i)
            out = {"loss_mean": float(draws.mean())}
            out |= {f"loss_q{round(q * 100):02d}": float(v)
                    for q, v in zip(quantiles, np.quantile(draws, quantiles))}
            rows.append(out)
        return pd.concat([points.reset_index(drop=True), pd.DataFrame(rows)], axis=1)


def fit_nested(table: pd.DataFrame, *, domains: Sequence[str] | None = None,
               chains: int = 4, warmup: int = 500, draws: int = 1000, seed: int = 0,
               likelihood: str = "studentt", progress: bool = False,
               target_accept: float = 0.99) -> NestedFit:
    """NUTS posterior of the nested step/size/mixture model over a table of curve points.

    ``target_accept`` 0.99: small steps through the pooled size/step coefficients (tau near 0
    is a funnel even non-centred), measured to leave no divergences on the test curves."""
    c = _curves(table, domains)
    law = nested_law(c.domains, len(c.mixtures), curved=len(c.mixtures) >= len(c.domains) + 2)
    x = {f"r.{d}": c.mixtures[c.idx, j] for j, d in enumerate(c.domains)} | {
        "N": c.N / c.N0, "S": c.S / c.S0, "m": c.idx.astype(float)}
    # the law's own model: its priors, the mixing law's term, the project's noise model
    model = functools.partial(law_model, law=law, likelihood=likelihood)
    kernel = NUTS(model, init_strategy=init_to_median, dense_mass=True,
                  target_accept_prob=target_accept)
    method = "parallel" if jax.local_device_count() >= chains else "vectorized"
    mcmc = MCMC(kernel, num_warmup=warmup, num_samples=draws, num_chains=chains,
                chain_method=method, progress_bar=progress and method != "parallel")
    mcmc.run(jax.random.PRNGKey(seed), {k: jnp.asarray(v) for k, v in x.items()},
             y=jnp.asarray(c.loss), extra_fields=("diverging", "energy"))
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples().items()}
    return NestedFit(c.domains, c.mixtures, c.N0, c.S0, samples, mcmc)


def _power(x, e, c, p):
    return e + c * x ** -p


def _fit_power(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ``y = e + c x^-p`` (x normalised), best of a small grid of starts."""
    best = None
    for p0 in (0.2, 0.5, 1.0):
        try:
            popt, _ = curve_fit(_power, x, y, p0=(y.min() * 0.9, y.max() - y.min(), p0),
                                bounds=([0, 0, 1e-3], [np.inf, np.inf, 5]), maxfev=20000)
        except RuntimeError:
            continue
        sse = float(np.sum((_power(x, *popt) - y) ** 2))
        if best is None or sse < best[0]:
            best = (sse, popt)
    if best is None:
        raise RuntimeError("power-law fit did not converge")
    return tuple(best[1])


def chained_point_fit(table: pd.DataFrame, *, domains: Sequence[str] | None = None):
    """Ye et al.'s pipeline: step law per run, size law per mixture, then the mixing law.

    Returns ``predict(r, params, step) -> (point, sd)``: sd is the mixing fit's residual
    standard error, the interval such a pipeline can give without resampling.
    """
    cv = _curves(table, domains)
    mixtures, idx, N, S, loss, N0, S0 = cv.mixtures, cv.idx, cv.N, cv.S, cv.loss, cv.N0, cv.S0
    D = len(cv.domains)
    u = 1.0 / D

    stages = {}  # (params, step) -> stage-2 predictions per training mixture

    def at_target(params, step):
        if (params, step) in stages:
            return stages[params, step]
        out = []
        for j in range(len(mixtures)):
            sizes, ys = [], []
            for n in np.unique(N[idx == j]):
                run = (idx == j) & (N == n)
                e, c, p = _fit_power(S[run] / S0, loss[run])  # stage 1: steps
                sizes.append(n)
                ys.append(_power(step / S0, e, c, p))
            e, c, p = _fit_power(np.array(sizes) / N0, np.array(ys))  # stage 2: size
            out.append(_power(params / N0, e, c, p))
        stages[params, step] = np.array(out)
        return stages[params, step]

    def predict(r_new, params, step):
        y = at_target(params, step)

        def resid(v):  # stage 3: mixing law c + k exp(t . r)
            return v[0] + v[1] * np.exp((mixtures - u)[:, 1:] @ v[2:]) - y

        v0 = np.concatenate([[y.min() * 0.9, 0.1], np.zeros(D - 1)])
        fit = least_squares(resid, v0, bounds=([0, 0] + [-20] * (D - 1),
                                               [np.inf, np.inf] + [20] * (D - 1)))
        dof = max(len(y) - len(v0), 1)
        sd = float(np.sqrt(np.sum(fit.fun**2) / dof))
        v = fit.x
        point = v[0] + v[1] * np.exp((np.asarray(r_new) - u)[1:] @ v[2:])
        return float(point), sd

    return predict


# A known truth for tests and bench/nested.py: 3 domains, sizes and steps like Ye's small runs;
# effects centred (proportions sum to 1: a common shift of them changes nothing).
NESTED_TRUTH = {"e_mid": 1.9, "kappa": 1 / 0.3, "z": [0.02, -0.28, 0.26], "alpha": 0.3,
                "beta": 0.45, "mu_a": np.log(0.5), "g_a": [-0.033, 0.367, -0.333],
                "tau_a": 0.1, "mu_b": np.log(0.4), "g_b": [-0.167, 0.033, 0.133], "tau_b": 0.1,
                "sigma": 0.006}
_N_REF, _S_REF = 1e8, 2000.0


def _true_loss(truth, r, N, S, z_a, z_b):
    r = np.asarray(r, float)
    u = 1.0 / len(r)
    a = np.exp(truth["mu_a"] + np.dot(truth["g_a"], r - u) + truth["tau_a"] * z_a)
    b = np.exp(truth["mu_b"] + np.dot(truth["g_b"], r - u) + truth["tau_b"] * z_b)
    e = truth["e_mid"] + np.expm1(truth["kappa"] * np.dot(truth["z"], r - u)) / truth["kappa"]
    return e + a * (N / _N_REF) ** -truth["alpha"] + b * (S / _S_REF) ** -truth["beta"]


def simulate_nested(seed: int, *, mixtures: int = 8, sizes: Sequence[float] = (2e7, 4e7, 8e7,
                    1.6e8), steps: Sequence[float] = tuple(np.geomspace(500, 8000, 8)),
                    truth: dict | None = None):
    """(curve table, ``heldout(r, N, S, rng) -> a noisy loss at a new mixture``)."""
    truth = truth or NESTED_TRUTH
    rng = np.random.default_rng(seed)
    D = len(truth["z"])
    rows = []
    for _ in range(mixtures):
        r = rng.dirichlet(np.ones(D))
        z_a, z_b = rng.standard_normal(2)
        for n in sizes:
            for s in steps:
                loss = _true_loss(truth, r, n, s, z_a, z_b) * np.exp(
                    truth["sigma"] * rng.standard_normal())
                rows.append({**{f"mix.d{j}": r[j] for j in range(D)}, "params": n, "step": s,
                             "loss": loss})

    def heldout(r, N, S, rng):
        z_a, z_b, eps = rng.standard_normal(3)
        return _true_loss(truth, r, N, S, z_a, z_b) * np.exp(truth["sigma"] * eps)

    return pd.DataFrame(rows), heldout
