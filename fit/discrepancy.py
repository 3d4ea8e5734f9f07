"""Calibrated extrapolation: distance from the fitted runs along every axis a law extrapolates,
and a posterior for the discrepancy scale ``k`` from rolling-origin backtests.

A law fitted in-sample is confidently wrong beyond its data, and the error is systematic drift
of the law's form, not noise. Each law declares its axes (``Law.axes``: N and D for
Chinchilla, compute and tokens per parameter for over-training, ...). A point's distance ``d``
is its Euclidean distance from the convex hull of the fitted runs in those coordinates (log
scale; mixture proportions linear), so an over-trained small model is "beyond the data" even
when its size is not. Its true log loss is drawn around the law as

    log L_true = log L_law + sqrt(sum_j (k_j * d_j)^2) * z,   z ~ N(0, 1),

with one ``k_j`` per direction the law extrapolates along (its log axes plus, where it reads
a size and a token count, compute C = N*D and tokens per parameter M = D/N; the mixture
simplex shares one): a point's offset from the hull is attributed to the directions nearest
it (``group_distances``), so drift along compute can be large while over-training is
extrapolated well, which per-axis scales in (log N, log D) cannot express.

``k`` is learned from the training rows only: along each direction the rows are cut at two
points, the law is refitted on the rows below each cut and predicts the rows above (rolling
origin: the data's past predicting its future), each held-back row at its own offset from
that fold's hull. ``k`` is hierarchical across folds (``datalaws.fit.discrepancy_hier``):
each fold has its own k per direction, half-normal about a population scale that is 0 with
probability ``P_ZERO`` (a law right along a direction gets no widening there) and otherwise
shares a half-normal hyper-scale across directions; each held-back row's residual from its
fold's k = 0 predictive median is Student-t with the predictive's variance plus the fold's
discrepancy variance. A prediction beyond the full data is a new fold, its k drawn from the
population: a fold's rows count as one unit of evidence about drift, and two folds per
direction leave the population scale uncertain, which widens the prediction honestly. (A
single k fitted to all rows is unbiased on simulated folds but under-covered the public
sweeps' largest runs, 0.13-0.30 at 50%; an earlier multinomial calibration score over-covered
by design, ~2x k, 0.84 at 50% for an exact simulated law.)

The folds only reach so far: beyond the farthest held-back row along a direction
(``k_reach``, ``beyond_reach``) they say nothing about drift, and the rest of a point's
distance is scaled by the documented prior k (``DEFAULT_K_SCALE``) instead. Without that,
datablations' ``epochs >= 4`` holdout (up to 8 log units out; folds reach 1.6) covered 0.71 at
90%. Where no backtest is possible the half-normal prior alone stands in and the summary says
so. Predictions integrate over the posterior (``k_draws``: [draws, G], or [draws, 2G] with
the prior's k beyond reach in the second half).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import nnls
from scipy.special import logsumexp

from datalaws.fit.laws import Axis, Law

__all__ = ["LEVELS", "DEFAULT_K_SCALE", "SHARPNESS", "axis_coords", "hull_of",
           "hull_offsets", "hull_offset_vectors", "group_distances", "Group", "axis_groups",
           "directions", "fold_masks", "coverage", "BacktestFold", "k_posterior", "KPosterior",
           "P_ZERO", "beyond_reach", "widen", "backtest_table", "backtest_points",
           "backtest_scores"]

LEVELS = (0.5, 0.8, 0.9)
# Half-normal scale of the prior on k. Backtests on the public sweeps in ../shared/data give
# k ~ 0.01-0.03 per axis on Chinchilla and 0.02-0.1 on datablations (bench/extrapolation.py
# prints them): the prior's median (0.034) sits among them and its 95% point (0.1) above; where
# no backtest is possible it is all there is. It also scales k beyond the backtests' reach
# and is the prior of the folds' population hyper-scale (fit/discrepancy_hier.py).
DEFAULT_K_SCALE = 0.05
# How sharply a point's offset is attributed to the directions nearest it (the power of
# |cos| in ``group_distances``). At 2, with the directions 45 degrees apart on (log N, log D),
# a point straight along tokens per parameter takes half its variance rate from M's k and a
# quarter from N's and D's, none from compute's: drift along compute and along M are told
# apart (per-axis scales could not; for Chinchilla's four directions this is a full learned
# metric, sd^2 = o' K o with K = sum_j k_j^2 u_j u_j' / 2), neighbours still share evidence.
# Sharper (4, 8) split the folds' evidence more finely without calibrating the public
# sweeps' held-out rows better (bench/extrapolation.py, any of them). Its price: a point
# straight along M takes a quarter of D's k, and Chinchilla's D/N >= 60 holdout (inside the
# fitted D range) over-covers, 0.79 at 50%. Distance per direction as the excess beyond the
# fitted runs' range along that direction alone (inside the D range: none of D's k), or the
# hull's attribution limited to the directions a point leaves the range of, fixes that
# (0.40-0.44 at 50%, forward excess only) but drops C >= 1e21 to 0.09-0.17 at 50%: those
# runs are inside the N and D ranges, beyond only in compute, and drift 2-3x more than the
# compute folds did; two-sided excess lets under-trained large runs (misses of 0.26-0.30)
# set M's k, and D/N >= 60 covers 1.00. With four fixed directions no PSD metric has
# variance along D and none along both C and M, so the hull's attribution stays.
SHARPNESS = 2.0
# Prior probability that a direction needs no discrepancy (k = 0 exactly) where backtests
# can tell: a law that is right along a direction then gets no widening along it, rather
# than the half-normal's median.
P_ZERO = 0.5


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


@dataclasses.dataclass(frozen=True)
class Group:
    """One column of the discrepancy's distance, with its own ``k``: a rolling direction in
    the log axes (``weights``: its unit vector over all axes, 0 on linear ones), or the
    linear axes together (``linear``; ``weights``: 1 on them)."""

    name: str
    weights: tuple[float, ...]
    linear: bool = False


def _candidates(axes: Sequence[Axis]) -> list[tuple[str, dict[str, float]]]:
    """(name, powers of raw inputs) of the directions a law extrapolates along: its log axes,
    plus compute C and tokens per parameter M where the axes read a size and a token count."""
    roles = {r for a in axes if a.log for r in a.powers}
    tokens = ({"D": 1.0} if "D" in roles else
              {"U": 1.0, "repetitions": 1.0} if {"U", "repetitions"} <= roles else None)
    out = [(a.name, dict(a.powers)) for a in axes if a.log]
    if "N" in roles and tokens:
        out += [("C", {"N": 1.0} | tokens), ("M", tokens | {"N": -1.0})]
    return out


def axis_groups(axes: Sequence[Axis]) -> list[Group]:
    """The discrepancy's groups: one per direction the law extrapolates along (a unit vector
    in its log axes; directions the axes cannot express, and repeats, are dropped), and one
    for the linear axes (the mixture simplex) together."""
    log = [a for a in axes if a.log]
    roles = sorted({r for a in log for r in a.powers})
    A = np.array([[a.powers.get(r, 0.0) for r in roles] for a in log]).reshape(len(log),
                                                                              len(roles))
    groups: list[Group] = []
    for name, powers in _candidates(axes) if log else ():  # e.g. a one-size mixing law
        p = np.array([powers.get(r, 0.0) for r in roles])
        g = np.linalg.pinv(A.T) @ p  # the direction's coordinate is g . (log-axis coords)
        if not np.linalg.norm(g) or not np.allclose(A.T @ g, p):
            continue
        u = iter(g / np.linalg.norm(g))
        w = tuple(float(next(u)) if a.log else 0.0 for a in axes)
        if not any(abs(abs(np.dot(w, o.weights)) - 1) < 1e-9 for o in groups):
            groups.append(Group(name, w))
    if any(not a.log for a in axes):
        groups.append(Group("mix", tuple(0.0 if a.log else 1.0 for a in axes), linear=True))
    return groups


def hull_offset_vectors(points: np.ndarray, hull: np.ndarray) -> np.ndarray:
    """Offset [m, k] of each of ``points`` [m, k] from its nearest point of the convex hull
    of ``hull`` (0 inside).

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
    return offsets


