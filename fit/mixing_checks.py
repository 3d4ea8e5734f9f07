"""Checks of mixing tables and points: proportions in [0, 1] summing to 1, evaluation
weights non-negative summing to 1, no unknown ``mix.`` / ``eval.`` columns. One line each,
naming the rows (``datalaws.fit.mixing`` re-exports them)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from datalaws.fit.table import TableError, _column, _rows

__all__ = ["check_mixtures", "check_eval_weights", "check_unknown_mix", "MIX_TOL"]

MIX_TOL = 0.01  # |sum of proportions - 1| allowed (published weights are rounded)


def _check_sums_to_one(df: pd.DataFrame, w: np.ndarray, tol: float, what: str, why: str
                       ) -> None:
    off = np.abs(w.sum(axis=1) - 1.0) > tol
    if off.any():
        raise TableError(f"{what} of rows {_rows(df, off)} sum to {_sums(w, off)}, not 1 ({why})")


def check_mixtures(df: pd.DataFrame, domains: Sequence[str], *, tol: float = MIX_TOL,
                   where: str = "the table") -> pd.DataFrame:
    """Proportions in [0, 1] summing to 1 within ``tol``; returned renormalised to sum 1."""
    cols = [f"mix.{d}" for d in domains]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise TableError(f"{where} lacks mixture column(s) {missing}; the fit was made on "
                         f"mix.<domain> columns {cols}")
    # the table's own numeric read: non-numbers and NaN named per column
    r = np.stack([_column(df, c, "a mixture proportion", positive=False) for c in cols], 1)
    bad = (r < 0).any(axis=1) | (r > 1).any(axis=1)
    if bad.any():
        raise TableError(f"{where}: rows {_rows(df, bad)} have a mix.<domain> proportion "
                         "outside [0, 1]")
    _check_sums_to_one(df, r, tol, f"{where}: mix.<domain> proportions", f"tolerance {tol}")
    return df.assign(**dict(zip(cols, (r / r.sum(axis=1, keepdims=True)).T)))


def check_eval_weights(df: pd.DataFrame, evals: Sequence[str], *, tol: float = MIX_TOL,
                       where: str = "the points") -> None:
    """``eval.<domain>`` weights: known domains, non-negative, summing to 1 on every row."""
    given = [c for c in df.columns if c.startswith("eval.")]
    unknown = sorted(c for c in given if c[5:] not in evals)
    if unknown:
        raise TableError(f"{where}: column(s) {unknown} name no evaluation domain of the fit; "
                         f"it has {sorted(evals)}")
    if not given:
        return
    w = df[given].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(w).all(axis=1) | (w < 0).any(axis=1)
    if bad.any():
        raise TableError(f"{where}: rows {_rows(df, bad)} have a negative or missing "
                         "eval.<domain> weight")
    _check_sums_to_one(df, w, tol, f"{where}: eval.<domain> weights",
                       "they are the composition of the loss")


def check_unknown_mix(df: pd.DataFrame, domains: Sequence[str], where: str) -> None:
    unknown = sorted(c for c in df.columns if c.startswith("mix.") and c[4:] not in domains)
    if unknown:
        raise TableError(f"{where}: column(s) {unknown} name no training domain of the fit; "
                         f"it has {sorted(domains)}")


def _sums(a: np.ndarray, mask: np.ndarray) -> str:
    return ", ".join(f"{s:.4g}" for s in a[mask].sum(axis=1)[:5])
