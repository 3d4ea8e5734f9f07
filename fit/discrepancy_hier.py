"""The posterior of the discrepancy scale ``k`` from rolling-origin backtest folds: a
hierarchical model across folds, and the predictive ``k`` of a new extrapolation.

Each fold ``f`` (a cut along one direction, the rows below it refitted, those above it
predicted) has its own scale per direction ``g``, drawn from a population:

    k_fg ~ HalfNormal(s_g),   s_g = 0 with probability P_ZERO, else s_g ~ HalfNormal(tau),
    tau ~ HalfNormal(scale)   (one hyper-scale: a direction with few or short folds borrows)
    r_i = log y_i - median_i ~ t_ROW_NU(0, sqrt(v_i + sum_g k_fg^2 d_ig^2))   (row i of fold f)

with ``median_i`` and ``v_i`` the fold's k = 0 predictive median and (robust) variance of
that row, ``d_ig`` its distance from the fold's hull along direction g. A prediction beyond
the full data is a new fold: its ``k_g`` is drawn from the population, ``|z| s_g`` with
``s_g`` from its posterior.

Why hierarchical: the rows of one fold share the law's drift there (one fit, one cut), so a
fold is one unit of evidence about how the law drifts, not its 50-130 rows. Sweeps afford
two folds per direction; a single k fitted to all rows (a per-row likelihood, or an unbiased
calibration score) learns the folds' typical drift as if it were known exactly, and on the
public sweeps the held-out largest runs then drift about 2x more than that and the 50%
intervals covered 0.13-0.30 of them (Chinchilla N >= 2e9, C >= 1e21). With k per fold the
spread between folds, and how little two folds say about a population, reach the prediction:
folds that disagree, or few folds, widen it; folds that all show k ~ 0 send ``s`` to its
atom at 0 (a law that is right along a direction gets no widening there). The half-normal
population puts much of a new fold's k near 0 and some far above the folds' typical k: a
heavy-tailed predictive, as the public sweeps' misses are.

Why Student-t rows (``ROW_NU``): public sweeps hold a few runs that no smooth law fits
(diverged or badly under-trained runs, misses 5-20x the others); a normal row likelihood lets
them set k for every run (Chinchilla C >= 1e21: 0.74 at 50% instead of 0.57).

Why rows independent given k, though a fold's rows share its fit's parameter error: with the
fold predictive's full covariance (a multivariate t over a fold's rows) that shared error
no longer reads as drift, and Chinchilla N >= 2e9 fell to 0.33 / 0.77 at 50% / 90%; the
largest runs drift more than the folds' shared error suggests. Nor is the shared error only
noise: an exact law's fold fits predict past their cut with a real bias (the paper's
filtering law, bench/filtering.py: too low in 11 of 12 folds over 6 data sets, by +0.006 log
error on average and up to +0.013, ~2 predictive sd; unchanged with 5x longer fold chains),
the posterior's shrinkage towards its priors, which the prediction beyond the full data
inherits in part.

Inference is on grids (no sampler): per direction, the posterior of ``s_g`` on ``K_GRID``
with each fold's ``k_fg`` integrated out on the same grid; directions are coupled through
each row's variance (mean field: the other directions' posterior mean of ``k_fg^2`` per fold,
a few sweeps, from each fold's own direction's estimate).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import logsumexp
from scipy.stats import t as student_t

__all__ = ["ROW_NU", "SCALE_GRID", "fold_residuals", "population_posterior", "draw_new_fold"]

ROW_NU = 5.0  # degrees of freedom of a held-back row's residual (robust to a few wild runs)
SCALE_GRID = np.concatenate([[0.0], np.geomspace(1e-4, 1.0, 160)])  # grid of s_g and of k_fg


def fold_residuals(folds) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(residual [m], predictive variance [m], d^2 [m, G]) per fold: the observed log loss
    less the k = 0 predictive median, and that predictive's variance from its interquartile
    range (its Student-t noise draws make the plain variance unstable)."""
    out = []
    for f in folds:
        q25, q50, q75 = np.quantile(f.log_draws, [0.25, 0.5, 0.75], axis=0)
        out.append((f.log_y - q50, ((q75 - q25) / 1.349) ** 2, f.d ** 2))
    return out


def _cell_log_weights(grid: np.ndarray) -> np.ndarray:
    return np.log(np.gradient(grid))


def _population_table(grid: np.ndarray) -> np.ndarray:
    """[s, k] log mass of each grid cell of k under HalfNormal(s) (s = 0: all at k = 0)."""
    table = np.full((len(grid), len(grid)), -np.inf)
    table[0, 0] = 0.0
    lp = -0.5 * (grid[None, :] / grid[1:, None]) ** 2 + _cell_log_weights(grid)[None, :]
    table[1:] = lp - logsumexp(lp, axis=1, keepdims=True)
    return table