def group_distances(offsets: np.ndarray, groups: Sequence[Group],
                    sharpness: float = SHARPNESS) -> np.ndarray:
    """Distance [m, G] per group of offsets [m, k] from the hull.

    A log offset of length r at angle theta_j to direction j counts ``r * sqrt(w_j)`` in
    group j, with ``w_j ~ |cos theta_j| ** sharpness`` summing to 1: ``sum_j (k_j d_j)^2 =
    r^2 sum_j w_j k_j^2`` interpolates the directions' variance rates, a point straight along
    one direction takes (nearly) that direction's k, and the norm of a row is the Euclidean
    distance. The linear axes count the norm of their offset.
    """
    offsets = np.atleast_2d(offsets)
    out = np.zeros((len(offsets), len(groups)))
    dirs = [j for j, g in enumerate(groups) if not g.linear]
    for j, g in enumerate(groups):
        if g.linear:
            out[:, j] = np.linalg.norm(offsets * np.asarray(g.weights), axis=1)
    if dirs:
        U = np.array([groups[j].weights for j in dirs])  # [J, k], zero on linear axes
        logpart = offsets * (np.abs(U).sum(axis=0) > 0)
        r = np.linalg.norm(logpart, axis=1)
        a = (np.abs(logpart @ U.T) / np.maximum(r, 1e-300)[:, None]) ** sharpness
        w = a / np.maximum(a.sum(axis=1, keepdims=True), 1e-300)
        out[:, dirs] = r[:, None] * np.sqrt(w)
    return out


