"""Sampling a law's posterior with NUTS (dispersed starts near the point fit), and the
posterior predictive written out vectorised over draws."""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions.transforms import biject_to
from numpyro.infer import MCMC, NUTS, init_to_uniform

from datalaws.fit.fold_sampler import FoldDraws, run_folds
from datalaws.fit.laws import Law
from datalaws.fit.link_drift import drift_sd
from datalaws.fit.model import AccuracyLink, law_model, row_noise

__all__ = ["FitConfig", "careful", "thinned", "init_near", "run_nuts", "posterior_predictive",
           "discrepancy_sd", "noise_by_row", "slow_sampling_warning"]


def discrepancy_sd(k: np.ndarray, distance: np.ndarray, draws: int) -> np.ndarray:
    """sd [draws, n] of the discrepancy: ``sqrt(sum_g (k_g d_g)^2)`` per draw and point.

    ``k``: scalar, [S] or [S, G]; ``distance``: [n] or [n, G] (one column per axis group).
    """
    k = np.atleast_1d(np.asarray(k, dtype=np.float64))
    d = np.asarray(distance, dtype=np.float64)
    d = d[:, None] if d.ndim == 1 else d
    k = k[:, None] if k.ndim == 1 else k
    k = np.resize(k, (draws, k.shape[1])) if k.shape[0] != draws else k
    if k.shape[1] != d.shape[1]:  # one k for every group: the Euclidean distance
        k, d = k[:, :1], np.linalg.norm(d, axis=1, keepdims=True)
    return np.sqrt((k ** 2) @ (d ** 2).T)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FitConfig:
    """How to sample a posterior."""

    chains: int = 4  # independent NUTS chains (diagnostics need >= 2)
    warmup: int = 500  # adaptation steps per chain
    draws: int = 1000  # kept draws per chain
    seed: int = 0
    likelihood: str = "studentt"  # "studentt" or "normal", on log loss
    target_accept: float = 0.95  # 0.9 left a stray divergence on some quality-law fits
    progress: bool = True

    def __post_init__(self):
        if self.likelihood not in ("studentt", "normal"):
            raise ValueError(f"FitConfig.likelihood={self.likelihood!r}; use studentt|normal")
        for f in ("chains", "warmup", "draws"):
            if getattr(self, f) < 1:
                raise ValueError(f"FitConfig.{f}={getattr(self, f)} must be >= 1")


RETRY_TARGET_ACCEPT = 0.99


def careful(config: FitConfig) -> FitConfig:
    """The sampler a fit whose diagnostics failed is rerun with, as one would by hand:
    smaller steps (target acceptance 0.99) against divergences, and twice the warmup and the
    draws against a high R-hat or a low ESS. Both at once, because each fix alone provoked
    the other failure on RegMix Pile-CC (K = 3; one weakly identified exponent coefficient
    with a long tail): 0.95 with 1000 + 2000 draws had R-hat 1.004 but 2 divergences in
    that tail, 0.99 with 1000 + 1000 no divergence but R-hat 1.017 (smaller steps explore
    the tail more slowly); 0.99 with 1000 + 2000 passed (R-hat 1.004, ESS 820). On the
    3-size mixing sweep (bench/mixing.py sim_sizes) the first run's single divergence sat
    in the e_mid-a-alpha ridge's tail, which it had under-sampled (e_mid's 1% quantile 2.37;
    2.29 at 0.99)."""
    return dataclasses.replace(config, target_accept=max(config.target_accept,
                                                         RETRY_TARGET_ACCEPT),
                               warmup=2 * config.warmup, draws=2 * config.draws)


