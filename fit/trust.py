"""How far a prediction reaches beyond the fitted runs, and what that does to its interval.

Shared by the planner, ``datalaws next`` and the report: the extrapolation distance of any
point (optionally as if some extra runs had been fitted too), the trained range of model
sizes, draws of the discrepancy scale ``k``, a predictive with common random numbers (one
discrepancy and noise draw per posterior draw, shared by every point, so quantiles are smooth
functions of the inputs rather than Monte Carlo noise), the backtest coverage measured at a
given distance, and probabilities in words.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from datalaws.fit.api import (
    distance_parts,
    fit_axes,
    point_distances,
    point_inputs,
    predictive_draws,
)
from datalaws.fit.result import Fit
from datalaws.fit.sampling import noise_by_row

__all__ = ["raw_inputs", "extrapolation_distance", "extrapolation", "discrepancy_var",
           "trained_range", "k_samples", "crn_log_loss", "backtest_coverage_at", "in_words"]


def raw_inputs(result: Fit, points: pd.DataFrame) -> dict[str, np.ndarray]:
    """The law's inputs (unscaled) at ``points``, read through the fit's column names."""
    return point_inputs(result, points)[0].inputs


def _offsets(result: Fit, points: pd.DataFrame,
             extra: pd.DataFrame | None = None) -> np.ndarray:
    """Distance [n, G] of ``points`` beyond the fitted runs per axis group (the columns the
    discrepancy's k vector scales, split at the backtests' reach); with ``extra``, as if
    those runs had been fitted too."""
    more = raw_inputs(result, extra) if extra is not None and len(extra) else None
    return point_distances(result, point_inputs(result, points)[0], more)


def extrapolation_distance(result: Fit, points: pd.DataFrame,
                           extra: pd.DataFrame | None = None) -> np.ndarray:
    """Distance [n] of ``points`` from the fitted runs (log units; 0 inside them), the one
    the discrepancy term widens with; with ``extra``, as if those runs had been fitted too."""
    return np.linalg.norm(_offsets(result, points, extra), axis=1)


def extrapolation(result: Fit, points: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(distance [n], its part beyond the backtests' reach [n]) of ``points`` from the fitted
    runs, in log units of the law's axes. Over the second part only the discrepancy prior
    sets the width (no fold predicted that far); it is the whole distance where no backtest
    was possible."""
    return distance_parts(_offsets(result, points), result.discrepancy)


def discrepancy_var(result: Fit, points: pd.DataFrame,
                    extra: pd.DataFrame | None = None, *, draws: int = 2000) -> np.ndarray:
    """Expected discrepancy variance [n] of log loss, E_k[sum_g (k_g d_g)^2]."""
    d = _offsets(result, points, extra)
    k = k_samples(result, draws)
    if k.shape[1] != d.shape[1]:  # one k for every group: the Euclidean distance
        return np.mean(k[:, 0] ** 2) * np.sum(d ** 2, axis=1)
    return (np.mean(k ** 2, axis=0)[None, :] * d ** 2).sum(axis=1)


def _discrepancy_sd(result: Fit, points: pd.DataFrame, draws: int, seed: int
                    ) -> np.ndarray:
    """sd [draws, n] of the discrepancy per posterior draw (one k vector per draw)."""
    d = _offsets(result, points)
    k = k_samples(result, draws, seed)
    if k.shape[1] != d.shape[1]:  # one k for every group: the Euclidean distance
        k, d = k[:, :1], np.linalg.norm(d, axis=1, keepdims=True)
    return np.sqrt((k ** 2) @ (d ** 2).T)


def trained_range(result: Fit, role: str = "N") -> tuple[float, float]:
    """(smallest, largest) value of ``role`` among the fitted runs.

    Read from the hull of the fitted runs: log ``role`` as a combination of the log axes
    (N = sqrt(C / M) for the over-training law's compute and tokens-per-parameter axes), whose
    extremes over the runs lie at hull vertices."""
    hull = np.atleast_2d(np.asarray(result.discrepancy["hull"], np.float64))
    axes = fit_axes(result)
    roles = sorted({r for a in axes for r in a.powers} | {role})
    A = np.array([[a.powers.get(r, 0.0) if a.log else 0.0 for r in roles] for a in axes])
    target = np.array([float(r == role) for r in roles])
    g = np.linalg.pinv(A.T) @ target  # log role = hull coordinates . g
    if np.allclose(A.T @ g, target):
        v = hull @ g
        return float(np.exp(v.min())), float(np.exp(v.max()))
    raise ValueError(f"the fit does not record the range of {role!r}; give --min-params and "
                     "--max-params")


