"""Bayesian inference for a law: the NumPyro model, the point-fit baseline, NUTS, diagnostics.

The model is a plain function of its data (``obs=None`` by default), so the same function
gives the prior predictive, the posterior (``MCMC``) and the posterior predictive
(``Predictive``). Loss is modelled on the log scale with a Student-t likelihood (robust to the
outlying runs published tables contain) or a Gaussian. Downstream accuracy, when asked for,
is linked to the law's *predicted* loss and fitted jointly, so accuracy intervals carry the
loss law's uncertainty.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import time
from collections.abc import Mapping, Sequence

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.distributions.transforms import biject_to
from numpyro.infer import MCMC, NUTS, init_to_value

from datalaws.fit.laws import NOISE_PRIORS, Law

__all__ = [
    "FitConfig",
    "AccuracyLink",
    "law_model",
    "point_fit",
    "run_nuts",
    "diagnose",
    "Diagnostics",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class FitConfig:
    """How to sample a posterior."""

    chains: int = 4  # independent NUTS chains (diagnostics need >= 2)
    warmup: int = 500  # adaptation steps per chain
    draws: int = 1000  # kept draws per chain
    seed: int = 0
    likelihood: str = "studentt"  # "studentt" or "normal", on log loss
    target_accept: float = 0.9
    progress: bool = True

    def __post_init__(self):
        if self.likelihood not in ("studentt", "normal"):
            raise ValueError(f"FitConfig.likelihood={self.likelihood!r}; use studentt|normal")
        for f in ("chains", "warmup", "draws"):
            if getattr(self, f) < 1:
                raise ValueError(f"FitConfig.{f}={getattr(self, f)} must be >= 1")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AccuracyLink:
    """Loss -> accuracy for each task, with the task's chance floor fixed.

    sigmoid:      acc = floor + (1 - floor - delta) * sigmoid(-k (L - L0))
    exponential:  err = (1 - floor) - k * exp(-gamma L)   (Gadre et al. 2024, eq. 5)
    """

    tasks: tuple[str, ...]
    floors: tuple[float, ...]  # chance accuracy per task (1 / number of choices)
    form: str = "sigmoid"
    ref_loss: float = 3.0  # centre of the prior on L0: the median observed loss

    def __post_init__(self):
        if self.form not in ("sigmoid", "exponential"):
            raise ValueError(f"AccuracyLink.form={self.form!r}; use sigmoid|exponential")
        if len(self.tasks) != len(self.floors):
            raise ValueError("AccuracyLink: one floor per task")
        for t, f in zip(self.tasks, self.floors):
            if not 0.0 <= f < 1.0:
                raise ValueError(f"AccuracyLink: floor of task {t!r} is {f}; need 0 <= floor < 1")

    def sample_params(self) -> dict[str, jnp.ndarray]:
        with numpyro.plate("tasks", len(self.tasks)):
            if self.form == "sigmoid":
                return {
                    "acc_L0": numpyro.sample("acc_L0", dist.Normal(self.ref_loss, 1.0)),
                    "acc_k": numpyro.sample("acc_k", dist.LogNormal(jnp.log(3.0), 1.0)),
                    "acc_delta": numpyro.sample("acc_delta", dist.Beta(1.0, 4.0)),
                    "acc_sigma": numpyro.sample("acc_sigma", dist.HalfNormal(0.05)),
                }
            return {
                "acc_k": numpyro.sample("acc_k", dist.LogNormal(0.0, 2.0)),
                "acc_gamma": numpyro.sample("acc_gamma", dist.LogNormal(0.0, 1.0)),
                "acc_sigma": numpyro.sample("acc_sigma", dist.HalfNormal(0.05)),
            }

    def accuracy(self, loss: jnp.ndarray, p: Mapping[str, jnp.ndarray]) -> jnp.ndarray:
        """loss [..., n] -> accuracy [..., n, tasks]."""
        floor = jnp.asarray(self.floors)
        L = loss[..., None]
        if self.form == "sigmoid":
            s = jax.nn.sigmoid(-p["acc_k"] * (L - p["acc_L0"]))
            return floor + (1 - floor - p["acc_delta"]) * s
        err = (1 - floor) - p["acc_k"] * jnp.exp(-p["acc_gamma"] * L)
        return 1.0 - jnp.clip(err, 0.0, 1.0)


def law_model(x: Mapping[str, jnp.ndarray], *, law: Law, y: jnp.ndarray | None = None,
              likelihood: str = "studentt", link: AccuracyLink | None = None,
              acc: jnp.ndarray | None = None, distance: jnp.ndarray | None = None,
              k: float = 0.0, mask: jnp.ndarray | None = None) -> None:
    """NumPyro model of one law.

    Args:
      x: normalised inputs by role, each [n].
      y: observed loss [n] or None (predictive).
      acc: observed accuracy [n, tasks] (NaN where missing) or None.
      distance: [n] extrapolation distance d of each point (0 inside the fitted data). With
        ``k > 0`` each point's true loss is drawn around the law as
        ``log L_true = log L_law + k*d*z``, z ~ N(0, 1): the discrepancy term.
      mask: [n] bool, rows that enter the likelihood; or [folds, n] to fit independent
        copies of the law at once, one per row of the mask (size-ordered backtesting: one
        compiled sampler for all folds, since the joint posterior factorises over folds).
    """
    folds = None if mask is None or jnp.ndim(mask) == 1 else mask.shape[0]
    fold_plate = numpyro.plate("folds", folds, dim=-2) if folds else contextlib.nullcontext()
    with fold_plate:
        p = {prm.name: numpyro.sample(prm.name, prm.prior) for prm in law.params}
        sigma = numpyro.sample("sigma", NOISE_PRIORS["sigma"])
        nu = numpyro.sample("nu", NOISE_PRIORS["nu"]) if likelihood == "studentt" else None
    link_p = link.sample_params() if link is not None else None
    log_mu = jnp.log(law.fn(x, p))
    n = log_mu.shape[-1]
    with fold_plate, numpyro.plate("runs", n), \
            numpyro.handlers.mask(mask=True if mask is None else mask):
        if distance is not None and k > 0:
            z = numpyro.sample("discrepancy_z", dist.Normal(0.0, 1.0))
            numpyro.deterministic("log_loss_law", log_mu)
            log_mu = log_mu + k * distance * z
        noise = (dist.StudentT(nu, log_mu, sigma) if nu is not None
                 else dist.Normal(log_mu, sigma))
        numpyro.sample("log_loss", noise, obs=None if y is None else jnp.log(y))
    if link is not None:
        mean_acc = link.accuracy(jnp.exp(log_mu), link_p)  # [n, tasks]
        acc_mask = None if acc is None else ~jnp.isnan(acc)
        if acc_mask is not None and mask is not None:
            acc_mask = acc_mask & mask[:, None]
        obs = None if acc is None else jnp.where(acc_mask, acc, 0.5)
        with numpyro.plate("tasks_", len(link.tasks), dim=-1), \
             numpyro.plate("runs_", n, dim=-2), \
             numpyro.handlers.mask(mask=True if acc_mask is None else acc_mask):
            numpyro.sample("acc", dist.Normal(mean_acc, link_p["acc_sigma"]), obs=obs)


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


# ---------------------------------------------------------------- NUTS

def run_nuts(law: Law, x: Mapping[str, np.ndarray], y: np.ndarray, config: FitConfig, *,
             link: AccuracyLink | None = None, acc: np.ndarray | None = None,
             init: Mapping[str, float] | None = None, mask: np.ndarray | None = None
             ) -> MCMC:
    """Sample the posterior with NUTS, chains on separate host devices when there are enough."""
    chain_method = "parallel" if jax.local_device_count() >= config.chains else "vectorized"
    shape = (len(mask), 1) if mask is not None and np.ndim(mask) == 2 else ()  # per fold
    init_values = {n: np.full(shape, v) for n, v in (init or {}).items()}
    init_values.setdefault("sigma", np.full(shape, 0.02))
    if config.likelihood == "studentt":
        init_values.setdefault("nu", np.full(shape, 10.0))
    # law, likelihood and link are static: bind them, so only arrays are traced model args
    model = functools.partial(law_model, law=law, likelihood=config.likelihood, link=link)
    kernel = NUTS(model, init_strategy=init_to_value(values=init_values),
                  target_accept_prob=config.target_accept, dense_mass=True)
    mcmc = MCMC(kernel, num_warmup=config.warmup, num_samples=config.draws,
                num_chains=config.chains, chain_method=chain_method,
                progress_bar=config.progress and chain_method != "parallel")
    t0 = time.perf_counter()
    if config.progress:
        print(f"sampling {law.name}: {config.chains} chains ({chain_method}) x "
              f"{config.warmup}+{config.draws} draws on {len(y)} runs ...", flush=True)
    mcmc.run(jax.random.PRNGKey(config.seed), {k: jnp.asarray(v) for k, v in x.items()},
             extra_fields=("diverging", "energy", "num_steps"), y=jnp.asarray(y),
             acc=None if acc is None else jnp.asarray(acc),
             mask=None if mask is None else jnp.asarray(mask))
    jax.block_until_ready(mcmc.get_samples())  # dispatch is async: time the real work
    if config.progress:
        print(f"sampled in {time.perf_counter() - t0:.1f} s", flush=True)
    return mcmc


def posterior_predictive(law: Law, samples: Mapping[str, np.ndarray],
                         x: Mapping[str, np.ndarray], *, likelihood: str,
                         link: AccuracyLink | None = None,
                         distance: np.ndarray | None = None, k: float = 0.0,
                         seed: int = 1) -> dict[str, np.ndarray]:
    """Draws [samples, n] of ``loss`` (a new observed run), ``loss_law`` and accuracies.

    The same generative story as ``law_model`` with ``y=None``, written out vectorised over
    draws (``Predictive`` re-traces the model per call, which costs seconds in backtests).
    """
    key_z, key_noise, key_acc = jax.random.split(jax.random.PRNGKey(seed), 3)
    s = {name: jnp.asarray(v) for name, v in samples.items()}
    p = {prm.name: s[prm.name][:, None] for prm in law.params}
    xs = {r: jnp.asarray(v)[None, :] for r, v in x.items()}
    log_law = jnp.log(law.fn(xs, p))  # [S, n]
    log_true = log_law
    if distance is not None and k > 0:
        z = jax.random.normal(key_z, log_law.shape)
        log_true = log_law + k * jnp.asarray(distance)[None, :] * z
    sigma = s["sigma"][:, None]
    noise = (dist.StudentT(s["nu"][:, None], 0.0, sigma) if likelihood == "studentt"
             else dist.Normal(0.0, sigma))
    log_obs = log_true + noise.expand(log_law.shape).sample(key_noise)  # draw s: its sigma
    res = {"loss": np.exp(np.asarray(log_obs)), "loss_law": np.exp(np.asarray(log_law))}
    if link is not None:
        link_p = {name: s[name][:, None, :] for name in s if name.startswith("acc_")}
        acc_law = link.accuracy(jnp.exp(log_law), link_p)  # [S, n, T]
        acc_true = link.accuracy(jnp.exp(log_true), link_p)
        acc_obs = acc_true + link_p["acc_sigma"] * jax.random.normal(key_acc, acc_true.shape)
        for i, t in enumerate(link.tasks):
            res[f"acc.{t}"] = np.asarray(acc_obs[..., i])
            res[f"acc_law.{t}"] = np.asarray(acc_law[..., i])
    return res


# ---------------------------------------------------------------- diagnostics

@dataclasses.dataclass(frozen=True)
class Diagnostics:
    """Each check with its value, threshold and verdict; ``ok`` only if all pass."""

    checks: dict[str, dict]

    @property
    def ok(self) -> bool:
        return all(c["pass"] for c in self.checks.values())

    def failures(self) -> list[str]:
        return [f"{name}: {c['value']:.4g} (needs {c['rule']}; worst: {c.get('where', '-')})"
                for name, c in self.checks.items() if not c["pass"]]


def diagnose(idata: az.InferenceData, var_names: Sequence[str], *, max_rhat: float = 1.01,
             min_ess: float = 400, min_bfmi: float = 0.3) -> Diagnostics:
    """R-hat, bulk/tail ESS, divergences and BFMI from ArviZ, each checked."""
    rhat = az.rhat(idata, var_names=list(var_names))
    ess_bulk = az.ess(idata, var_names=list(var_names), method="bulk")
    ess_tail = az.ess(idata, var_names=list(var_names), method="tail")

    def worst(ds, fn):
        vals = {v: float(fn(ds[v].values)) for v in ds.data_vars}
        name = (max if fn is np.max else min)(vals, key=vals.get)
        return vals[name], name

    r, r_at = worst(rhat, np.max)
    eb, eb_at = worst(ess_bulk, np.min)
    et, et_at = worst(ess_tail, np.min)
    div = int(idata.sample_stats["diverging"].values.sum())
    bfmi = float(np.min(az.bfmi(idata)))
    return Diagnostics({
        "r_hat": {"value": r, "rule": f"<= {max_rhat}", "pass": bool(r <= max_rhat),
                  "where": r_at},
        "ess_bulk": {"value": eb, "rule": f">= {min_ess}", "pass": bool(eb >= min_ess),
                     "where": eb_at},
        "ess_tail": {"value": et, "rule": f">= {min_ess}", "pass": bool(et >= min_ess),
                     "where": et_at},
        "divergences": {"value": div, "rule": "== 0", "pass": div == 0},
        "bfmi": {"value": bfmi, "rule": f">= {min_bfmi}", "pass": bool(bfmi >= min_bfmi)},
    })
