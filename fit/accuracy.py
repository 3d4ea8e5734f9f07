"""Loss -> downstream accuracy, as a second stage after the loss law (the default).

Per task a sigmoid in loss between the task's chance floor and a ceiling of at most 1:

    acc = floor + (1 - floor) * (1 - delta) * sigmoid(-s (L - L0)) + N(0, sigma)

The loss law is fitted first and alone, so accuracy data never moves it. The link is then
fitted on posterior draws of the law's loss at the training runs (multiple imputation: a few
draws of the loss, each with its own copy of the link in one sampler, the copies' draws
pooled), so the link's posterior carries the loss law's uncertainty. ``--accuracy joint``
keeps the older joint model (loss and links in one posterior).

Floors: ``--floors task=value`` first, else a ``chance.<task>`` column of the table, else
0.25 (four-choice chance) with a warning; unknown task names are errors.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
from numpyro.distributions import constraints
from numpyro.infer import MCMC, NUTS

from datalaws.fit.diagnostics import Diagnostics, diagnose
from datalaws.fit.infer import AccuracyLink, FitConfig, posterior_predictive
from datalaws.fit.sampling import init_near
from datalaws.fit.table import TableError

__all__ = ["DEFAULT_FLOOR", "MODES", "resolve_floors", "fit_link", "IMPUTATIONS",
           "accuracy_tasks", "setup_link", "add_link", "link_diagnostics"]

DEFAULT_FLOOR = 0.25  # four-choice chance, used (with a warning) where no floor is known
MODES = {"sigmoid": ("sigmoid", "two-stage"), "joint": ("sigmoid", "joint"),
         "exponential": ("exponential", "joint")}
IMPUTATIONS = 4  # posterior draws of the loss the link is fitted on
# the link is cheap: a long adaptation for its curved posterior and enough draws to check it
LINK_WARMUP, LINK_DRAWS, LINK_CHAINS = 1000, 1000, 4
LINK_PARAMS = {"sigmoid": ("acc_L0", "acc_k", "acc_delta", "acc_sigma"),
               "exponential": ("acc_k", "acc_gamma", "acc_sigma")}


def resolve_floors(df: pd.DataFrame, tasks: Sequence[str],
                   floors: Mapping[str, float] | None) -> tuple[list[float], dict[str, str]]:
    """Each task's floor and where it came from; bad names and values are errors."""
    floors = dict(floors or {})
    unknown = sorted(set(floors) - set(tasks))
    if unknown:
        raise TableError(f"--floors names task(s) {unknown} that have no acc.<task> column; "
                         f"the tasks are {list(tasks)}")
    out, source = [], {}
    for t in tasks:
        if t in floors:
            f, source[t] = float(floors[t]), "--floors"
        elif f"chance.{t}" in df.columns:
            vals = pd.to_numeric(df[f"chance.{t}"], errors="coerce").dropna().unique()
            if len(vals) != 1:
                raise TableError(f"column chance.{t} must hold one value (the task's chance "
                                 f"accuracy); it holds {sorted(vals)[:5]}")
            f, source[t] = float(vals[0]), f"chance.{t} column"
        else:
            f, source[t] = DEFAULT_FLOOR, "default"
        if not 0.0 <= f < 1.0:
            raise TableError(f"floor of task {t!r} is {f} ({source[t]}); need 0 <= floor < 1")
        out.append(f)
    defaulted = [t for t in tasks if source[t] == "default"]
    if defaulted:
        warnings.warn(f"no chance floor for task(s) {defaulted}: using {DEFAULT_FLOOR} "
                      "(four choices); give --floors task=value or a chance.<task> column",
                      stacklevel=3)
    for t, f in zip(tasks, out):
        acc = pd.to_numeric(df[f"acc.{t}"], errors="coerce").dropna()
        if len(acc) and (acc < f - 0.05).mean() > 0.25:
            warnings.warn(f"task {t!r}: {(acc < f - 0.05).mean():.0%} of runs score more than "
                          f"0.05 below its floor {f}; is the floor right?", stacklevel=3)
    return out, source


