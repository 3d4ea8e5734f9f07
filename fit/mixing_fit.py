"""Fitting the mixing laws: checked tables, size terms only where the table varies size,
and the number of latent terms by cross-validation over mixtures: K latent domains for the
implicit form, K latent terms per evaluation domain for the per-domain law.

``prepare_table`` is what ``datalaws.fit.api.fit`` calls for every mixing law before the law
is built. (The least-squares baseline as a fit, ``--method point``, is
``datalaws.fit.pointfit``.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax.numpy as jnp
import numpy as np
import pandas as pd

from datalaws.fit.infer import point_fit
from datalaws.fit.laws import Law, get_law
from datalaws.fit.mixing import check_eval_weights, check_mixtures, mixing_domains_law
from datalaws.fit.table import TableError, law_data, split_holdout

__all__ = ["prepare_table", "varying_sizes", "choose_latent", "choose_domain_latent"]

_SIZE_COLUMNS = {"N": "params", "D": "tokens"}


def varying_sizes(df: pd.DataFrame, columns: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The size inputs (N, D) whose column exists and takes more than one value in ``df``:
    only those get terms, since one value cannot identify a size exponent."""
    columns = dict(columns or {})
    out = []
    for role, default in _SIZE_COLUMNS.items():
        col = columns.get(role, default)
        if col in df.columns and pd.to_numeric(df[col], errors="coerce").nunique() > 1:
            out.append(role)
    return tuple(out)


def prepare_table(df: pd.DataFrame, law_name: str, domains: Sequence[str], *,
                  columns: Mapping[str, str] | None = None, holdout: str | None = None
                  ) -> tuple[pd.DataFrame, str, tuple[str, ...]]:
    """Check a mixing table (proportions, evaluation weights), renormalise proportions that
    sum to 1 within rounding, and settle the law: its size inputs (those the training rows
    vary) and, for plain ``mixing_implicit``, the number of latent domains.

    Returns ``(table, law name, sizes)``.
    """
    df = check_mixtures(df, domains, where="the table")
    evals = sorted(c[5:] for c in df.columns if c.startswith("eval."))
    if evals:
        check_eval_weights(df, evals, where="the table")
    train, _ = split_holdout(df, holdout)
    sizes = varying_sizes(train, columns)
    if law_name == "mixing_implicit":
        k, _ = choose_latent(train, domains, sizes=sizes, columns=columns)
        law_name = f"mixing_implicit{k}"
    elif law_name == "mixing_domains" and not sizes:
        k, _ = choose_domain_latent(train, domains)
        law_name = "mixing_domains" + ("" if k == 1 else str(k))
    return df, law_name, sizes


def choose_domain_latent(df: pd.DataFrame, domains: Sequence[str], *,
                         candidates: Sequence[int] = (1, 2, 3), folds: int = 3, seed: int = 0
                         ) -> tuple[int, dict[int, float]]:
    """K latent terms per evaluation domain for the one-size per-domain law: the smallest K
    whose cross-validated error over every ``loss.<domain>`` (mixtures held out) is within
    one standard error of the best (``_pick``). Each fold is one joint least-squares fit
    over all domains (one compilation, not one per domain). A table of ``eval.<domain>``
    compositions (no per-domain losses) keeps K = 1, the paper's law. Returns (K, errors)."""
    losses = sorted(c for c in df.columns if c.startswith("loss."))
    if not losses or any(c.startswith("eval.") for c in df.columns):
        return 1, {}
    evals = [c[5:] for c in losses]
    mix = [f"mix.{d}" for d in domains]
    rows = pd.concat([df[mix].assign(loss=df[c], **{f"eval.{e}": float(e == c[5:])
                                                     for e in evals}) for c in losses],
                     ignore_index=True).dropna(subset=["loss"])
    errors: dict[int, float] = {}
    ses: dict[int, float] = {}
    for k in candidates:
        if len(df) < 2 * (len(domains) + 1) * k:
            break  # too few mixtures for this many latent terms
        # linear-effect coordinates, where least squares searches best (mixing_ls)
        law = mixing_domains_law(domains, evals, sizes=(), latent=k, t_coords=False)
        data = law_data(rows, law.inputs, nonneg=law.unscaled)
        x = {r: np.asarray(v, float) for r, v in data.inputs.items()}
        groups = np.unique(np.round(rows[mix].to_numpy(float), 9), axis=0,
                           return_inverse=True)[1].ravel()
        # a held-out error needs no optimum to the last digit: 500 polishing steps
        errors[k], ses[k] = _cv_error(law, x, data.y, groups, folds, seed, starts=2,
                                      split=False, polish_steps=500)
    if not errors:
        return 1, errors
    return _pick(errors, ses), errors