def hull_offsets(points: np.ndarray, hull: np.ndarray, groups: Sequence[Group],
                 sharpness: float = SHARPNESS) -> np.ndarray:
    """Distance [m, G] of each of ``points`` [m, k] beyond the convex hull of ``hull``, per
    group (``group_distances`` of the offsets); the norm of a row is the distance."""
    return group_distances(hull_offset_vectors(points, hull), groups, sharpness)


def directions(law: Law) -> list[Axis]:
    """Rolling-origin directions: the law's log axes, plus compute and tokens per parameter
    where the law reads a size and a token count (the directions sweeps extrapolate in)."""
    seen, out = set(), []
    for name, powers in _candidates(law.axes):
        key = tuple(sorted(powers.items()))
        if key not in seen:
            seen.add(key)
            out.append(Axis(name, powers))
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


@dataclasses.dataclass(frozen=True)
class KPosterior:
    """The posterior of the k vector: its grid, each group's weights on it, and draws."""

    values: np.ndarray  # [V] the grid of the population scale s (and of one k)
    weights: np.ndarray  # [G, V] each group's posterior of s on it (the prior without folds)
    draws: np.ndarray  # [n, G] k of a new extrapolation

    @property
    def p_zero(self) -> np.ndarray:
        """[G] posterior probability that a direction needs no discrepancy (k = 0)."""
        return self.weights[:, 0]


def k_posterior(folds: Sequence[BacktestFold], groups: int, *, scale: float = DEFAULT_K_SCALE,
                n: int = 2000, seed: int = 0, names: Sequence[str] | None = None
                ) -> KPosterior:
    """The posterior predictive of the k vector of a new extrapolation given the backtest
    folds (the prior alone without).

    With folds: the hierarchical model of ``datalaws.fit.discrepancy_hier`` (each fold its
    own k, drawn from a population whose scale per direction is 0 with probability
    ``P_ZERO``, else half-normal(scale)); ``weights`` is the posterior of each direction's
    population scale, ``draws`` a new fold's k. Without folds there is no evidence either way
    and the documented half-normal(scale) alone stands in (never a silent k = 0). ``names``:
    the groups' directions (each fold's own direction starts the mean-field iteration).
    """
    from datalaws.fit import discrepancy_hier as hier

    rng = np.random.default_rng(seed)
    grid = hier.SCALE_GRID
    if not folds:
        p = np.exp(hier.log_prior(grid, scale, None))
        post = np.tile(p, (groups, 1))
        draws = np.stack([rng.choice(grid, size=n, p=p / p.sum()) for _ in range(groups)],
                         axis=1)
        return KPosterior(grid, post, draws)
    if folds[0].d.shape[1] != groups:
        raise ValueError("folds and groups disagree")
    post = hier.population_posterior(folds, groups, scale=scale, p_zero=P_ZERO, names=names)
    return KPosterior(grid, post, hier.draw_new_fold(post, n, rng))


def beyond_reach(d: np.ndarray, reach: Sequence[float] | None) -> np.ndarray:
    """Distances [m, G] split at the backtests' reach [G] (the farthest held-back row per
    direction) into [m, 2G]: ``min(d, reach)``, scaled by the backtested k, and
    ``sqrt(d^2 - reach^2)`` beyond it, scaled by the prior's k (the folds say nothing about
    how the law drifts farther out than they reached). The norm of a row is kept. ``reach``
    None (no backtest, or fits saved before it) leaves ``d`` as it is.

    Not ``d - reach`` (independent drift slopes within and beyond reach): that narrowed
    Chinchilla N >= 2e9 to 0.37 at 50% and datablations epochs >= 4 to 0.85 at 90%, and an
    exact filtering law (bench/filtering.py) still covered 1.00 at 90% on 5 of 6 data sets."""
    if reach is None:
        return d
    r = np.asarray(reach, np.float64)[None, :]
    return np.concatenate([np.minimum(d, r), np.sqrt(np.maximum(d ** 2 - r ** 2, 0.0))], axis=1)


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