def _sigmoid_params(link: AccuracyLink) -> dict[str, jnp.ndarray]:
    """The sigmoid link's parameters, its midpoint L0 sampled as z = k (L0 - ref): the
    sigmoid's logit at the median observed loss. When the runs cover one side of the sigmoid
    only (small models near chance), L0 and the slope k lie on a narrow curved ridge (the
    data fix the curve where the runs are, not where its middle is), which made NUTS take
    hundreds of steps per draw and left R-hat above 1.01; z and k are nearly independent.
    The prior is the link's own (``AccuracyLink.sample_params``: L0 ~ N(ref, 1)), carried
    through the change of variables with its Jacobian |dL0/dz| = 1/k."""
    with numpyro.plate("tasks", len(link.tasks)):
        k = numpyro.sample("acc_k", dist.LogNormal(jnp.log(3.0), 1.0))
        z = numpyro.sample("acc_z", dist.ImproperUniform(constraints.real, (), ()))
        L0 = numpyro.deterministic("acc_L0", link.ref_loss + z / k)
        numpyro.factor("acc_L0_prior",
                       dist.Normal(link.ref_loss, 1.0).log_prob(L0) - jnp.log(k))
        return {"acc_L0": L0, "acc_k": k,
                "acc_delta": numpyro.sample("acc_delta", dist.Beta(1.0, 4.0)),
                "acc_sigma": numpyro.sample("acc_sigma", dist.HalfNormal(0.05))}


def _link_model(loss: jnp.ndarray, *, link: AccuracyLink, acc: jnp.ndarray | None = None,
                mask: jnp.ndarray | None = None) -> None:
    """loss [imputations, n]; acc [n, tasks] (0 where missing, masked)."""
    with numpyro.plate("imputations", loss.shape[0], dim=-2):
        # each [imputations, tasks]
        p = _sigmoid_params(link) if link.form == "sigmoid" else link.sample_params()
    mean = link.accuracy(loss, {k: v[:, None, :] for k, v in p.items()})  # [imp, n, tasks]
    with numpyro.handlers.mask(mask=True if mask is None else mask[None]):
        numpyro.sample("acc", dist.Normal(mean, p["acc_sigma"][:, None, :]).to_event(0),
                       obs=None if acc is None else acc[None])


def _starts(link: AccuracyLink) -> dict[str, float]:
    """Where the link's chains start (each moved apart by ``init_near``): the sigmoid's middle
    at the median observed loss, a moderate slope and ceiling. Not NumPyro's uniform (-2, 2)
    on the unconstrained scale, which puts L0 near 0, far below any observed loss, where the
    sigmoid is flat and chains drift apart on the ceiling."""
    if link.form == "sigmoid":
        return {"acc_z": 0.0, "acc_k": 3.0, "acc_delta": 0.2, "acc_sigma": 0.03}
    return {"acc_k": 1.0, "acc_gamma": 1.0, "acc_sigma": 0.03}