def log_prior(grid: np.ndarray, scale: float, p_zero: float | None) -> np.ndarray:
    """Log prior mass of each grid value: half-normal(scale) over the cells (uneven widths),
    with mass ``p_zero`` at 0 exactly when given."""
    lp = -0.5 * (grid / scale) ** 2 + _cell_log_weights(grid)
    if p_zero is None:
        return lp - logsumexp(lp)
    lp[0] = -np.inf
    lp = lp - logsumexp(lp) + np.log1p(-p_zero)
    lp[0] = np.log(p_zero)
    return lp


def _row_loglik(r: np.ndarray, v: np.ndarray, rest: np.ndarray, d2: np.ndarray,
                grid: np.ndarray) -> np.ndarray:
    """[k] log likelihood of one fold's rows at each grid value of its k along one
    direction, the other directions contributing variance ``rest`` [m]."""
    sd = np.sqrt(v[None] + rest[None] + grid[:, None] ** 2 * d2[None])
    return (student_t.logpdf(r[None] / sd, ROW_NU) - np.log(sd)).sum(axis=1)


def _own_direction_k2(folds, rows, groups: int, names: Sequence[str] | None) -> np.ndarray:
    """[F, G] starting values of k_fg^2: each fold's maximum-likelihood k with its rows'
    whole distance counted along the direction it was cut along (0 elsewhere). Started from
    zero instead, the first direction updated would soak up every direction's drift."""
    k2 = np.zeros((len(folds), groups))
    for i, (f, (r, v, d2)) in enumerate(zip(folds, rows)):
        if names and f.direction in names:
            ll = _row_loglik(r, v, np.zeros_like(r), d2.sum(axis=1), SCALE_GRID)
            k2[i, list(names).index(f.direction)] = SCALE_GRID[np.argmax(ll)] ** 2
    return k2


def population_posterior(folds, groups: int, *, scale: float, p_zero: float,
                         names: Sequence[str] | None = None, sweeps: int = 4) -> np.ndarray:
    """[G, len(SCALE_GRID)] posterior of each direction's population scale ``s_g``; the
    directions' scales share a hyper-scale ``tau`` (``s_g ~ HalfNormal(tau)`` off the atom
    at 0, ``tau ~ HalfNormal(scale)``), so a direction with few or short folds borrows the
    others' scale instead of its prior's."""
    rows = fold_residuals(folds)
    grid = SCALE_GRID
    table = _population_table(grid)  # [s, k], and also [tau, s]
    atom = np.full(len(grid), -np.inf)
    atom[0] = np.log(p_zero)
    # log p(s | tau): the atom at 0, else half-normal(tau); tau = 0 leaves only the atom
    s_given_tau = np.logaddexp(atom[None, :], np.log1p(-p_zero) + table)
    tau_prior = log_prior(grid, scale, None)
    marg = np.zeros((groups, len(grid)))  # [G, s] log p(direction g's folds | s_g)
    k2 = _own_direction_k2(folds, rows, groups, names)  # E[k_fg^2]: the mean-field coupling
    post = np.zeros((groups, len(grid)))
    for _ in range(sweeps):
        for g in range(groups):
            lik = np.zeros((len(folds), len(grid)))  # [F, k]
            for i, (r, v, d2) in enumerate(rows):
                if (d2[:, g] > 0).any():
                    rest = d2 @ k2[i] - d2[:, g] * k2[i, g]
                    lik[i] = _row_loglik(r, v, rest, d2[:, g], grid)
            per_fold = logsumexp(table[:, None, :] + lik[None], axis=2)  # [s, F]
            marg[g] = per_fold.sum(axis=1)
            joint = s_given_tau[None] + marg[:, None, :]  # [G, tau, s]
            lt = tau_prior + logsumexp(joint, axis=2).sum(axis=0)  # [tau]
            lp = logsumexp(lt[:, None] - logsumexp(lt) + joint[g] - logsumexp(
                joint[g], axis=1, keepdims=True), axis=0)
            post[g] = np.exp(lp - logsumexp(lp))
            # each fold's own k given the data: the population mixed over s's posterior
            lk = logsumexp(np.log(post[g] + 1e-300)[:, None, None] + table[:, None, :]
                           + lik[None] - per_fold[:, :, None], axis=0)  # [F, k]
            k2[:, g] = np.exp(lk - logsumexp(lk, axis=1, keepdims=True)) @ grid ** 2
    return post


def draw_new_fold(post: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """[n, G] draws of a new fold's k vector: ``s_g`` from its posterior, then
    ``|z| s_g`` (the half-normal population)."""
    out = np.zeros((n, post.shape[0]))
    for g, p in enumerate(post):
        s = rng.choice(SCALE_GRID, size=n, p=p / p.sum())
        out[:, g] = np.abs(rng.standard_normal(n)) * s
    return out