def k_samples(result: Fit, n: int, seed: int = 0) -> np.ndarray:
    """``n`` draws [n, G] of the discrepancy scale (its posterior where the fit has one)."""
    dsum = result.discrepancy
    if dsum.get("k_draws"):
        ks = np.asarray(dsum["k_draws"], np.float64)
        ks = ks[:, None] if ks.ndim == 1 else ks
        return ks[np.random.default_rng(seed).integers(0, len(ks), n)]
    return np.full((n, 1), float(dsum.get("k", 0.0)))


def crn_log_loss(result: Fit, points: pd.DataFrame, *, seed: int = 0,
                 noise: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Predictive log loss draws [S, n] (law + discrepancy beyond the data + run noise) with
    one z and one noise draw per posterior draw, shared by all points; and the law alone."""
    log_law = np.log(predictive_draws(result, points, seed=seed)["loss_law"])
    S = log_law.shape[0]
    rng = np.random.default_rng(seed)
    out = log_law + rng.standard_normal(S)[:, None] * _discrepancy_sd(result, points, S, seed)
    samples = result.samples()
    if noise and "sigma" in samples:
        sigma, nu = _noise_draws(result, points, samples, S)
        t = nu is not None and result.likelihood == "studentt"
        if sigma.shape[1] == 1:
            eps = rng.standard_t(nu[:, 0]) if t else rng.standard_normal(S)
        else:  # one quantile per draw, at each point's own nu
            u = rng.uniform(size=S)[:, None]
            eps = stats.t.ppf(u, nu) if t else stats.norm.ppf(u)
        out = out + sigma * np.reshape(eps, (S, -1))
    return out, log_law


def _noise_draws(result: Fit, points: pd.DataFrame, samples: dict, S: int):
    """sigma and nu draws (nu None without one) as [S, 1], or [S, n] where each evaluation
    domain has its own (``Law.noise_groups``); each draw's one value, common to the points."""
    xs = None
    if np.ndim(samples["sigma"]) == 2:  # per group: the points' evaluation weights
        xs = {r: np.asarray(a)[None, :] for r, a in point_inputs(result, points)[1].items()}

    def draws(name):
        v = samples.get(name)
        if v is None:
            return None
        v = np.resize(np.asarray(v, np.float64), (S,) + np.shape(v)[1:])
        return noise_by_row(result.law, xs, v)

    return draws("sigma"), draws("nu")


def backtest_coverage_at(result: Fit, d: float) -> dict:
    """The backtest's 50%/90% coverage (with the discrepancy) at distance ``d``: the rows
    whose distance bin holds ``d``, else the farthest bin, flagged as beyond it."""
    rows = result.discrepancy.get("backtest") or []
    rows = [r for r in rows if "backtest_cov90" in r]
    if not rows:
        return {"n": 0, "note": "no backtest: this fit's intervals beyond the data are "
                                "untested"}
    bt = pd.DataFrame(rows)
    d_max = float(bt.d_hi.max())
    sel = bt[(bt.d_lo <= d + 1e-9) & (bt.d_hi >= d - 1e-9)]
    beyond = sel.empty
    if beyond:
        sel = bt[bt.d_hi >= d_max - 1e-9]
    n = int(sel.n.sum())
    w = sel.n / max(n, 1)
    out = {"n": n, "cov50": float((sel.backtest_cov50 * w).sum()),
           "cov90": float((sel.backtest_cov90 * w).sum()), "d_max_backtested": d_max,
           "beyond_backtest": bool(beyond and d > d_max)}
    out["note"] = (f"beyond every backtested distance (largest {d_max:.2f}); the farthest "
                   "bin's coverage is shown" if out["beyond_backtest"] else
                   f"backtest rows at this distance: {n}")
    return out


def in_words(p: float) -> str:
    """A probability as the IPCC likelihood scale words it."""
    for lo, word in ((0.99, "virtually certain"), (0.9, "very likely"), (0.66, "likely"),
                     (0.33, "about as likely as not"), (0.1, "unlikely"),
                     (0.01, "very unlikely")):
        if p >= lo:
            return word
    return "exceptionally unlikely"