def fit_link(loss_law_draws: np.ndarray, acc: np.ndarray, link: AccuracyLink,
             config: FitConfig, shape: tuple[int, int] | None = None
             ) -> tuple[dict[str, np.ndarray], MCMC]:
    """Fit the link on ``IMPUTATIONS`` posterior draws [S, n] of the law's loss.

    The link is cheap (a few parameters per task), so it gets at least ``LINK_CHAINS`` x
    ``LINK_DRAWS`` draws after ``LINK_WARMUP`` whatever the loss fit's budget: its own
    diagnostics then rest on enough draws. Returns draws shaped [chains, draws, tasks] per
    link parameter, ``shape`` = the loss posterior's (chains, draws) (default: the config's)
    so they sit beside it in one InferenceData, taken evenly from every imputation's copy,
    and the sampler.
    """
    rng = np.random.default_rng(config.seed)
    pick = rng.choice(loss_law_draws.shape[0], IMPUTATIONS, replace=False)
    loss = jnp.asarray(loss_law_draws[pick])
    mask = ~np.isnan(acc)
    kernel = NUTS(_link_model, target_accept_prob=max(0.95, config.target_accept),
                  init_strategy=init_near(values=_starts(link), scale=0.3))
    mcmc = MCMC(kernel, num_warmup=max(config.warmup, LINK_WARMUP),
                num_samples=max(config.draws, LINK_DRAWS),
                num_chains=max(config.chains, LINK_CHAINS), chain_method="vectorized",
                progress_bar=False)
    if config.progress:
        print(f"fitting the {link.form} link for {len(link.tasks)} task(s) on {IMPUTATIONS} "
              "posterior draws of the loss ...", flush=True)
    mcmc.run(jax.random.PRNGKey(config.seed + 1), loss, link=link,
             acc=jnp.asarray(np.where(mask, acc, 0.5)), mask=jnp.asarray(mask),
             extra_fields=("diverging", "energy"))
    s = mcmc.get_samples(group_by_chain=True)  # [chains, draws, imputations, tasks]
    chains, draws = shape or (config.chains, config.draws)
    n_out = chains * draws
    order = rng.permutation(n_out)  # every output chain mixes the imputations
    out = {}
    for k, v in s.items():
        if k not in LINK_PARAMS[link.form]:
            continue  # the sampler's own coordinates (acc_z)
        v = np.moveaxis(np.asarray(v), 2, 0).reshape(-1, v.shape[-1])  # imputation-major
        keep = np.linspace(0, len(v) - 1, n_out).round().astype(int)  # even over each copy
        out[k] = v[keep][order].reshape(chains, draws, -1)
    return out, mcmc


def link_diagnostics(mcmc: MCMC) -> Diagnostics:
    """R-hat, ESS, divergences and BFMI of the link's own sampler, every imputation's copy
    of every parameter checked on its own (pooled copies are a mixture, not one chain)."""
    idata = az.from_numpyro(mcmc, log_likelihood=False)
    return diagnose(idata, [v for v in idata.posterior.data_vars if v.startswith("acc_")])


def accuracy_tasks(df: pd.DataFrame, accuracy: str | None) -> list[str]:
    """The tasks (acc.<task> columns) to link, if ``accuracy`` asks for a link."""
    if accuracy is None:
        return []
    tasks = sorted(c[4:] for c in df.columns if c.startswith("acc."))
    if not tasks:
        raise TableError(f"--accuracy {accuracy} asks for a loss->accuracy link but the "
                         "table has no acc.<task> columns")
    return tasks


def setup_link(df: pd.DataFrame, train_df: pd.DataFrame, data, accuracy: str | None,
               floors: Mapping[str, float] | None):
    """(link, observed accuracy [n, tasks], mode, floor sources) for ``--accuracy``, or
    Nones."""
    tasks = accuracy_tasks(df, accuracy)
    if not tasks:
        return None, None, None, {}
    if accuracy not in MODES:
        raise ValueError(f"accuracy={accuracy!r}; use {'|'.join(MODES)}")
    form, mode = MODES[accuracy]
    fl, source = resolve_floors(train_df, tasks, floors)
    link = AccuracyLink(tasks=tuple(tasks), floors=tuple(fl), form=form,
                        ref_loss=float(np.median(data.y)))
    return link, np.stack([data.acc[t] for t in tasks], axis=1), mode, source


def add_link(idata, law, x, acc: np.ndarray, link: AccuracyLink, config: FitConfig
             ) -> Diagnostics:
    """Second stage: fit the link on posterior draws of the law's loss at the training runs
    and store its draws beside the loss posterior (same chains and draws). Returns the
    link's own diagnostics, reported apart from the law's: a weakly identified link must
    not mark the loss fit as failed."""
    post = idata.posterior
    samples = {v: post[v].values.reshape(-1, *post[v].shape[2:]) for v in post.data_vars}
    loss_law = posterior_predictive(law, samples, x, likelihood=config.likelihood)["loss_law"]
    draws, mcmc = fit_link(loss_law, acc, link, config,
                           shape=(post.sizes["chain"], post.sizes["draw"]))
    for k, v in draws.items():  # already the loss posterior's chains x draws
        post[k] = (("chain", "draw", "task"), v)
    return link_diagnostics(mcmc)