def _pick(errors: Mapping[int, float], ses: Mapping[int, float]) -> int:
    """The smallest K within one standard error (or 2%) of the best cross-validated error:
    the one-standard-error rule (Hastie, Tibshirani & Friedman, sec. 7.10). Extra latent
    terms that buy less than the error's own noise are weakly identified curvatures, which
    is what made RegMix's K = 3 fit's chains disagree (R-hat 1.03)."""
    best = min(errors, key=errors.get)
    tol = max(ses[best], 0.02 * errors[best])
    return min(k for k, e in errors.items() if e <= errors[best] + tol)


def _cv_error(law: Law, x: Mapping[str, np.ndarray], y: np.ndarray, groups: np.ndarray,
              folds: int, seed: int, starts: int = 4, split: bool = True,
              polish_steps: int = 20000) -> tuple[float, float]:
    """Mean |error| of held-out mixtures over ``folds`` folds of the Huber point fit, and
    its standard error (over mixtures: one mixture's losses share its errors)."""
    rng = np.random.default_rng(seed)
    uniq = np.unique(groups)
    assign = dict(zip(uniq, rng.permutation(len(uniq)) % folds))
    fold = np.array([assign[g] for g in groups])
    errs = np.zeros(len(y))
    for f in range(folds):
        test = fold == f
        p = point_fit(law, {r: v[~test] for r, v in x.items()}, y[~test], starts=starts,
                      split=split, polish_steps=polish_steps)
        mu = np.asarray(law.fn({r: jnp.asarray(v[test]) for r, v in x.items()}, p))
        errs[test] = np.abs(mu - y[test])
    per_mixture = pd.Series(errs).groupby(groups).mean().to_numpy()
    return float(np.mean(errs)), float(np.std(per_mixture, ddof=1) / np.sqrt(len(uniq)))


def choose_latent(df: pd.DataFrame, domains: Sequence[str], *, sizes: Sequence[str] = (),
                  columns: Mapping[str, str] | None = None, candidates: Sequence[int] = (1, 2, 3),
                  folds: int = 5, seed: int = 0) -> tuple[int, dict[int, float]]:
    """K for the implicit law: the smallest K whose cross-validated error (mixtures held out
    in ``folds`` folds, Huber point fits) is within one standard error of the best
    (``_pick``). Returns (K, errors)."""
    from datalaws.fit.api import _scales

    errors, ses = {}, {}
    for k in candidates:
        law = get_law(f"mixing_implicit{k}", domains=domains, sizes=sizes)
        data = law_data(df, law.inputs, columns=columns, nonneg=law.unscaled)
        x = data.normalised(_scales(data, law))
        if len(data.y) < 2 * (len(domains) + 1) * k:
            break  # too few rows for this many latent domains
        groups = np.unique(np.round(np.stack([x[f"r.{d}"] for d in domains], 1), 9),
                           axis=0, return_inverse=True)[1].ravel()
        errors[k], ses[k] = _cv_error(law, x, data.y, groups, folds, seed)
    if not errors:
        raise TableError(f"too few rows ({len(df)}) for the implicit mixing law over "
                         f"{len(domains)} domains")
    return _pick(errors, ses), errors
