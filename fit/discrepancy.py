"""Calibrated extrapolation: distance from the fitted runs along every axis a law extrapolates,
and a posterior for the discrepancy scale ``k`` from rolling-origin backtests.

A law fitted in-sample is confidently wrong beyond its data, and the error is systematic drift
of the law's form, not noise. Each law declares its axes (``Law.axes``: N and D for
Chinchilla, compute and tokens per parameter for over-training, ...). A point's distance ``d``
is its Euclidean distance from the convex hull of the fitted runs in those coordinates (log
scale; mixture proportions linear), so an over-trained small model is "beyond the data" even
when its size is not. Its true log loss is drawn around the law as

    log L_true = log L_law + k * d * z,   z ~ N(0, 1).

``k`` (one per axis; the mixture simplex shares one) is learned from the training rows only:
along each direction (the law's axes plus, where the law reads a size and a token count,
compute C = N*D and tokens per parameter M = D/N) the rows are cut at two points, the law is
refitted on the rows below each cut and predicts the rows above (rolling origin: the data's
past predicting its future), each held-back row at its own distance from that fold's hull.
The likelihood of ``k`` is that of calibration: how probable the held-back rows' interval
levels (the smallest central interval of the widened predictive holding each) are if those
intervals were calibrated (multinomial counts in 0-20-50-80-90-95-100% bins). With
independent half-normal priors this gives ``k`` a posterior on a grid, and predictions
integrate over it. When the law is exactly right the plain intervals are already calibrated,
widening them loses likelihood, and ``k`` shrinks to the prior's lower end. Where no backtest
is possible the prior alone stands in (``DEFAULT_K_SCALE``, calibrated on the public sweeps
in ../shared/data) and the summary says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import nnls
from scipy.special import logsumexp

from datalaws.fit.laws import Axis, Law

__all__ = ["LEVELS", "K_GRID", "DEFAULT_K_SCALE", "axis_coords", "hull_of", "hull_offsets",
           "axis_groups",
           "directions", "fold_masks", "coverage", "BacktestFold", "k_posterior", "k_draws",
           "widen", "backtest_table", "backtest_points", "backtest_scores"]

LEVELS = (0.5, 0.8, 0.9)
K_GRID = np.concatenate([[0.0], np.geomspace(1e-4, 1.0, 240)])
# per-axis grids where k is a vector: finer for two axes (30^2 cells) than three (14^3)
K_GRIDS = {2: np.concatenate([[0.0], np.geomspace(1e-3, 0.5, 29)]),
           3: np.concatenate([[0.0], np.geomspace(1e-3, 0.5, 13)])}
# Half-normal scale of the prior on k. Backtests on the public sweeps in ../shared/data give
# k ~ 0.01-0.03 per axis on Chinchilla and 0.02-0.1 on datablations (bench/extrapolation.py
# prints them): the prior's median (0.034) sits among them and its 95% point (0.1) above; where
# no backtest is possible it is all there is.
DEFAULT_K_SCALE = 0.05


def axis_coords(axes: Sequence[Axis], inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Coordinates [n, axes] of raw inputs along ``axes`` (log of the power product, or the
    plain value for linear axes). Zeros are clipped (repetitions may be 0 on a pure pass)."""
    cols = []
    for ax in axes:
        if ax.log:
            cols.append(sum(p * np.log(np.maximum(np.asarray(inputs[r], np.float64), 1e-6))
                            for r, p in ax.powers.items()))
        else:
            cols.append(sum(p * np.asarray(inputs[r], np.float64) for r, p in ax.powers.items()))
    return np.stack(cols, axis=-1)


def hull_of(coords: np.ndarray) -> np.ndarray:
    """The points spanning the convex hull of ``coords`` [n, k] (its vertices where SciPy can
    find them, else every distinct point: both span the same hull)."""
    pts = np.unique(np.round(coords, 10), axis=0)
    if 2 <= pts.shape[1] <= 5 and len(pts) > pts.shape[1] + 1:
        from scipy.spatial import ConvexHull, QhullError

        try:
            return pts[ConvexHull(pts).vertices]
        except QhullError:  # flat (e.g. all runs at one tokens-per-parameter): keep all
            pass
    return pts