def thinned(config: FitConfig, again: FitConfig) -> slice:
    """The draws of a rerun with ``again`` (longer chains) that keep one every so many, so
    that it has ``config``'s number of draws and stitches draw by draw with the others."""
    thin = max(again.draws // config.draws, 1)
    return slice(None, thin * config.draws, thin)


def init_near(site=None, values: Mapping[str, np.ndarray] | None = None, scale: float = 0.25):
    """Start each chain at ``values`` (a point fit) moved by ``scale`` * N(0, 1) on the
    unconstrained scale, a different move per chain: dispersed starts let R-hat see chains
    that settle in different modes. Sites without a value start uniformly in (-2, 2)."""
    if site is None:
        return functools.partial(init_near, values=values or {}, scale=scale)
    if site["type"] != "sample" or site["is_observed"] or site["name"] not in values:
        return init_to_uniform(site)
    t = biject_to(site["fn"].support)
    u = t.inv(jnp.broadcast_to(jnp.asarray(values[site["name"]], jnp.float32),
                               site["fn"].shape()))
    key = site["kwargs"].get("rng_key")
    sample_shape = site["kwargs"].get("sample_shape", ())
    return t(u + scale * jax.random.normal(key, sample_shape + u.shape))


ADAPT_MAX_PARAMS = 100  # beyond: a fixed Laplace mass, not one adapted in warmup windows
SLOW_STEPS = 512  # mean leapfrog steps per warmup draw past which a fit is called slow


def slow_sampling_warning(law: Law, steps: float) -> str:
    """What to tell the user when the first half of warmup took ``steps`` leapfrog steps
    per draw on average (NUTS's maximum is 1023), and, for a per-domain mixing law over
    several evaluation domains, what to do instead.

    Measured on RegMix's 13 validation losses (1M models, 512 mixtures, ``mixing_domains``
    with K = 1, 277 parameters) sampled jointly: every draw took the maximum 1023 leapfrog
    steps, more than an hour in all. Each domain wants its own step size and trajectory
    length, and a joint sampler has one of each for all; rows of one domain each, without
    size terms, are now sampled one domain at a time (``datalaws.fit.blocks``: 13 domains in
    minutes). Rows of a known composition, or size terms, still couple the domains, and
    this warning is what remains for them. Simulated sweeps of as many parameters sample in
    under 128 steps (tests/fit/test_mixing.py), so only a measured pace triggers this."""
    msg = (f"NUTS is taking {steps:.0f} leapfrog steps per draw (at most 1023) on "
           f"{law.name}'s {unconstrained_size(law)} parameters: this fit will be slow")
    evals = getattr(law, "evals", ())
    if len(evals) >= 2:
        msg += (f". Its {len(evals)} evaluation domains share one step size here (rows of "
                "a known composition, or size terms, couple them); per-domain rows at one "
                "size are sampled one domain at a time, in minutes: fit the loss.<domain> "
                "columns at one size if you can")
    return msg


def laplace_inverse_mass(model, init_values, x, y, *, floor: float = 1.0,
                         chunk: int = 8) -> np.ndarray:
    """A dense inverse mass matrix from a Laplace approximation: the inverse Hessian of the
    potential (negative log posterior, unconstrained scale, numpyro's ``ravel_pytree`` order
    of the sites) at ``init_values``. Curvatures below ``floor`` (flat, or negative: the
    point fit is not the posterior's mode) are raised to it, so no direction is wider than
    numpyro's identity start. (At a mode found by L-BFGS on the potential instead, warmup
    was slower on the 20 x 20 sweep: the chains start at the point fit, and its curvature
    is what they meet first.) The Hessian is built from Hessian-vector products ``chunk``
    at a time: memory of ``chunk`` gradients, whatever the number of parameters."""
    from jax.flatten_util import ravel_pytree
    from numpyro.infer import init_to_value
    from numpyro.infer.util import initialize_model

    info, potential, _, _ = initialize_model(
        jax.random.PRNGKey(0), model, init_strategy=init_to_value(values=init_values),
        model_args=(x,), model_kwargs={"y": y})
    at, unravel = ravel_pytree(info.z)
    grad = jax.grad(lambda u: potential(unravel(u)))

    def hvp(v):
        return jax.jvp(grad, (at,), (v,))[1]

    H = np.asarray(jax.lax.map(hvp, jnp.eye(at.size, dtype=at.dtype), batch_size=chunk),
                   np.float64)
    lam, V = np.linalg.eigh(0.5 * (H + H.T))
    return (V / np.maximum(lam, floor)) @ V.T


def param_sizes(law: Law) -> list[int]:
    """Elements of each parameter (1 for a scalar; vector parameters hold many)."""
    return [int(np.prod(p.prior.event_shape)) for p in law.params]


def unconstrained_size(law: Law) -> int:
    """Elements of the law's parameters (each a scalar or a vector site)."""
    return sum(param_sizes(law))


def _mass_options(law: Law, model, init_values, x, y, *, link) -> dict:
    """NUTS's mass-matrix options: numpyro's defaults (identity start, dense, adapted) up
    to ``ADAPT_MAX_PARAMS`` parameters; beyond, a fixed Laplace mass (``laplace_inverse_mass``;
    ``run_nuts`` rescales it halfway through warmup, ``_laplace_rescaled``).

    Why: a dense mass is estimated per adaptation window, and 500 warmup steps end with a
    window of 200 draws: a covariance of P > 100 dimensions from 200 correlated draws is
    mostly noise (a 420-effect mixing law then took the maximum 1023 leapfrog steps every
    iteration, before adaptation with the identity start and after it with the estimate). A
    diagonal mass does not help there: the effects of one evaluation domain are correlated
    through the simplex (proportions sum to 1). The Laplace mass at the point fit took ~100
    steps per draw on the 20 x 20 sweep (measured, bench/mixing.py sim20). Joint accuracy
    links keep the defaults, and so do backtest folds (``fit/fold_sampler.py``)."""
    if link is not None or unconstrained_size(law) <= ADAPT_MAX_PARAMS:
        return {}
    at = {k: np.asarray(v, float) for k, v in init_values.items()}
    xj = {k: jnp.asarray(v) for k, v in x.items()}
    # the noise the point fit leaves (robust sd of its log residuals), not the sampler's
    # start of 0.02: every law parameter's curvature scales with 1 / sigma^2
    resid = np.log(y) - np.log(np.asarray(law.fn(xj, {k: jnp.asarray(v) for k, v in at.items()})))
    at["sigma"] = np.broadcast_to(max(1.4826 * np.median(np.abs(resid - np.median(resid))),
                                      1e-4), init_values["sigma"].shape)
    return {"inverse_mass_matrix": laplace_inverse_mass(model, at, xj, jnp.asarray(y)),
            "adapt_mass_matrix": False}


def _laplace_rescaled(model, mass: dict, init_values, disperse: float, config: FitConfig,
                      chain_method: str, args, kwargs):
    """First half of warmup with the fixed Laplace mass, then the mass that keeps Laplace's
    correlations but takes each direction's variance from the pooled warmup draws of all
    chains (second half of that stage): (key, chains' unconstrained states, mass options,
    mean leapfrog steps per draw of that stage).

    Why: the curvature at the point fit misjudges directions whose posterior is skewed or
    bounded (one domain's curvature kappa of the 20 x 20 sweep has a long tail towards 0,
    logit sd 1.0 in the draws), and a fixed mass never learns it: R-hat 1.018 and a tail ESS
    of 33 there with Laplace's mass throughout, R-hat 1.005 and tail ESS >= 2000 rescaled
    (bench/mixing.py sim20). P variances from 4 x 125 draws are well determined where a
    dense P x P covariance (P ~ 480) is not. The warmup's length is unchanged."""
    from numpyro.infer.util import get_transforms, transform_fn

    key, sub = jax.random.split(jax.random.PRNGKey(config.seed))
    kernel = NUTS(model, init_strategy=init_near(values=init_values, scale=disperse),
                  target_accept_prob=config.target_accept, dense_mass=True, **mass)
    first = MCMC(kernel, num_warmup=config.warmup // 2, num_samples=1,  # warmup only
                 num_chains=config.chains, chain_method=chain_method,
                 progress_bar=config.progress and chain_method != "parallel")
    first.warmup(sub, *args, collect_warmup=True, extra_fields=("num_steps",), **kwargs)
    steps = float(np.mean(first.get_extra_fields()["num_steps"]))
    # the latent sites (no deterministic ones), constrained; the mass is unconstrained
    draws = {k: v for k, v in first.get_samples(group_by_chain=True).items()
             if k in first.last_state.z}
    one = jax.tree_util.tree_map(lambda v: v[0, 0], draws)
    u = transform_fn(get_transforms(model, args, kwargs, one), draws, invert=True)
    # numpyro's ravel order (ravel_pytree of the sites: sorted names, C order)
    flat = np.concatenate([np.reshape(u[k], u[k].shape[:2] + (-1,)) for k in sorted(u)],
                          axis=-1)  # [chains, draws, P]
    laplace = np.asarray(mass["inverse_mass_matrix"], np.float64)
    assert flat.shape[-1] == len(laplace), (flat.shape, laplace.shape)
    half = np.asarray(flat[:, flat.shape[1] // 2:], np.float64)
    n = half.shape[0] * half.shape[1]
    var = ((half - half.mean(axis=1, keepdims=True)) ** 2).sum(axis=(0, 1)) / (n - len(half))
    sd_l = np.sqrt(np.diag(laplace))
    sd = np.sqrt((n * var + 10 * sd_l ** 2) / (n + 10))  # 10 pseudo-draws of Laplace's
    inv_mass = laplace / np.outer(sd_l, sd_l) * np.outer(sd, sd)
    return key, first.last_state.z, mass | {"inverse_mass_matrix": inv_mass}, steps


def _start(law: Law, init: Mapping | None, shape: tuple, config: FitConfig) -> dict:
    """Chains' start values with a leading ``shape`` (a fold axis), noise included; vector
    parameters (the mixing laws') keep their own trailing shape."""
    values = {n: np.broadcast_to(np.asarray(v, float), shape + np.shape(v))
              for n, v in (init or {}).items()}
    groups = (len(law.noise_groups),) if law.noise_groups else ()  # one per noise group
    values.setdefault("sigma", np.full(shape + groups, 0.02))
    if config.likelihood == "studentt":
        values.setdefault("nu", np.full(shape + groups, 10.0))
    return values


def run_nuts(law: Law, x: Mapping[str, np.ndarray], y: np.ndarray, config: FitConfig, *,
             link: AccuracyLink | None = None, acc: np.ndarray | None = None,
             init: Mapping[str, float] | None = None, mask: np.ndarray | None = None,
             noise: Mapping[str, dist.Distribution] | None = None, disperse: float = 0.1
             ) -> MCMC | FoldDraws:
    """Sample the posterior with NUTS, chains on separate host devices when there are enough.

    Chains start near ``init`` (the point fit), each moved by ``disperse`` on the
    unconstrained scale (``init_near``). ``mask`` [n] keeps rows out of the likelihood;
    [folds, n] samples each fold (backtests) by its own NUTS (``fit/fold_sampler.py``).
    """
    chain_method = "parallel" if jax.local_device_count() >= config.chains else "vectorized"
    if unconstrained_size(law) > ADAPT_MAX_PARAMS:
        # measured on the 20 x 20 sweep: parallel (pmap) chains' memory grew through
        # sampling past 4.6 GB; vectorised chains' stayed flat
        chain_method = "vectorized"
    if mask is not None and np.ndim(mask) == 2:  # backtest folds: each its own NUTS
        start = init_near(values=_start(law, init, (1, 1), config), scale=disperse)
        return run_folds(law, x, y, config, mask=mask, init_strategy=start, noise=noise,
                         parallel=chain_method == "parallel")
    init_values = _start(law, init, (), config)
    # law, likelihood and link are static: bind them, so only arrays are traced model args
    model = functools.partial(law_model, law=law, likelihood=config.likelihood, link=link,
                              noise=noise)
    mass = _mass_options(law, model, init_values, x, y, link=link)
    t0 = time.perf_counter()
    if config.progress:
        where = jax.default_backend()  # a GPU slows these small models ~4x (datalaws/cli.py)
        print(f"sampling {law.name}: {config.chains} chains ({chain_method}, {where}) x "
              f"{config.warmup}+{config.draws} draws on {len(y)} runs ..."
              + ("" if where == "cpu" else " (JAX_PLATFORMS=cpu samples faster)"), flush=True)
    args = ({k: jnp.asarray(v) for k, v in x.items()},)
    kwargs = {"y": jnp.asarray(y), "acc": None if acc is None else jnp.asarray(acc),
              "mask": None if mask is None else jnp.asarray(mask)}
    key, warm = jax.random.PRNGKey(config.seed), config.warmup
    init_params = None
    if mass and config.warmup >= 100:  # a fixed mass: first half of warmup measures its scales
        key, init_params, mass, steps = _laplace_rescaled(model, mass, init_values, disperse,
                                                          config, chain_method, args, kwargs)
        if steps > SLOW_STEPS:  # said now, not after the hour it may take
            warnings.warn(slow_sampling_warning(law, steps), stacklevel=3)
        warm = config.warmup - config.warmup // 2
    kernel = NUTS(model, init_strategy=init_near(values=init_values, scale=disperse),
                  target_accept_prob=config.target_accept, dense_mass=True, **mass)
    mcmc = MCMC(kernel, num_warmup=warm, num_samples=config.draws,
                num_chains=config.chains, chain_method=chain_method,
                progress_bar=config.progress and chain_method != "parallel")
    mcmc.run(key, *args, extra_fields=("diverging", "energy", "num_steps"),
             init_params=init_params, **kwargs)
    jax.block_until_ready(mcmc.get_samples())  # dispatch is async: time the real work
    if config.progress:
        print(f"sampled in {time.perf_counter() - t0:.1f} s", flush=True)
    return mcmc


def posterior_predictive(law: Law, samples: Mapping[str, np.ndarray],
                         x: Mapping[str, np.ndarray], *, likelihood: str,
                         link: AccuracyLink | None = None,
                         distance: np.ndarray | None = None, k: float | np.ndarray = 0.0,
                         link_drift: dict | None = None, seed: int | tuple[int, ...] = 1,
                         block: int = 500) -> dict[str, np.ndarray]:
    """Draws [samples, n] of ``loss`` (a new observed run), ``loss_law`` and accuracies.

    ``k`` is the discrepancy scale: one value, one per posterior draw [S], or one per draw
    and axis group [S, G] with ``distance`` then the offsets [n, G] from the fitted hull.
    ``link_drift``: the accuracy link's drift below the fitted losses
    (``datalaws.fit.link_drift``), widening the accuracies; accuracies are clipped to [0, 1].

    The same generative story as ``law_model`` with ``y=None``, written out vectorised over
    draws (``Predictive`` re-traces the model per call, which costs seconds in backtests),
    ``block`` draws at a time: every temporary is [block, n], not [S, n] (the Student-t
    noise alone took 1.2 GB for 4000 draws x 2000 rows of the 20 x 20 mixing sweep). The
    noise comes from NumPy's generator (seeded per block): ``jax.random`` compiled its
    gamma and normal samplers anew for every shape of rows (5.8 s of a 43 s Chinchilla fit
    with backtests, profiled).
    """
    S = len(next(iter(samples.values())))
    k = np.asarray(k, dtype=np.float64)
    if k.ndim and k.shape[0] != S:  # fewer k draws than posterior draws: recycled in order
        k = np.resize(k, (S,) + k.shape[1:])
    xs = {r: jnp.asarray(v)[None, :] for r, v in x.items()}
    drift = None
    if link is not None and link_drift:
        kd = np.asarray(link_drift["k_draws"], np.float64)
        drift = (np.resize(kd, (S, kd.shape[1])), float(link_drift["loss_min"]))
    parts = [_predictive_block(law, {n: v[a:a + block] for n, v in samples.items()}, xs,
                               likelihood, link, distance, k[a:a + block] if k.ndim else k,
                               np.random.default_rng([*np.atleast_1d(seed), a // block]),
                               None if drift is None else (drift[0][a:a + block], drift[1]))
             for a in range(0, S, block)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def noise_by_row(law: Law, xs, value) -> np.ndarray:
    """[S, n] (or [S, 1]) of a noise parameter drawn [S] or, per noise group, [S, G]
    (``xs``: the inputs [1, n]; read only for groups)."""
    value = jnp.asarray(value)
    if value.ndim == 2:  # per group: each row its group's (Law.noise_groups)
        return np.asarray(row_noise(law, xs, value[:, None, :]), np.float64)
    return np.asarray(value, np.float64)[:, None]


def _predictive_block(law: Law, samples, xs, likelihood: str, link, distance, k,
                      rng: np.random.Generator, drift=None) -> dict[str, np.ndarray]:
    """``posterior_predictive`` for one block of draws."""
    s = {name: jnp.asarray(v) for name, v in samples.items()}
    p = {prm.name: s[prm.name][:, None] for prm in law.params}
    log_law = np.asarray(jnp.log(law.fn(xs, p)), np.float64)  # [S, n]
    log_true = log_law
    if distance is not None and np.any(k > 0):
        sd = discrepancy_sd(k, np.asarray(distance, dtype=np.float64), log_law.shape[0])
        log_true = log_law + sd * rng.standard_normal(log_law.shape)
    sigma = noise_by_row(law, xs, s["sigma"])
    unit = (rng.standard_t(noise_by_row(law, xs, s["nu"]), log_law.shape)
            if likelihood == "studentt" else rng.standard_normal(log_law.shape))
    log_obs = log_true + sigma * unit  # draw s: its sigma (and nu)
    res = {"loss": np.exp(log_obs), "loss_law": np.exp(log_law)}
    if link is not None:
        link_p = {name: s[name][:, None, :] for name in s if name.startswith("acc_")}
        acc_law = np.asarray(link.accuracy(jnp.exp(log_law), link_p))  # [S, n, T]
        acc_true = np.asarray(link.accuracy(jnp.exp(log_true), link_p), np.float64)
        noise_sd = np.asarray(link_p["acc_sigma"], np.float64)
        if drift is not None:  # below the fitted losses the link itself drifts
            noise_sd = np.sqrt(noise_sd ** 2 + drift_sd(drift[0], drift[1], log_true) ** 2)
        acc_obs = np.clip(acc_true + noise_sd * rng.standard_normal(acc_true.shape), 0.0, 1.0)
        for i, t in enumerate(link.tasks):
            res[f"acc.{t}"] = acc_obs[..., i]
            res[f"acc_law.{t}"] = acc_law[..., i]
    return res
