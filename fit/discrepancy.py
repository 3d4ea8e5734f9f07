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
that fold's hull. The likelihood of ``k`` is that of calibration, fold by fold: how probable
the held-back rows' interval levels (the smallest central interval of the widened predictive
holding each) fall in the 0-20-50-80-90-95-100% bins with the calibrated shares (a
multinomial score of the counts). That score leans wide on purpose: it punishes rows in the
outer bins (90-100%) hardest, so it settles about 2x a simulated fold's true k. An unbiased
score (the G-test against the counts' own shares) recovers the folds' k, but on the public
sweeps the largest held-out runs miss by about 2x what rolling-origin folds show at the same
distance, and its intervals then cover 0.17-0.37 at 50% on Chinchilla's high-compute and
large-size holdouts (0.37-0.39 with this score; bench/extrapolation.py). Intervals a planner
relies on should err wide out there, so the conservative score is the default.
The prior gives each direction's k an even chance of being exactly 0, else a half-normal:
where a law is right along a direction its backtests are calibrated without widening and k
goes to 0 there. Predictions integrate over the posterior. Where no backtest is possible the
half-normal alone stands in (``DEFAULT_K_SCALE``, calibrated on the public sweeps in
../shared/data) and the summary says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import nnls
from scipy.special import logsumexp

from datalaws.fit.laws import Axis, Law

__all__ = ["LEVELS", "K_GRID", "DEFAULT_K_SCALE", "SHARPNESS", "axis_coords", "hull_of",
           "hull_offsets", "hull_offset_vectors", "group_distances", "Group", "axis_groups",
           "directions", "fold_masks", "coverage", "BacktestFold", "k_posterior", "KPosterior",
           "P_ZERO", "widen", "backtest_table", "backtest_points", "backtest_scores"]

LEVELS = (0.5, 0.8, 0.9)
K_GRID = np.concatenate([[0.0], np.geomspace(1e-4, 1.0, 240)])  # one k
# Half-normal scale of the prior on k. Backtests on the public sweeps in ../shared/data give
# k ~ 0.01-0.03 per axis on Chinchilla and 0.02-0.1 on datablations (bench/extrapolation.py
# prints them): the prior's median (0.034) sits among them and its 95% point (0.1) above; where
# no backtest is possible it is all there is.
DEFAULT_K_SCALE = 0.05
# How sharply a point's offset is attributed to the directions nearest it (the power of
# |cos| in ``group_distances``). At 2, with the directions 45 degrees apart on (log N, log D),
# a point straight along tokens per parameter takes half its variance rate from M's k and a
# quarter from N's and D's, none from compute's: drift along compute and along M are told
# apart (per-axis scales could not; for Chinchilla's four directions this is a full learned
# metric, sd^2 = o' K o with K = sum_j k_j^2 u_j u_j' / 2), neighbours still share evidence.
# Sharper (4, 8) split the folds' evidence more finely without calibrating the public
# sweeps' held-out rows better (bench/extrapolation.py, any of them).
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


# discrepancy sd at which each held-back row's interval level is computed exactly; between
# them it is interpolated in log sd (a smooth function of it)
SD_GRID = np.concatenate([[0.0], np.geomspace(1e-4, 2.0, 100)])
ROW_DRAWS = 100  # quantile points of each fold's predictive per held-back row


def _row_levels(folds: Sequence[BacktestFold], draws: int = ROW_DRAWS) -> np.ndarray:
    """[rows, len(SD_GRID)]: each held-back row's interval level (the smallest central
    interval holding it, ``|2 PIT - 1|``) under its fold's predictive (draws, t noise and
    all) widened by N(0, sd^2): the CDF at y is ``mean_s Phi((y - draw_s) / sd)``, at sd = 0
    the empirical one; ``draws`` quantiles of the draws stand for them (a row's level
    depends only on its own marginal)."""
    from scipy.special import ndtr

    out = []
    for f in folds:
        n = f.log_draws.shape[0]
        s_n = min(draws, n)
        x = np.sort(f.log_draws, axis=0)[((np.arange(s_n) + 0.5) / s_n * n).astype(int)]
        diff = f.log_y[None, :] - x  # [S, m]
        ecdf = (diff > 0).mean(axis=0) + 0.5 * (diff == 0).mean(axis=0)
        cdf = ndtr(diff[None] / SD_GRID[1:, None, None]).mean(axis=1)  # [sd, m]
        out.append(np.abs(2 * np.vstack([ecdf[None], cdf]) - 1).T)
    return np.concatenate(out, axis=0)


LEVEL_EDGES = np.array([0.0, 0.2, 0.5, 0.8, 0.9, 0.95, 1.0])  # central-interval levels


def _calibration(levels: np.ndarray) -> np.ndarray:
    """[C] log pseudo-likelihood of calibration of rows' interval levels [C, rows]: the
    multinomial log likelihood of their counts in 0-20-50-80-90-95-100% under the calibrated
    shares. It is conservative (module docstring): rows in the outer bins cost most, so it
    prefers intervals somewhat wider than calibrated at the folds' distances."""
    log_p = np.log(np.diff(LEVEL_EDGES))
    bins = np.clip(np.searchsorted(LEVEL_EDGES, levels, side="right") - 1, 0, len(log_p) - 1)
    return log_p[bins].sum(axis=1)


def _interp_sd(table: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """``table`` [rows, len(SD_GRID)] at discrepancy sd [C, rows]: interpolated in log sd
    (linearly in sd below SD_GRID's first positive value)."""
    lg = np.log(SD_GRID[1:])
    ls = np.log(np.clip(sd, SD_GRID[1], SD_GRID[-1]))
    j = np.clip(np.searchsorted(lg, ls), 1, len(lg) - 1)  # sd within (SD_GRID[j], [j + 1]]
    t = (ls - lg[j - 1]) / (lg[j] - lg[j - 1])
    rows = np.arange(table.shape[0])[None, :]
    lo, hi = table[rows, j], table[rows, j + 1]
    small = np.minimum(sd / SD_GRID[1], 1.0)
    return np.where(sd < SD_GRID[1], table[rows, 0] * (1 - small) + table[rows, 1] * small,
                    lo + t * (hi - lo))


@dataclasses.dataclass(frozen=True)
class KPosterior:
    """The posterior of the k vector: its grid, each group's weights on it, and draws."""

    values: np.ndarray  # [V] the grid of one k (K_GRID)
    weights: np.ndarray  # [G, V] each group's posterior on it
    draws: np.ndarray  # [n, G]

    @property
    def p_zero(self) -> np.ndarray:
        """[G] posterior probability that a direction needs no discrepancy (k = 0)."""
        return self.weights[:, 0]


def _log_prior(per: np.ndarray, scale: float, p_zero: float | None) -> np.ndarray:
    """Log prior mass of each grid value of k: half-normal(scale) over the cells (uneven
    widths), with mass ``p_zero`` on k = 0 exactly when given."""
    lp = -0.5 * (per / scale) ** 2 + np.log(np.gradient(per))
    if p_zero is None:
        return lp - logsumexp(lp)
    lp[0] = -np.inf
    lp = lp - logsumexp(lp) + np.log1p(-p_zero)
    lp[0] = np.log(p_zero)
    return lp


def _own_fold_k2(folds: Sequence[BacktestFold], score, names: Sequence[str] | None,
                 groups: int, log_prior: np.ndarray) -> np.ndarray:
    """Starting values of k^2 per group: the posterior mean from the folds cut along that
    direction alone, their rows' whole distance counted along it (0 where none). Started
    from zero instead, the first k updated would soak up every direction's drift."""
    k2 = np.zeros(groups)
    ends = np.cumsum([len(f.log_y) for f in folds])
    for g, name in enumerate(names or []):
        own = [i for i, f in enumerate(folds) if f.direction == name]
        if not own:
            continue
        rows = np.concatenate([np.arange(ends[i] - len(folds[i].log_y), ends[i]) for i in own])
        r = np.concatenate([folds[i].dist for i in own])
        lp = log_prior + score(rows, K_GRID[:, None] * r[None, :])
        k2[g] = np.exp(lp - logsumexp(lp)) @ K_GRID ** 2
    return k2


def _scorer(folds: Sequence[BacktestFold]):
    """score(rows, sd [C, len(rows)]) -> [C]: the log likelihood of k from those rows at
    those discrepancy sds (``_calibration``; it is a sum over rows, so the other rows only
    add a constant)."""
    lv = _row_levels(folds)

    def score(rows: np.ndarray, sd: np.ndarray) -> np.ndarray:
        return _calibration(_interp_sd(lv[rows], sd))

    return score


def k_posterior(folds: Sequence[BacktestFold], groups: int, *, scale: float = DEFAULT_K_SCALE,
                n: int = 2000, seed: int = 0, sweeps: int = 4,
                names: Sequence[str] | None = None) -> KPosterior:
    """The posterior of the k vector given the backtest folds (the prior alone without).

    Prior: each direction's k is 0 with probability ``P_ZERO`` (a direction whose backtests
    are calibrated as they are needs no widening, and then gets none), else
    half-normal(scale). Without folds there is no evidence either way and the documented
    half-normal(scale) alone stands in (never a silent k = 0).

    The likelihood is that of calibration (``_calibration``, row by row): how probable
    each fold's held-back rows' interval levels under its predictive widened by the
    discrepancy are if those intervals were calibrated; deliberately conservative (about
    2x a simulated k; see the module docstring for why).

    The joint posterior is approximated by a product of one-dimensional ones on ``K_GRID``
    (mean field): each k's given the others' posterior mean of k^2 (the discrepancy variance
    is linear in every k^2), in ``sweeps`` rounds from each direction's own folds' estimate
    (``names``: the groups' directions). Rows are mostly attributed to one direction
    (``SHARPNESS``), so the k's are nearly independent, and each keeps a fine grid.
    """
    rng = np.random.default_rng(seed)
    per = K_GRID
    log_prior = _log_prior(per, scale, P_ZERO if folds else None)
    post = np.tile(np.exp(log_prior), (groups, 1))
    if folds:
        if folds[0].d.shape[1] != groups:
            raise ValueError("folds and groups disagree")
        score = _scorer(folds)
        d2 = np.concatenate([f.d for f in folds]) ** 2  # [rows, G]
        k2 = _own_fold_k2(folds, score, names, groups, log_prior)
        for _ in range(sweeps):
            for g in range(groups):
                rows = np.flatnonzero(d2[:, g] > 0)
                if not len(rows):
                    continue
                rest = d2[rows] @ k2 - d2[rows, g] * k2[g]  # [rows] others' variance
                sd = np.sqrt(rest[None, :] + per[:, None] ** 2 * d2[None, rows, g])
                lp = log_prior + score(rows, sd)
                post[g] = np.exp(lp - logsumexp(lp))
                k2[g] = post[g] @ per ** 2
    draws = np.stack([rng.choice(per, size=n, p=p / p.sum()) for p in post], axis=1)
    return KPosterior(per, post, draws)


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
