"""Fitting the mixing laws: checked tables, size terms only where the table varies size,
K for the implicit form by cross-validation, and the least-squares baseline as a fit.

``prepare_table`` is what ``datalaws.fit.api.fit`` calls for every mixing law before the law
is built; ``point_result`` turns the Huber least-squares point fit (the paper's method) into
a ``FitResult`` that ``predict``, ``plan`` and ``best_mixture`` read like a posterior: every
draw is the point fit, and the noise is the robust spread of its log residuals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import arviz as az
import jax.numpy as jnp
import numpy as np
import pandas as pd

from datalaws.fit.infer import point_fit
from datalaws.fit.laws import Law, get_law
from datalaws.fit.mixing import check_eval_weights, check_mixtures
from datalaws.fit.table import TableError, law_data, split_holdout

__all__ = ["prepare_table", "varying_sizes", "choose_latent", "point_result", "POINT_DRAWS"]

POINT_DRAWS = 1000  # copies of the point fit in a point result's "posterior"
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
    return df, law_name, sizes


def _cv_error(law: Law, x: Mapping[str, np.ndarray], y: np.ndarray, groups: np.ndarray,
              folds: int, seed: int) -> float:
    """Mean |error| of held-out mixtures over ``folds`` folds of the Huber point fit."""
    rng = np.random.default_rng(seed)
    uniq = np.unique(groups)
    assign = dict(zip(uniq, rng.permutation(len(uniq)) % folds))
    fold = np.array([assign[g] for g in groups])
    errs = []
    for f in range(folds):
        test = fold == f
        p = point_fit(law, {r: v[~test] for r, v in x.items()}, y[~test], starts=4)
        mu = np.asarray(law.fn({r: jnp.asarray(v[test]) for r, v in x.items()}, p))
        errs.append(np.abs(mu - y[test]))
    return float(np.mean(np.concatenate(errs)))


def choose_latent(df: pd.DataFrame, domains: Sequence[str], *, sizes: Sequence[str] = (),
                  columns: Mapping[str, str] | None = None, candidates: Sequence[int] = (1, 2, 3),
                  folds: int = 5, seed: int = 0) -> tuple[int, dict[int, float]]:
    """K for the implicit law: the smallest K whose cross-validated error (mixtures held out
    in ``folds`` folds, Huber point fits) is within 2% of the best. Returns (K, errors)."""
    from datalaws.fit.api import _scales

    errors = {}
    for k in candidates:
        law = get_law(f"mixing_implicit{k}", domains=domains, sizes=sizes)
        data = law_data(df, law.inputs, columns=columns, nonneg=law.unscaled)
        x = data.normalised(_scales(data, law))
        if len(data.y) < 2 * (len(domains) + 1) * k:
            break  # too few rows for this many latent domains
        groups = np.unique(np.round(np.stack([x[f"r.{d}"] for d in domains], 1), 9),
                           axis=0, return_inverse=True)[1].ravel()
        errors[k] = _cv_error(law, x, data.y, groups, folds, seed)
    if not errors:
        raise TableError(f"too few rows ({len(df)}) for the implicit mixing law over "
                         f"{len(domains)} domains")
    best = min(errors.values())
    return min(k for k, e in errors.items() if e <= 1.02 * best), errors


def point_result(law: Law, df: pd.DataFrame, train_df: pd.DataFrame, held_df: pd.DataFrame,
                 holdout: str | None, data, scales: Mapping[str, float], x, point: dict,
                 config, columns: Mapping[str, str] | None):
    """A ``FitResult`` holding the Huber least-squares point fit (``--method point``)."""
    from datalaws.fit import api
    from datalaws.fit.diagnostics import Diagnostics

    mu = np.asarray(law.fn({r: jnp.asarray(v) for r, v in x.items()}, point))
    resid = np.log(data.y) - np.log(mu)
    sigma = max(1.4826 * float(np.median(np.abs(resid - np.median(resid)))), 1e-6)
    post = {n: np.broadcast_to(np.asarray(v, float), (1, POINT_DRAWS) + np.shape(v)).copy()
            for n, v in point.items()}
    post["sigma"] = np.full((1, POINT_DRAWS), sigma)
    idata = az.from_dict(posterior=post)
    diag = Diagnostics({})  # nothing sampled: nothing to diagnose
    cfg = type(config)(**{**config.__dict__, "likelihood": "normal"})
    summary = api._summary(law, df, train_df, held_df, holdout, data, dict(scales), cfg, diag,
                           {}, {})
    summary |= {"method": "point", "timings": {}, "accuracy": None,
                "point_method": "Huber(1e-3) on log loss, L-BFGS from random starts; "
                                "intervals from the residual spread only (no parameter "
                                "uncertainty)"}
    result = api.FitResult(law=law, idata=idata, summary=summary, point=point)
    flat = {}
    for n, v in point.items():  # one row per element, named as ArviZ names them
        vals = np.ravel(v)
        flat |= ({n: float(vals[0])} if np.ndim(v) == 0 else
                 {f"{n}[{k}]": float(e) for k, e in enumerate(vals)})
    summary["params"] = {n: {"mean": v, "q05": v, "q50": v, "q95": v} for n, v in flat.items()}
    summary["params"]["sigma"] = {"mean": sigma, "q05": sigma, "q50": sigma, "q95": sigma}
    summary["derived"] = api._derived_table(result)
    summary["discrepancy"] = api._discrepancy(law, data, x, cfg, point, {}, "none")
    if len(held_df):
        summary["holdout"] = api._holdout_metrics(result, held_df, columns)
    return result
