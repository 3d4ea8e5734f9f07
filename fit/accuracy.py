"""Loss -> downstream accuracy, as a second stage after the loss law (the default).

Per task a sigmoid in loss between the task's chance floor and a ceiling of at most 1:

    acc = floor + (1 - floor - delta) * sigmoid(-s (L - L0)) + N(0, sigma)

The loss law is fitted first and alone, so accuracy data never moves it. The link is then
fitted on posterior draws of the law's loss at the training runs (multiple imputation: a few
draws of the loss, each with its own copy of the link in one sampler, the copies' draws
pooled), so the link's posterior carries the loss law's uncertainty. ``--accuracy joint``
keeps the older joint model (loss and links in one posterior).

Floors: ``--floors task=value`` first, else a ``chance.<task>`` column of the table, else
0.25 (four-choice chance) with a warning; unknown task names are errors.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
from numpyro.infer import MCMC, NUTS

from datalaws.fit.infer import AccuracyLink, FitConfig, posterior_predictive
from datalaws.fit.table import TableError

__all__ = ["DEFAULT_FLOOR", "MODES", "resolve_floors", "fit_link", "IMPUTATIONS",
           "accuracy_tasks", "setup_link", "add_link"]

DEFAULT_FLOOR = 0.25  # four-choice chance, used (with a warning) where no floor is known
MODES = {"sigmoid": ("sigmoid", "two-stage"), "joint": ("sigmoid", "joint"),
         "exponential": ("exponential", "joint")}
IMPUTATIONS = 4  # posterior draws of the loss the link is fitted on


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


def _link_model(loss: jnp.ndarray, *, link: AccuracyLink, acc: jnp.ndarray | None = None,
                mask: jnp.ndarray | None = None) -> None:
    """loss [imputations, n]; acc [n, tasks] (0 where missing, masked)."""
    with numpyro.plate("imputations", loss.shape[0], dim=-2):
        p = link.sample_params()  # each [imputations, tasks]
    mean = link.accuracy(loss, {k: v[:, None, :] for k, v in p.items()})  # [imp, n, tasks]
    with numpyro.handlers.mask(mask=True if mask is None else mask[None]):
        numpyro.sample("acc", dist.Normal(mean, p["acc_sigma"][:, None, :]).to_event(0),
                       obs=None if acc is None else acc[None])


def fit_link(loss_law_draws: np.ndarray, acc: np.ndarray, link: AccuracyLink,
             config: FitConfig) -> tuple[dict[str, np.ndarray], MCMC]:
    """Fit the link on ``IMPUTATIONS`` posterior draws [S, n] of the law's loss.

    Returns draws shaped [chains, draws, tasks] per link parameter (the loss posterior's
    shape, so they sit beside it in one InferenceData) and the sampler.
    """
    rng = np.random.default_rng(config.seed)
    pick = rng.choice(loss_law_draws.shape[0], IMPUTATIONS, replace=False)
    loss = jnp.asarray(loss_law_draws[pick])
    mask = ~np.isnan(acc)
    per = -(-config.draws // IMPUTATIONS)
    cfg = dataclasses.replace(config, draws=per)
    kernel = NUTS(_link_model, target_accept_prob=max(0.9, config.target_accept))
    mcmc = MCMC(kernel, num_warmup=cfg.warmup, num_samples=per, num_chains=cfg.chains,
                chain_method="vectorized", progress_bar=False)
    if config.progress:
        print(f"fitting the {link.form} link for {len(link.tasks)} task(s) on {IMPUTATIONS} "
              "posterior draws of the loss ...", flush=True)
    mcmc.run(jax.random.PRNGKey(config.seed + 1), loss, link=link,
             acc=jnp.asarray(np.where(mask, acc, 0.5)), mask=jnp.asarray(mask))
    s = mcmc.get_samples(group_by_chain=True)  # [chains, per, imputations, tasks]
    out = {}
    for k, v in s.items():
        v = np.asarray(v)
        # pool the imputations into the draw axis, then keep the loss posterior's draw count
        out[k] = v.reshape(v.shape[0], -1, v.shape[-1])[:, : config.draws]
    return out, mcmc


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


def add_link(idata, law, x, acc: np.ndarray, link: AccuracyLink, config: FitConfig) -> None:
    """Second stage: fit the link on posterior draws of the law's loss at the training runs
    and store its draws beside the loss posterior (same chains and draws)."""
    post = idata.posterior
    samples = {v: post[v].values.reshape(-1, *post[v].shape[2:]) for v in post.data_vars}
    loss_law = posterior_predictive(law, samples, x, likelihood=config.likelihood)["loss_law"]
    draws, _ = fit_link(loss_law, acc, link, config)
    chains, n_draws = post.sizes["chain"], post.sizes["draw"]
    for k, v in draws.items():
        v = np.resize(v, (chains, n_draws, v.shape[-1]))  # link chains/draws -> the loss's
        post[k] = (("chain", "draw", "task"), v)
