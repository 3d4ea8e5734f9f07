"""Calibrated extrapolation: learn the discrepancy scale ``k`` by size-ordered backtesting.

A law fitted in-sample is confidently wrong beyond its data, and the error is systematic drift
of the law's form, not noise. So predictions at distance ``d = max(0, log(x / x_max_fit))``
along the law's extrapolation axis get an extra term on log loss:

    log L_true = log L_law + k * d * z,   z ~ N(0, 1)

``k`` is learned from the training rows only: sort them along the axis, and for several cut
points refit the law on the smaller side and predict the larger side (the data's own past
predicting its future). For each candidate ``k`` the 50/80/90% predictive intervals of the
held-back rows are scored against their nominal levels, and the ``k`` with the smallest
squared calibration error wins. When the law is exactly right the plain intervals are already
calibrated and ``k`` comes out near zero; it does not inflate everything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

__all__ = ["LEVELS", "distance", "coverage", "choose_k", "BacktestFold", "backtest_table",
           "backtest_points", "cut_points", "run_backtest"]

LEVELS = (0.5, 0.8, 0.9)
K_GRID = np.concatenate([[0.0], np.geomspace(1e-3, 0.5, 80)])


def distance(x: np.ndarray, x_max_fit: float) -> np.ndarray:
    """Extrapolation distance ``max(0, log(x / x_max_fit))`` (0 inside the fitted data)."""
    return np.maximum(0.0, np.log(np.asarray(x, dtype=np.float64) / x_max_fit))


def coverage(draws: np.ndarray, y: np.ndarray, levels=LEVELS) -> dict[float, float]:
    """Share of ``y`` [n] inside the central intervals of ``draws`` [samples, n]."""
    out = {}
    for lv in levels:
        lo, hi = np.quantile(draws, [(1 - lv) / 2, (1 + lv) / 2], axis=0)
        out[lv] = float(np.mean((y >= lo) & (y <= hi)))
    return out


@dataclasses.dataclass(frozen=True)
class BacktestFold:
    """One cut: predictive draws of log loss at the rows above it (no discrepancy)."""

    cut: float  # axis value at the cut (largest x in the fold's fit)
    log_draws: np.ndarray  # [samples, m] posterior predictive of log loss, k = 0
    log_y: np.ndarray  # [m] observed log loss
    d: np.ndarray  # [m] distance of each held-back row from the cut


def _discrepancy_z(folds: list[BacktestFold], seed: int) -> np.ndarray:
    """One standard-normal z per draw, shared by every fold and every k: choosing k,
    tabulating and plotting the backtest all widen with the same draws."""
    return np.random.default_rng(seed).standard_normal(max(f.log_draws.shape[0] for f in folds))


def _widen(fold: BacktestFold, k: float, z: np.ndarray) -> np.ndarray:
    return fold.log_draws + k * fold.d[None, :] * z[: fold.log_draws.shape[0], None]


def choose_k(folds: list[BacktestFold], *, seed: int = 0) -> float:
    """The ``k`` whose widened backtest intervals are best calibrated at 50/80/90%."""
    if not folds:
        return 0.0
    z = _discrepancy_z(folds, seed)

    def calibration_error(k: float) -> float:
        hits = {lv: [] for lv in LEVELS}
        for f in folds:
            w = _widen(f, k, z)
            for lv in LEVELS:
                lo, hi = np.quantile(w, [(1 - lv) / 2, (1 + lv) / 2], axis=0)
                hits[lv].append((f.log_y >= lo) & (f.log_y <= hi))
        return sum((np.mean(np.concatenate(h)) - lv) ** 2 for lv, h in hits.items())

    errs = np.array([calibration_error(k) for k in K_GRID])
    # among near-ties prefer the smallest k: do not widen more than calibration asks
    return float(K_GRID[np.flatnonzero(errs <= errs.min() + 1e-4)[0]])


def backtest_table(folds: list[BacktestFold], k: float, *, seed: int = 0,
                   bins: int = 3) -> list[dict]:
    """Coverage and error by extrapolation distance, for k = 0 and the chosen k."""
    if not folds:
        return []
    z = _discrepancy_z(folds, seed)
    d = np.concatenate([f.d for f in folds])
    edges = np.quantile(d, np.linspace(0, 1, bins + 1))
    rows = []
    plain = [f.log_draws for f in folds]
    wide = [_widen(f, k, z) for f in folds]
    ys = np.concatenate([f.log_y for f in folds])
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (d >= lo) & (d <= hi)
        if not sel.any():
            continue
        row = {"d_lo": float(lo), "d_hi": float(hi), "n": int(sel.sum())}
        for name, draws in (("none", plain), ("backtest", wide)):
            cols = _concat_cols(draws)[:, sel]
            cov = coverage(cols, ys[sel])
            row.update({f"{name}_cov{int(lv * 100)}": c for lv, c in cov.items()})
            med = np.median(cols, axis=0)
            row[f"{name}_abs_err"] = float(np.median(np.abs(np.exp(med) - np.exp(ys[sel]))))
        rows.append(row)
    return rows


def backtest_points(folds: list[BacktestFold], k: float, *, seed: int = 0) -> list[dict]:
    """Every held-back row of every fold: its distance, observed and median log loss, and
    the 90% interval without and with the discrepancy (what the report plots)."""
    if not folds:
        return []
    z = _discrepancy_z(folds, seed)
    rows = []
    for f in folds:
        plain = np.quantile(f.log_draws, [0.05, 0.5, 0.95], axis=0)
        wide = np.quantile(_widen(f, k, z), [0.05, 0.95], axis=0)
        for j in range(len(f.log_y)):
            rows.append({"cut": f.cut, "d": float(f.d[j]), "log_y": float(f.log_y[j]),
                         "median": float(plain[1, j]), "lo90_none": float(plain[0, j]),
                         "hi90_none": float(plain[2, j]), "lo90_k": float(wide[0, j]),
                         "hi90_k": float(wide[1, j])})
    return rows


def _concat_cols(draws: list[np.ndarray]) -> np.ndarray:
    s = min(a.shape[0] for a in draws)
    return np.concatenate([a[:s] for a in draws], axis=1)


def cut_points(x: np.ndarray, *, quantiles=(0.5, 0.65, 0.8), min_fit: int, min_test: int
               ) -> list[float]:
    """Axis values to cut at: rows ``<= cut`` fit, rows ``> cut`` are predicted."""
    ux = np.unique(x)
    cuts = []
    for q in quantiles:
        c = ux[min(len(ux) - 1, int(q * len(ux)))]
        if (x <= c).sum() >= min_fit and (x > c).sum() >= min_test and c not in cuts:
            cuts.append(float(c))
    return cuts


def run_backtest(x_axis: np.ndarray,
                 fit_folds: Callable[[np.ndarray], list[dict[str, np.ndarray]]],
                 predict: Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray],
                 log_y: np.ndarray, *, min_fit: int, min_test: int = 3) -> list[BacktestFold]:
    """Refit on rows below each cut and predict the rows above.

    ``fit_folds(masks [folds, n])`` returns posterior samples per fold;
    ``predict(samples, test_mask)`` returns log-loss predictive draws [S, test rows], k = 0.
    """
    cuts = cut_points(x_axis, min_fit=min_fit, min_test=min_test)
    if not cuts:
        return []
    posts = fit_folds(np.stack([x_axis <= c for c in cuts]))
    folds = []
    for c, post in zip(cuts, posts):
        test = x_axis > c
        folds.append(BacktestFold(cut=c, log_draws=predict(post, test), log_y=log_y[test],
                                  d=distance(x_axis[test], c)))
    return folds