def axis_groups(axes: Sequence[Axis]) -> list[str]:
    """The group of each axis for its own ``k``: every log axis alone, the linear ones (the
    mixture simplex) together."""
    return [a.name if a.log else "mix" for a in axes]


def hull_offsets(points: np.ndarray, hull: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """Distance [m, G] of each of ``points`` [m, k] from the convex hull of ``hull``, split by
    axis group (the Euclidean norm of the offset to the nearest hull point within each group;
    their norm is the distance).

    The nearest hull point is ``H^T w`` with ``w >= 0, sum w = 1``: non-negative least squares
    with the sum constraint as a heavily weighted extra row.
    """
    points, hull = np.atleast_2d(points), np.atleast_2d(hull)
    centre = hull.mean(axis=0)
    h = (hull - centre).T
    big = 1e3 * (1.0 + np.abs(h).max())
    A = np.vstack([h, np.full((1, h.shape[1]), big)])
    offsets = np.zeros(points.shape)
    for i, p in enumerate(points):
        w, _ = nnls(A, np.append(p - centre, big), maxiter=50 * A.shape[1])
        offsets[i] = (p - centre) - h @ w
    offsets[np.abs(offsets) < 1e-7] = 0.0
    names = list(dict.fromkeys(groups))
    return np.stack([np.linalg.norm(offsets[:, [g == n for g in groups]], axis=1)
                     for n in names], axis=1)


def directions(law: Law) -> list[Axis]:
    """Rolling-origin directions: the law's log axes, plus compute and tokens per parameter
    where the law reads a size and a token count (the directions sweeps extrapolate in)."""
    dirs = [a for a in law.axes if a.log]
    tokens = ({"D": 1.0} if "D" in law.inputs else
              {"U": 1.0, "repetitions": 1.0} if {"U", "repetitions"} <= set(law.inputs) else None)
    if "N" in law.inputs and tokens:
        dirs += [Axis("C", {"N": 1.0} | tokens), Axis("M", tokens | {"N": -1.0})]
    seen, out = set(), []
    for a in dirs:
        key = tuple(sorted(a.powers.items()))
        if key not in seen:
            seen.add(key)
            out.append(a)
    return out


def fold_masks(law: Law, inputs: Mapping[str, np.ndarray], *, min_fit: int, min_test: int = 3,
               quantiles: Sequence[float] = (0.55, 0.75)
               ) -> list[tuple[str, float, np.ndarray]]:
    """(direction, cut, rows fitted) per fold: along each direction the rows at or below a cut
    fit, those above are predicted. Folds with the same rows are kept once."""
    folds, seen = [], set()
    for ax in directions(law):
        v = np.round(axis_coords([ax], inputs)[:, 0], 9)
        ux = np.unique(v)
        for q in quantiles:
            c = ux[min(len(ux) - 1, int(q * len(ux)))]
            fit_rows = v <= c
            key = fit_rows.tobytes()
            if fit_rows.sum() >= min_fit and (~fit_rows).sum() >= min_test and key not in seen:
                seen.add(key)
                folds.append((ax.name, float(np.exp(c)), fit_rows))
    return folds


def coverage(draws: np.ndarray, y: np.ndarray, levels=LEVELS) -> dict[float, float]:
    """Share of ``y`` [n] inside the central intervals of ``draws`` [samples, n]."""
    out = {}
    for lv in levels:
        lo, hi = np.quantile(draws, [(1 - lv) / 2, (1 + lv) / 2], axis=0)
        out[lv] = float(np.mean((y >= lo) & (y <= hi)))
    return out


@dataclasses.dataclass(frozen=True)
class BacktestFold:
    """One fold: predictive draws of log loss at the held-back rows (k = 0)."""

    direction: str  # the axis the rows were cut along
    cut: float  # that axis' value at the cut (natural scale: largest fitted value)
    log_draws: np.ndarray  # [samples, m] posterior predictive of log loss, k = 0
    log_y: np.ndarray  # [m] observed log loss
    d: np.ndarray  # [m, G] distance of each held-back row from the fold's hull, per group
    diagnostics: dict = dataclasses.field(default_factory=dict)

    @property
    def dist(self) -> np.ndarray:
        """[m] Euclidean distance from the fold's hull (all groups)."""
        return np.linalg.norm(self.d, axis=1)


PIT_EDGES = np.array([0.0, 0.2, 0.5, 0.8, 0.9, 0.95, 1.0])  # central-interval levels


def _grid(groups: int) -> np.ndarray:
    """[C, G] grid of k vectors (one k per group; beyond three groups one shared k)."""
    g = min(groups, 3)
    per = K_GRID if g == 1 else K_GRIDS[g]
    mesh = np.meshgrid(*([per] * g), indexing="ij")
    grid = np.stack([m.ravel() for m in mesh], axis=1)
    return grid if g == groups else np.repeat(grid, groups, axis=1)


def _levels(folds: Sequence[BacktestFold], grid: np.ndarray, draws: int = 200,
            seed: int = 0) -> np.ndarray:
    """[C, rows]: for each k vector, the smallest central interval level of each held-back
    row's widened predictive that holds its observation (``|2 PIT - 1|``). The widened
    predictive is the fold's draws (t noise and all) plus N(0, sum_g (k_g d_g)^2), so its
    CDF at y is ``mean_s Phi((y - draw_s) / sd)``; at sd = 0 the empirical CDF."""
    from scipy.special import ndtr

    rng = np.random.default_rng(seed)
    out = []
    for f in folds:
        x = f.log_draws[rng.choice(f.log_draws.shape[0], min(draws, f.log_draws.shape[0]),
                                   replace=False)]  # [S, m]
        diff = f.log_y[None, :] - x  # [S, m]
        sd = np.sqrt((grid ** 2) @ (f.d ** 2).T)  # [C, m]
        ecdf = (diff > 0).mean(axis=0) + 0.5 * (diff == 0).mean(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            cdf = ndtr(diff[None] / sd[:, None, :]).mean(axis=1)  # [C, m]
        cdf = np.where(sd > 0, cdf, ecdf[None, :])
        out.append(np.abs(2 * cdf - 1))
    return np.concatenate(out, axis=1)


def k_posterior(folds: Sequence[BacktestFold], groups: int, *, scale: float = DEFAULT_K_SCALE
                ) -> tuple[np.ndarray, np.ndarray]:
    """(grid [C, G], posterior weights [C]) of the k vector: independent half-normal(scale)
    priors times the backtest likelihood of calibration (the prior alone without folds).

    The likelihood asks how probable the held-back rows' interval levels are if the widened
    intervals were calibrated: each row's level (the smallest central interval holding it)
    falls in the bins 0-20-50-80-90-95-100% with probabilities 0.2, 0.3, 0.3, 0.1, 0.05,
    0.05; the counts are multinomial. It scores the intervals a user reads, whatever the
    shape of the noise (Student-t cores are narrow, its tails wide).
    """
    grid = _grid(groups)
    g = min(groups, 3)
    per = K_GRID if g == 1 else K_GRIDS[g]
    cell = np.log(np.gradient(per))  # grid cells are uneven: weight by each one's width
    idx = np.stack(np.unravel_index(np.arange(len(grid)), [len(per)] * g), axis=1)
    log_post = (-0.5 * (grid[:, :g] / scale) ** 2).sum(axis=1) + cell[idx].sum(axis=1)
    if folds:
        if folds[0].d.shape[1] != groups:
            raise ValueError("folds and groups disagree")
        levels = _levels(folds, grid)
        probs = np.diff(PIT_EDGES)
        bins = np.clip(np.searchsorted(PIT_EDGES, levels, side="right") - 1, 0, len(probs) - 1)
        counts = np.stack([(bins == b).sum(axis=1) for b in range(len(probs))], axis=1)
        log_post = log_post + counts @ np.log(probs)
    return grid, np.exp(log_post - logsumexp(log_post))


def k_draws(grid: np.ndarray, weights: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` draws [n, G] of the k vector from its grid posterior."""
    rng = np.random.default_rng(seed)
    return grid[rng.choice(len(grid), size=n, p=weights / weights.sum())]


def widen(log_draws: np.ndarray, d: np.ndarray, ks: np.ndarray, seed: int = 0) -> np.ndarray:
    """Add the discrepancy to draws [S, m]: sd ``sqrt(sum_g (k_g d_g)^2)``, one k per draw."""
    from datalaws.fit.sampling import discrepancy_sd

    z = np.random.default_rng(seed).standard_normal(log_draws.shape)
    return log_draws + discrepancy_sd(ks, d, log_draws.shape[0]) * z


def _abs_err(draws: np.ndarray, log_y: np.ndarray) -> float:
    return float(np.median(np.abs(np.exp(np.median(draws, axis=0)) - np.exp(log_y))))


def backtest_table(folds: Sequence[BacktestFold], ks: np.ndarray, *, bins: int = 2,
                   seed: int = 0) -> list[dict]:
    """One row per fold x distance bin: coverage and error with k = 0 and with the k
    posterior (each row's data counted once)."""
    rows = []
    for i, f in enumerate(folds):
        wide = widen(f.log_draws, f.d, ks, seed + i)
        dist = f.dist
        edges = np.unique(np.quantile(dist, np.linspace(0, 1, bins + 1)))
        if len(edges) < 2:
            edges = np.array([dist.min(), dist.max()])
        for j, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
            sel = (dist >= lo) & ((dist < hi) | (j == len(edges) - 2))
            if not sel.any():
                continue
            row = {"fold": i, "direction": f.direction, "cut": f.cut, "d_lo": float(lo),
                   "d_hi": float(hi), "n": int(sel.sum())}
            for name, draws in (("none", f.log_draws), ("backtest", wide)):
                cov = coverage(draws[:, sel], f.log_y[sel])
                row.update({f"{name}_cov{int(lv * 100)}": c for lv, c in cov.items()})
                row[f"{name}_abs_err"] = _abs_err(draws[:, sel], f.log_y[sel])
            rows.append(row)
    return rows


def backtest_points(folds: Sequence[BacktestFold], ks: np.ndarray, *, seed: int = 0
                    ) -> list[dict]:
    """Every held-back row of every fold: its distance, observed and median log loss, and
    the 90% interval without and with the discrepancy (what the report plots)."""
    rows = []
    for i, f in enumerate(folds):
        plain = np.quantile(f.log_draws, [0.05, 0.5, 0.95], axis=0)
        wide = np.quantile(widen(f.log_draws, f.d, ks, seed + i), [0.05, 0.95], axis=0)
        for j in range(len(f.log_y)):
            rows.append({"fold": i, "direction": f.direction, "cut": f.cut,
                         "d": float(f.dist[j]), "log_y": float(f.log_y[j]),
                         "median": float(plain[1, j]), "lo90_none": float(plain[0, j]),
                         "hi90_none": float(plain[2, j]), "lo90_k": float(wide[0, j]),
                         "hi90_k": float(wide[1, j])})
    return rows


def backtest_scores(folds: Sequence[BacktestFold], ks: np.ndarray, *, seed: int = 0
                    ) -> list[dict]:
    """Out-of-range log predictive density (mean per held-back row, with the k posterior)
    per fold, keyed by direction and cut so that laws fitted to one table can be ranked on
    the folds they share."""
    out = []
    for i, f in enumerate(folds):
        wide = widen(f.log_draws, f.d, ks, seed + i)
        # kernel density of the draws at the observation (Silverman bandwidth per row)
        sd = np.maximum(wide.std(axis=0), 1e-6)
        bw = 1.06 * sd * wide.shape[0] ** -0.2
        z = (f.log_y[None, :] - wide) / bw[None, :]
        lpd = logsumexp(-0.5 * z ** 2, axis=0) - np.log(wide.shape[0] * bw * np.sqrt(2 * np.pi))
        out.append({"direction": f.direction, "cut": f.cut, "n": len(f.log_y),
                    "log_score": float(np.mean(lpd))})
    return out
