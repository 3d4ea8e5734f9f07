"""Rolling-origin backtests of a law on its training rows: the folds, their fits (one
compiled sampler for all of them), their diagnostics, and the posterior of ``k``.

The arithmetic (hull distance, the likelihood of ``k``, the tables) is in
``datalaws.fit.discrepancy``; this module runs the fits.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping

import arviz as az
import numpy as np

from datalaws.fit import blocks
from datalaws.fit import discrepancy as disc
from datalaws.fit.infer import FitConfig, posterior_predictive
from datalaws.fit.laws import Law
from datalaws.fit.sampling import careful, thinned
from datalaws.fit.table import LawData

__all__ = ["learn_k", "hull_summary", "fold_predictive", "K_DRAWS", "FOLD_WARMUP", "FOLD_DRAWS"]

K_DRAWS = 2000  # draws of k kept for the tables and scores
# Warmup and kept draws per chain of a fold fit (each fold its own NUTS, all folds of a chain
# vectorised: fit/fold_sampler.py; 70-95 leapfrog steps a draw on Chinchilla). At 200 draws
# R-hat's own noise failed a fold of 8 now and then (1.055-1.09 on Chinchilla, the simulated
# exact law and the demo's fits); at 400 all 58 folds of bench/extrapolation.py passed, for
# ~20% more fit time (Chinchilla: 2.9-3.3x the plain fit). A fold that still fails (the
# demo's 12-run folds: 1.056) is sampled once more (``_fold_draws``, with the main fit's
# rerun sampler ``careful``); that costs a compile of its own, so it is the exception, not
# the rule (rerunning at 200 draws took Chinchilla to 4.1-4.3x). More warmup (400) did not
# help.
FOLD_WARMUP = 200
FOLD_DRAWS = 400
FOLD_MAX_RHAT = 1.05  # fold fits are short (2 chains): a looser bar than the main fit's 1.01


def hull_summary(law: Law, data: LawData) -> dict:
    """The axes and the hull of the fitted runs in them (what ``predict`` measures from)."""
    coords = disc.axis_coords(law.axes, data.inputs)
    return {"axes": [{"name": a.name, "powers": dict(a.powers), "log": a.log}
                     for a in law.axes],
            "hull": disc.hull_of(coords).tolist()}


def _fold_diagnostics(s: Mapping[str, np.ndarray]) -> list[dict]:
    """Worst R-hat and bulk ESS over each fold's parameters (``s``: [chains, draws, folds,
    1, ...])."""
    out = []
    for f in range(next(iter(s.values())).shape[2]):
        # Vector parameters (e.g. the mixing laws' t_ij) count component by component.
        per = [c for v in s.values() if v.ndim >= 4  # constant elements are fixed ones
               for c in np.moveaxis(v[:, :, f, 0].reshape(*v.shape[:2], -1), -1, 0)
               if np.ptp(c) > 0]
        rh = max(float(az.rhat(c)) for c in per) if per else float("nan")
        ess = min(float(az.ess(c)) for c in per) if per else float("nan")
        out.append({"r_hat": rh, "ess_bulk": ess, "ok": bool(rh <= FOLD_MAX_RHAT)})
    return out


def _sample_folds(law: Law, x, y, config: FitConfig, point, noise, masks: np.ndarray):
    """Draws [chains, draws, folds, 1, ...] of the folds (``masks`` [folds, n]), and the
    divergences."""
    mcmc = blocks.sample(law, x, y, config, init=point, mask=masks, noise=noise)
    samples = {k: np.array(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    return samples, int(np.asarray(mcmc.get_extra_fields(group_by_chain=True)["diverging"]).sum())


def _fold_draws(law: Law, x, y, config: FitConfig, point, noise, masks: np.ndarray
                ) -> tuple[dict, list[dict]]:
    """The folds' draws and diagnostics. A fold that fails R-hat is sampled once more, alone,
    with the main fit's rerun sampler (``careful``), thinned back to ``config.draws`` (each
    fold is its own NUTS, ``fit/fold_sampler.py``)."""
    samples, div = _sample_folds(law, x, y, config, point, noise, masks)
    diags = _fold_diagnostics(samples)
    bad = [f for f, d in enumerate(diags) if not d["ok"]]
    if bad:
        again = careful(config)
        redo, div_again = _sample_folds(law, x, y, again, point, noise, masks[bad])
        for k, v in samples.items():
            v[:, :, bad] = redo[k][:, thinned(config, again)]
        for f, d in zip(bad, _fold_diagnostics({k: v[:, :, bad] for k, v in samples.items()})):
            diags[f] = d | {"resampled": True}
        div += div_again
    return samples, [d | {"divergences_all_folds": div} for d in diags]


def fold_predictive(law: Law, samples: Mapping[str, np.ndarray], x: Mapping[str, np.ndarray],
                    *, likelihood: str, seed: int = 0) -> np.ndarray:
    """Log loss draws [folds, S, n] of a new run at every row ``x`` under each fold's
    posterior (``samples``: [S, folds, 1, ...] as the fold sampler returns them).

    Every fold predicts every row in one call, one shape: called per fold, each fold's own
    number of held-back rows re-compiled the noise sampler (seconds a fold)."""
    s, n_folds = np.shape(next(iter(samples.values())))[:2]
    stacked = {k: np.moveaxis(np.asarray(v)[:, :, 0], 1, 0).reshape(n_folds * s, *v.shape[3:])
               for k, v in samples.items()}
    loss = posterior_predictive(law, stacked, x, likelihood=likelihood, seed=seed)["loss"]
    return np.log(loss).reshape(n_folds, s, -1)


def _run_folds(law: Law, data: LawData, x: Mapping[str, np.ndarray], config: FitConfig,
               point: Mapping[str, float], noise, specs) -> list[disc.BacktestFold]:
    # Backtest fits only feed the posterior of k (through each held-back row's predictive
    # median and interquartile range: the bench's coverage is the same from 100 draws of a
    # fold as from 400) and their R-hat: two chains (FOLD_DRAWS says how many draws).
    bt = dataclasses.replace(config, chains=min(2, config.chains),
                             warmup=min(FOLD_WARMUP, config.warmup),
                             draws=min(FOLD_DRAWS, config.draws),
                             progress=False)
    masks = np.stack([m for _, _, m in specs])
    # All folds in one call: the law with a leading fold axis, each fold's likelihood masked
    # to its rows, each fold its own NUTS. Folds keep the full fit's input scales and its
    # point init.
    by_chain, diags = _fold_draws(law, x, data.y, bt, point, noise, masks)
    samples = {k: v.reshape((-1,) + v.shape[2:]) for k, v in by_chain.items()}
    coords = disc.axis_coords(law.axes, data.inputs)
    log_y = np.log(data.y)
    log_all = fold_predictive(law, samples, x, likelihood=config.likelihood, seed=config.seed)
    folds = []
    for f, ((direction, cut, fit_rows), diag) in enumerate(zip(specs, diags)):
        test = ~fit_rows
        d = disc.hull_offsets(coords[test], disc.hull_of(coords[fit_rows]),
                              disc.axis_groups(law.axes))
        folds.append(disc.BacktestFold(
            direction=direction, cut=cut, log_draws=log_all[f][:, test], log_y=log_y[test],
            d=d, diagnostics=diag | {"n_fit": int(fit_rows.sum()), "n_test": int(test.sum())}))
    return folds


def _k_source(folds: list, groups: list[str], prior_scale: float) -> str:
    """Where k comes from, in words, for the summary and the report."""
    if not folds:
        return f"default prior HalfNormal({prior_scale:g}) only: no backtest possible"
    along = {f.direction for f in folds}
    source = (f"backtest: {len(folds)} folds along {', '.join(sorted(along))}; beyond the "
              f"farthest held-back row per direction (k_reach) the default prior "
              f"HalfNormal({prior_scale:g})")
    unseen = [g for g in groups if g not in along]
    if unseen:  # too few distinct values to cut along: neighbours' rows and the prior
        source += (f"; no fold along {', '.join(unseen)} (its k: the default prior "
                   f"HalfNormal({prior_scale:g}) and rows of nearby directions)")
    return source


def learn_k(law: Law, data: LawData, x: Mapping[str, np.ndarray], config: FitConfig,
            point: Mapping[str, float], *, noise=None, prior_scale: float = disc.DEFAULT_K_SCALE
            ) -> tuple[dict, np.ndarray]:
    """Backtest along every direction and infer ``k``: (summary section, draws of k)."""
    min_fit = 2 * len(law.params) + 2
    specs = disc.fold_masks(law, data.inputs, min_fit=min_fit)
    if config.progress:
        print(f"learning the discrepancy scale k: {len(specs)} rolling-origin backtest folds "
              f"along {sorted({s[0] for s in specs})} ...", flush=True)
    folds = _run_folds(law, data, x, config, point, noise, specs) if specs else []
    groups = [g.name for g in disc.axis_groups(law.axes)]
    post = disc.k_posterior(folds, len(groups), scale=prior_scale, n=K_DRAWS,
                            seed=config.seed, names=groups)
    ks = post.draws  # [draws, groups]: within the folds' reach (all of it without folds)
    reach = np.max(np.concatenate([f.d for f in folds]), axis=0) if folds else None
    k_draws = ks
    if folds:  # beyond the farthest held-back row per direction the folds say nothing
        k_far = disc.k_posterior([], len(groups), scale=prior_scale, n=K_DRAWS,
                                 seed=config.seed + 1).draws  # the prior's k there
        k_draws = np.concatenate([ks, k_far], axis=1)
    source = _k_source(folds, groups, prior_scale)
    if not folds:
        source += (f" ({len(data.y)} rows; each fold needs {min_fit} rows below its cut and 3 "
                   f"above)")
        warnings.warn(f"k: {source}", stacklevel=3)
    bad = [i for i, f in enumerate(folds) if not f.diagnostics["ok"]]
    if bad:
        warnings.warn(f"backtest fold fits {bad} did not converge (R-hat > {FOLD_MAX_RHAT}); "
                      "k may be off", stacklevel=3)
    q05, q50, q95 = np.quantile(ks, [0.05, 0.5, 0.95], axis=0)
    per_axis = {g: {"q05": float(a), "q50": float(b), "q95": float(c), "mean": float(m),
                    "p_zero": float(z) if folds else None}
                for g, a, b, c, m, z in zip(groups, q05, q50, q95, ks.mean(axis=0),
                                            post.p_zero)}
    if config.progress:
        print("k: " + ", ".join(f"{g} {v['q50']:.3g} [{v['q05']:.3g}, {v['q95']:.3g}]"
                                for g, v in per_axis.items()) + f" ({source})", flush=True)
    kmax = ks.max(axis=1)  # the widest axis' k: one number for tables and old readers
    section = {
        "k": float(np.median(kmax)), "k_q05": float(np.quantile(kmax, 0.05)),
        "k_q95": float(np.quantile(kmax, 0.95)), "k_axes": per_axis, "k_groups": groups,
        "k_source": source,
        "k_prior": (f"per fold k ~ HalfNormal(s) per direction; s = 0 with probability "
                    f"{disc.P_ZERO:g}, else s ~ HalfNormal(tau), tau ~ HalfNormal("
                    f"{prior_scale:g})" if folds else f"HalfNormal({prior_scale:g})"),
        "sharpness": disc.SHARPNESS,
        "k_draws": np.round(k_draws[:1000], 6).tolist(),
        "k_reach": None if reach is None else reach.tolist(),
        "k_beyond_reach": (None if reach is None else
                           f"HalfNormal({prior_scale:g}) per direction beyond k_reach"),
        "folds": [{"direction": f.direction, "cut": f.cut} | f.diagnostics for f in folds],
        "folds_ok": not bad,
        "backtest": disc.backtest_table(folds, ks),
        "backtest_points": disc.backtest_points(folds, ks),
        "backtest_scores": disc.backtest_scores(folds, ks),
    }
    return section, ks


def backtest_ranking(summaries: Mapping[str, dict]) -> list[dict]:
    """Laws fitted to one table ranked by their out-of-range backtest log score (mean per
    held-back row, with each law's k posterior), over the folds every law has (same
    direction and cut); best first. Fits without a backtest score None and rank last."""
    scores = {n: {(f["direction"], round(f["cut"], 6)): f for f in
                  s.get("discrepancy", {}).get("backtest_scores") or []}
              for n, s in summaries.items()}
    shared = set.intersection(*(set(v) for v in scores.values() if v)) if any(
        scores.values()) else set()
    rows = []
    for n, folds in scores.items():
        use = [folds[key] for key in shared if key in folds]
        rows_n = sum(f["n"] for f in use)
        score = (sum(f["log_score"] * f["n"] for f in use) / rows_n) if rows_n else None
        rows.append({"fit": n, "backtest_log_score": score, "folds": len(use),
                     "rows": rows_n})
    rows.sort(key=lambda r: -np.inf if r["backtest_log_score"] is None
              else r["backtest_log_score"], reverse=True)
    return rows
