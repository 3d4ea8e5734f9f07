"""Chains stuck in a minor mode of a multimodal posterior.

The mixing laws' latent terms (Ye's implicit form, or K > 1 terms per evaluation domain) can
explain a loss surface in several locally optimal ways: which latent term carries which
curvature. Ordering the curvatures removes label switching, not these distinct local optima.
A chain that warms up into a worse one stays there, and R-hat rightly fails. When that
optimum's log density lies tens of nats below the others', its posterior mass is negligible
(about ``exp(-gap)`` of the main mode's for modes of similar width): the chain describes a
sampler failure, not posterior uncertainty. Yao, Vehtari & Gelman (2022, "Stacking for
non-mixing Bayesian computations") weight chains by their predictive performance; a chain
whose every draw is far below the best chain's gets weight ~0 there, which is what dropping
it does. Chains are dropped only when the gap is large and the log densities do not overlap,
and never below half of them; what was dropped is recorded on the posterior.
"""

from __future__ import annotations

import arviz as az
import numpy as np

__all__ = ["drop_minor_modes", "MODE_GAP"]

MODE_GAP = 20.0  # nats of mean log density below the best chain (posterior mass ~ e^-20)


def drop_minor_modes(idata: az.InferenceData, *, gap: float = MODE_GAP
                     ) -> tuple[az.InferenceData, list[int]]:
    """``idata`` without the chains stuck in a minor mode, and their indices.

    A chain is stuck when its mean log density is more than ``gap`` nats below the best
    chain's and its 95th percentile is below the best chain's 5th. The density is the log
    likelihood summed over the rows (``log_likelihood`` group; the prior's share is small
    beside hundreds of rows), or ``sample_stats.lp`` where that is recorded."""
    lp = _log_density(idata)  # [chains, draws]
    if lp is None:
        return idata, []
    if lp.ndim != 2 or lp.shape[0] < 2 or not np.isfinite(lp).all():
        return idata, []
    means = lp.mean(axis=1)
    best = int(np.argmax(means))
    floor = np.quantile(lp[best], 0.05)
    stuck = [c for c in range(lp.shape[0])
             if means[best] - means[c] > gap and np.quantile(lp[c], 0.95) < floor]
    if not stuck or len(stuck) > lp.shape[0] // 2:
        return idata, []
    keep = [c for c in range(lp.shape[0]) if c not in stuck]
    out = idata.isel(chain=keep)
    out.posterior.attrs["dropped_chains"] = (
        f"{stuck}: mean log density {', '.join(f'{means[best] - means[c]:.0f}' for c in stuck)}"
        f" nats below the best chain's (a minor mode; Yao et al. 2022)")
    return out, stuck


def _log_density(idata: az.InferenceData) -> np.ndarray | None:
    if "sample_stats" in idata and "lp" in idata.sample_stats:
        return np.asarray(idata.sample_stats["lp"].values, float)
    if "log_likelihood" not in idata or not idata.log_likelihood.data_vars:
        return None
    ll = 0.0
    for v in idata.log_likelihood.data_vars.values():
        a = np.asarray(v.values, float)
        ll = ll + a.reshape(a.shape[0], a.shape[1], -1).sum(axis=-1)
    return np.asarray(ll)
