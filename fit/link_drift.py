"""How far the loss -> accuracy link can be trusted below the losses it was fitted on.

A sigmoid in loss fitted on the runs of a sweep is confidently wrong below their losses: on
the public over-training sweeps (Gadre et al. 2024, RedPajama, 16 tasks, the runs below
2e20 FLOPs fitted), ARC-easy, HellaSwag, LAMBADA and PIQA rose faster at the larger runs'
lower loss than the posterior sigmoids allowed (90% intervals covered 0.2-0.6 of them): where
the fitted runs only show the convex start of the curve, the sigmoid's posterior puts its
ceiling just past them. With the drift the 16 tasks' 90% intervals covered 0.91 / 0.88 /
0.75 of the held-out accuracies on C4 / RedPajama / RefinedWeb (0.88 / 0.81 / 0.69 without):
better, still short on RefinedWeb, whose folds show no drift that its largest runs then
have. The loss law's discrepancy term widens the *loss*; this widens the *link*, the same
way (``datalaws.fit.discrepancy``):

    acc_true = link(L_true) + k_t * d * z,   d = max(0, log L_fit_min - log L_true),  z ~ N(0, 1)

with ``L_fit_min`` the lowest law loss of the fitted runs and one ``k_t`` per task, learned
by rolling-origin backtests along loss: the runs are cut at two loss levels, the link is
refitted per task on the runs above each cut (its posterior mode under the link's priors and
the Laplace approximation there, the floor fixed) and predicts those below, each at its
distance below the fold's lowest loss.
``k`` is hierarchical across tasks and folds (``datalaws.fit.discrepancy_hier``, each task a
direction): 0 with probability ``P_ZERO`` for a task whose link holds, tasks borrowing a
common scale. Fitted in the second stage only (``--accuracy sigmoid``, the default).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares
from scipy.special import expit

from datalaws.fit import discrepancy as disc
from datalaws.fit.model import AccuracyLink

__all__ = ["HELD_SHARES", "K_SCALE", "MIN_FIT", "link_drift", "drift_sd"]

HELD_SHARES = (0.25, 0.45)  # share of runs (the lowest losses) each fold predicts
MIN_FIT = 8  # runs a fold's link is fitted on (three parameters and the noise)
# Half-normal scale of the population of k (accuracy per unit of log loss below the fitted
# runs). Accuracy rises ~1-3 per unit of log loss in the middle of a task's sigmoid, so 0.3
# allows a drift of a sizeable part of that and keeps a task that holds near 0.
K_SCALE = 0.3
FOLD_DRAWS = 400


def _sigmoid(L: np.ndarray, theta: np.ndarray, floor: float) -> np.ndarray:
    L0, log_k, logit_delta = theta
    return floor + (1 - floor) * (1 - expit(logit_delta)) * expit(-np.exp(log_k) * (L - L0))


def _prior_residuals(theta: np.ndarray, ref: float) -> np.ndarray:
    """The full link's priors (``AccuracyLink.sample_params``: L0 ~ N(ref, 1), k ~
    LogNormal(log 3, 1), delta ~ Beta(1, 4)) as least-squares residuals: without them a fold
    that sees one side of the sigmoid extrapolates it wildly, and an exact link reads as
    drift."""
    L0, log_k, logit_delta = theta
    beta = np.sqrt(2 * 3.0 * np.logaddexp(0.0, logit_delta))  # -log(1 - delta) = softplus
    return np.array([L0 - ref, log_k - np.log(3.0), beta])


def _fold_task(L_fit, a_fit, L_test, floor: float, ref: float, rng) -> np.ndarray:
    """[FOLD_DRAWS, m] predictive draws of one task's accuracy at losses ``L_test``, from
    the link fitted on (``L_fit``, ``a_fit``): its posterior mode under the full link's
    priors, and the Laplace approximation around it."""
    bounds = ([-np.inf, -3.0, -6.0], [np.inf, 4.0, 6.0])
    theta = np.array([np.median(L_fit), np.log(3.0), np.log(0.2 / 0.8)])
    sigma = 0.03
    for _ in range(2):  # the noise from the residuals, then the mode at that noise
        r = least_squares(lambda t, s=sigma: np.concatenate(
            [(_sigmoid(L_fit, t, floor) - a_fit) / s, _prior_residuals(t, ref)]),
            theta, bounds=bounds)
        theta = r.x
        resid = a_fit - _sigmoid(L_fit, theta, floor)
        sigma = max(1.4826 * np.median(np.abs(resid - np.median(resid))), 1e-3)
    try:
        cov = np.linalg.pinv(r.jac.T @ r.jac)  # residuals already in units of their sd
        thetas = rng.multivariate_normal(theta, cov, size=FOLD_DRAWS, check_valid="ignore")
    except np.linalg.LinAlgError:
        thetas = np.repeat(theta[None], FOLD_DRAWS, axis=0)
    mean = np.stack([_sigmoid(L_test, t, floor) for t in thetas])
    return mean + sigma * rng.standard_normal(mean.shape)


def link_drift(loss: np.ndarray, acc: np.ndarray, link: AccuracyLink, *, seed: int = 0,
               n: int = 2000) -> dict:
    """The link's drift below the fitted losses: ``k_draws`` [n, tasks], ``loss_min`` and a
    summary per task. ``loss`` [runs] is the law's median loss at the fitted runs, ``acc``
    [runs, tasks] the observed accuracies (NaN where missing)."""
    rng = np.random.default_rng(seed)
    T = len(link.tasks)
    order = np.argsort(loss)
    folds = []
    for share in HELD_SHARES:
        m = int(round(share * len(loss)))
        if m < 3 or len(loss) - m < MIN_FIT:
            continue
        test, fitted = order[:m], order[m:]
        L_min = loss[fitted].min()
        draws, ys, ds = [], [], []
        for t in range(T):
            ok_f = fitted[~np.isnan(acc[fitted, t])]
            ok_t = test[~np.isnan(acc[test, t])]
            if len(ok_f) < MIN_FIT or not len(ok_t):
                continue
            draws.append(_fold_task(loss[ok_f], acc[ok_f, t], loss[ok_t], link.floors[t],
                                    float(np.median(loss[ok_f])), rng))
            ys.append(acc[ok_t, t])
            d = np.zeros((len(ok_t), T))
            d[:, t] = np.maximum(np.log(L_min) - np.log(loss[ok_t]), 0.0)
            ds.append(d)
        if draws:
            folds.append(disc.BacktestFold(direction="loss", cut=float(L_min),
                                           log_draws=np.concatenate(draws, axis=1),
                                           log_y=np.concatenate(ys), d=np.concatenate(ds)))
    post = disc.k_posterior(folds, T, scale=K_SCALE, n=n, seed=seed)
    k = post.draws
    q05, q50, q95 = np.quantile(k, [0.05, 0.5, 0.95], axis=0)
    return {"k_draws": k.tolist(), "loss_min": float(loss.min()), "folds": len(folds),
            "k_prior": f"per task HalfNormal(s), s = 0 with probability {disc.P_ZERO:g}, "
                       f"else s ~ HalfNormal(tau), tau ~ HalfNormal({K_SCALE:g})",
            "k_tasks": {t: {"q05": float(a), "q50": float(b), "q95": float(c),
                            "p_zero": float(z) if folds else None}
                        for t, a, b, c, z in zip(link.tasks, q05, q50, q95, post.p_zero)}}


def drift_sd(k: np.ndarray, loss_min: float, log_true) -> np.ndarray:
    """[S, n, tasks] sd of the link's drift: k draws [S, tasks] at draws [S, n] of the true
    log loss."""
    d = np.maximum(np.log(loss_min) - np.asarray(log_true, np.float64), 0.0)
    return np.asarray(k, np.float64)[:, None, :] * d[..., None]
