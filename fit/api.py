"""Fit a law to a table of runs, and predict from the fit.

``fit(table, "chinchilla")`` runs the point-fit baseline, samples the posterior with NUTS
(initialised from the point fit), learns the discrepancy scale ``k`` from rolling-origin
backtests along every direction the law extrapolates (``datalaws.fit.backtest``), checks the
sampler, and evaluates held-out rows when asked. It returns a ``Fit`` (``datalaws.fit.result``):
``Fit.save`` writes the folder the CLI, the planner and the report read back with
``Fit.load``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import arviz as az
import numpy as np
import pandas as pd

from datalaws.fit import blocks
from datalaws.fit import discrepancy as disc
from datalaws.fit.accuracy import accuracy_tasks, add_link, setup_link
from datalaws.fit.backtest import hull_summary, learn_k
from datalaws.fit.discrepancy import DEFAULT_K_SCALE
from datalaws.fit.infer import FitConfig, diagnose, point_fit, posterior_predictive
from datalaws.fit.laws import DISCREPANCY_FORM, NOISE_PRIORS, Axis, Law, parse_prior, parse_priors
from datalaws.fit.lawtable import check_runs, law_for_table
from datalaws.fit.link_drift import link_drift
from datalaws.fit.result import Fit
from datalaws.fit.sampling import careful
from datalaws.fit.table import LawData, TableError, law_data, split_holdout, table_hash
from datalaws.progress import Progress

__all__ = ["Fit", "fit", "predict", "predictive_draws", "DEFAULT_QUANTILES"]

DEFAULT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _scales(data: LawData, law: Law) -> dict[str, float]:
    # Geometric means: the law's constants become loss terms at a typical run (well-scaled).
    return {r: float(np.exp(np.mean(np.log(v)))) for r, v in data.inputs.items()
            if r not in law.unscaled}


_DEFAULT_CONFIG = FitConfig()


def _split_priors(priors: Mapping[str, str] | None) -> tuple[dict, dict, float | None]:
    """Law-parameter priors, noise priors (``sigma``, ``nu``; nu's is that of nu - 2) and the
    discrepancy's prior scale (``k``: ``HalfNormal(s)``, else None for the default)."""
    law_p, noise, k_scale = {}, {}, None
    for k, v in (priors or {}).items():
        if k == "k":
            k_scale = _k_prior_scale(v)
        else:
            (noise if k in NOISE_PRIORS else law_p)[k] = v
    return law_p, parse_priors(noise), k_scale


def _k_prior_scale(text: str) -> float:
    """The scale s of a ``--prior k=HalfNormal(s)`` override of the discrepancy's prior
    (``DEFAULT_K_SCALE`` is calibrated on language-model loss sweeps; a law of another target,
    such as a classifier's error, has drift of another size)."""
    try:
        d = parse_prior(text)
        scale = float(d.scale) if type(d).__name__ == "HalfNormal" else float("nan")
    except ValueError:  # numpyro refuses a scale <= 0 itself
        scale = float("nan")
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"prior k={text!r}: the discrepancy's prior is HalfNormal(s) with "
                         f"s > 0 (per log unit of each axis; default {DEFAULT_K_SCALE})")
    return scale


def fit(df: pd.DataFrame, law_name: str, *, config: FitConfig = _DEFAULT_CONFIG,
        columns: Mapping[str, str] | None = None, priors: Mapping[str, str] | None = None,
        holdout: str | None = None, discrepancy: str = "backtest",
        accuracy: str | None = None, floors: Mapping[str, float] | None = None,
        method: str = "nuts") -> Fit:
    """Fit ``law_name`` to the rows of ``df`` (minus ``holdout``) and check the result.

    Args:
      columns: role -> column overrides, e.g. ``{"N": "N", "D": "D"}`` for published tables.
      priors: parameter -> prior text, e.g. ``{"alpha": "LogNormal(-1, 0.3)"}``; ``sigma``
        and ``nu`` (the prior of nu - 2) too, and ``k``: the discrepancy's HalfNormal(s).
      holdout: pandas expression selecting rows to hold out and predict.
      discrepancy: ``"backtest"`` (k from rolling-origin backtests) or ``"none"`` (k = 0).
      accuracy: ``"sigmoid"`` (a second stage on the loss posterior), ``"joint"`` (sigmoid
        links fitted with the loss) or ``"exponential"`` (joint); fits acc.<task> columns.
      floors: chance accuracy per task (see ``datalaws.fit.accuracy``).
      method: ``"nuts"`` (the posterior) or ``"point"`` (the Huber least-squares baseline
        alone, as the papers fit: intervals from the residual spread only).
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"fit: df must be a pandas DataFrame of runs, not {type(df).__name__}")
    _check_options(method=method, discrepancy=discrepancy, accuracy=accuracy)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    law_priors, noise, k_scale = _split_priors(priors)
    df, law = law_for_table(df, law_name, law_priors, columns=columns, holdout=holdout)
    train_df, held_df = split_holdout(df, holdout)
    data = law_data(train_df, law.inputs, columns=columns, tasks=accuracy_tasks(df, accuracy),
                    nonneg=law.unscaled)
    check_runs(train_df, law)
    link, acc, acc_mode, floor_source = setup_link(df, train_df, data, accuracy, floors)
    scales = _scales(data, law)
    x = data.normalised(scales)
    t0, c0 = time.perf_counter(), time.process_time()
    point = point_fit(law, x, data.y)
    timings = {"point_fit_s": time.perf_counter() - t0, "point_fit_cpu_s": time.process_time() - c0}
    provenance = {"data_hash": table_hash(df), "n_rows": len(train_df),
                  "n_holdout": len(held_df), "holdout_expr": holdout}
    if method == "point":
        from datalaws.fit.pointfit import point_result

        return point_result(law, data, scales, x, point, config, provenance, held_df)
    t0, c0 = time.perf_counter(), time.process_time()
    idata, diag, link_diag, sampled = _sample_checked(
        law, x, data, config, point, noise, link, acc, acc_mode, provenance)
    timings |= {"nuts_s": time.perf_counter() - t0, "nuts_cpu_s": time.process_time() - c0}
    result = Fit(law=law, columns=dict(data.columns), scales=scales, idata=idata, point=point,
                 config=sampled, discrepancy={}, diagnostics=diag, noise=noise, link=link,
                 data=provenance, timings=timings)
    result.accuracy = _accuracy(result, x, acc, acc_mode, floor_source, link_diag)
    t0, c0 = time.perf_counter(), time.process_time()
    result.discrepancy = discrepancy_section(law, data, x, config, point, noise, discrepancy,
                                             k_scale=k_scale)
    timings |= {"backtest_s": time.perf_counter() - t0,
                "backtest_cpu_s": time.process_time() - c0}
    if len(held_df):
        result.holdout = holdout_scores(result, held_df)
    # wall and CPU seconds (all threads): on a shared machine CPU time is the steadier one
    timings |= {"total_s": time.perf_counter() - t_start,
                "total_cpu_s": time.process_time() - cpu_start}
    return result


def _check_options(**given: str | None) -> None:
    """Each of ``fit``'s string options is one of its choices (one line naming them)."""
    choices = {"method": ("nuts", "point"), "discrepancy": ("backtest", "none"),
               "accuracy": (None, "sigmoid", "joint", "exponential")}
    for name, value in given.items():
        if value not in choices[name]:
            raise ValueError(f"{name}={value!r}; use {'|'.join(map(str, choices[name]))}")


# Runs shorter than this fail the bars (ESS >= 400, R-hat <= 1.01) by their length (quick
# looks, tests): a careful rerun of the same length would not pass them, so none is made.
RETRY_MIN_DRAWS = 1000


def _retries(config: FitConfig) -> bool:
    """Whether a failed run is worth sampling again (enough chains and draws to judge)."""
    return config.chains >= 2 and config.chains * config.draws >= RETRY_MIN_DRAWS


def _sample_checked(law: Law, x, data: LawData, config: FitConfig, point, noise, link, acc,
                    acc_mode, provenance: dict):
    """``_sample``, and once more with ``careful(config)`` when its diagnostics fail (the
    second run's draws stand, pass or fail; ``provenance["resampled"]`` says why):
    (idata, diagnostics, link diagnostics, the config that drew them)."""
    idata, diag, link_diag = _sample(law, x, data, config, point, noise, link, acc, acc_mode)
    redone = idata.posterior.attrs.get("resampled")
    if redone:  # sampled by evaluation domain: the failing domains were redone
        provenance["resampled"] = (f"domains whose first run failed, resampled with target_"
                                   f"accept {careful(config).target_accept:g} and twice the "
                                   f"warmup and draws (thinned): {redone}")
        if config.progress:
            print(provenance["resampled"], flush=True)
    blockwise = idata.posterior.attrs.get("sampled_by") == "evaluation domain"
    if diag.ok or blockwise or not _retries(config):
        return idata, diag, link_diag, config
    sampled = careful(config)
    provenance["resampled"] = (f"first run failed ({'; '.join(diag.failures())}); resampled "
                               f"with target_accept {sampled.target_accept:g}, "
                               f"{sampled.warmup} warmup and {sampled.draws} draws per chain")
    if config.progress:
        print(provenance["resampled"], flush=True)
    return (*_sample(law, x, data, sampled, point, noise, link, acc, acc_mode), sampled)


def _accuracy(result: Fit, x, acc, mode: str, floor_source: str, link_diag) -> dict | None:
    """How the accuracy link was fitted, Pearson r of its predictions, and (fitted after the
    loss law) its own sampler's diagnostics; None without a link."""
    if result.link is None:
        return None
    pp = posterior_predictive(result.law, result.samples(), x,
                              likelihood=result.likelihood, link=result.link)
    out = {"mode": mode, "floor_source": floor_source, "pearson": _pearson(pp, result.link, acc)}
    if link_diag is not None:
        out["diagnostics"] = link_diag.to_dict()
    if mode == "two-stage":  # the link fitted on its own can be backtested on its own
        out["drift"] = link_drift(np.median(pp["loss_law"], axis=0), acc, result.link,
                                  seed=result.config.seed)
    return out


def _sample(law: Law, x, data: LawData, config: FitConfig, point, noise, link, acc,
            acc_mode):
    """NUTS from the point fit (the accuracy link in the model, or fitted after it), and the
    checks of every sampled quantity."""
    joint = link if acc_mode == "joint" else None
    mcmc = blocks.sample(law, x, data.y, config, link=joint, acc=acc if joint else None,
                         init=point, noise=noise, retry=careful if _retries(config) else None)
    idata = blocks.to_idata(mcmc)
    if law.minor_modes:  # latent terms: a chain in a negligible-mass mode (issue 20)
        from datalaws.fit.chains import drop_minor_modes

        idata, _ = drop_minor_modes(idata)
    names, link_diag = sampled_names(law, idata, config.likelihood), None
    if link is not None and acc_mode == "two-stage":
        link_diag = add_link(idata, law, x, acc, link, config)
        if not link_diag.ok:  # as the loss law: once more with smaller, longer steps
            if config.progress:
                print(f"the link's diagnostics failed ({'; '.join(link_diag.failures())}); "
                      "refitting it with smaller steps", flush=True)
            link_diag = add_link(idata, law, x, acc, link, careful(config))
        # the second stage is checked on its own sampler and reported apart (issue 18)
        names = [n for n in names if not n.startswith("acc_")]
    return idata, diagnose(idata, names), link_diag


def sampled_names(law: Law, idata: az.InferenceData, likelihood: str) -> list[str]:
    """The posterior's quantities a summary reports: the law's parameters, the noise, and
    the accuracy link's parameters."""
    noise = ["sigma", "nu"] if likelihood == "studentt" else ["sigma"]
    return [p.name for p in law.params] + noise + [
        v for v in idata.posterior.data_vars if v.startswith("acc_")]


def discrepancy_section(law: Law, data: LawData, x, config: FitConfig, point, noise,
                        mode: str, *, k_scale: float | None = None) -> dict:
    """The summary's discrepancy section: axes, hull, and k (a posterior, or 0 for none).
    ``k_scale``: the prior's half-normal scale (default ``DEFAULT_K_SCALE``, twice as wide
    below 10 runs)."""
    out = {"mode": mode, "form": DISCREPANCY_FORM,
           "axis_columns": {r: data.columns[r] for a in law.axes for r in a.powers}}
    out |= hull_summary(law, data)
    if mode == "none":
        return out | {"k": 0.0, "k_source": "none (--discrepancy none)", "backtest": [],
                      "backtest_points": [], "backtest_scores": [], "folds": []}
    if k_scale is None:
        wide = len(data.y) < max(10, 2 * len(law.params) + 2)
        k_scale = DEFAULT_K_SCALE * (2 if wide else 1)
    section, _ = learn_k(law, data, x, config, point, noise=noise, prior_scale=k_scale)
    return out | section


def _pearson(pp: dict[str, np.ndarray], link, acc) -> dict:
    """Posterior of Pearson r between predicted (``pp``: the posterior predictive at the
    fitted runs) and observed accuracy, over all (run, task)."""
    pred = np.stack([pp[f"acc_law.{t}"] for t in link.tasks], axis=-1)  # [S, n, T]
    obs = acc
    mask = ~np.isnan(obs)
    rs = np.array([np.corrcoef(p[mask], obs[mask])[0, 1] for p in pred])
    q05, q50, q95 = np.quantile(rs, [0.05, 0.5, 0.95])
    return {"mean": float(rs.mean()), "q05": float(q05), "q50": float(q50), "q95": float(q95)}


# Points per block of ``predict``: each block's draws x points x quantities are reduced to
# columns before the next, so memory does not grow with the grid (20k points, 4000 draws:
# 1.3 GB resident; all at once took 5.4 GB, and 100k points would not fit in 24 GB).
PREDICT_BLOCK = 2048


def predict(result: Fit, points: pd.DataFrame, *,
            quantiles: Sequence[float] = DEFAULT_QUANTILES, seed: int = 1,
            progress: bool = False) -> pd.DataFrame:
    """Posterior predictive at new points: ``<quantity>_mean`` and ``_qNN`` columns.

    ``loss`` is a new observed run (law + discrepancy beyond the data + noise); ``loss_law`` is
    the law itself; with an accuracy link, ``acc.<task>`` and ``acc_law.<task>`` likewise.
    ``distance`` is how far each point lies beyond the fitted runs (log units in the law's
    axes, 0 inside), and ``distance_unbacktested`` the part of it past the farthest run any
    backtest fold predicted: there the interval's width is the discrepancy prior's, not
    learned (``distance_parts``). ``progress``: a live line over grids of more than one
    block of points (``PREDICT_BLOCK``).
    """
    data, x = point_inputs(result, points)
    d = point_distances(result, data)
    cols: dict[str, list[np.ndarray]] = {}
    starts = range(0, max(len(points), 1), PREDICT_BLOCK)
    t0 = time.perf_counter()
    with Progress(len(starts), f"predicting {len(points)} points",
                  enabled=progress and len(starts) > 1) as bar:
        for block, a in enumerate(starts):
            rows = slice(a, a + PREDICT_BLOCK)
            draws = _draws(result, {r: v[rows] for r, v in x.items()}, d[rows], seed, block)
            for name, v in draws.items():
                # each point's draws summed alone: numpy sums a block of one point pairwise
                # but wider blocks row by row, so v.mean(axis=0) changed with the blocking
                mean = np.ascontiguousarray(v.T).mean(axis=1)
                cols.setdefault(f"{name}_mean", []).append(mean)
                for q, col in zip(quantiles, np.quantile(v, quantiles, axis=0)):
                    cols.setdefault(f"{name}_q{round(q * 100):02d}", []).append(col)
            done = min(a + PREDICT_BLOCK, len(points))
            bar.update(block + 1, f"{done / (time.perf_counter() - t0):,.0f} points/s")
    out = points.copy()
    for name, parts in cols.items():
        out[name] = np.concatenate(parts)
    out["distance"], out["distance_unbacktested"] = distance_parts(d, result.discrepancy)
    return out


def predictive_draws(result: Fit, points: pd.DataFrame, *, seed: int = 1
                     ) -> dict[str, np.ndarray]:
    """Draws [samples, rows] of every predicted quantity at ``points``."""
    data, x = point_inputs(result, points)
    return _draws(result, x, point_distances(result, data), seed)


def _draws(result: Fit, x: Mapping[str, np.ndarray], d: np.ndarray, seed: int,
           block: int = 0) -> dict[str, np.ndarray]:
    """``predictive_draws`` at normalised inputs ``x`` with distances ``d`` (``point_distances``);
    ``block`` > 0: another block of points of one prediction (the same k per draw, its own
    noise)."""
    samples = result.samples()
    k = _k_draws(result, len(next(iter(samples.values()))), seed)
    return posterior_predictive(result.law, samples, x, likelihood=result.likelihood,
                                link=result.link, distance=d, k=k,
                                seed=(seed, block) if block else seed,
                                link_drift=(result.accuracy or {}).get("drift"))


def point_inputs(result: Fit, points: pd.DataFrame) -> tuple[LawData, dict[str, np.ndarray]]:
    """The law's inputs at ``points`` (checked), raw and normalised as the fit's."""
    law = result.law
    cols = {r: c for r, c in result.columns.items() if r in law.inputs}
    given = list(points.columns)
    points = law.prepare(points)  # mixtures, evaluation weights, pool weights: checked
    missing = [f"{c!r} (for {r})" for r, c in cols.items() if c not in points.columns]
    if missing:  # the fit's own mapping: --columns is not for predict to change
        raise TableError(f"the points lack {'columns' if len(missing) > 1 else 'column'} "
                         f"{', '.join(missing)}, which the fit reads; they have {given}")
    data = law_data(points, law.inputs, target=None, columns=cols, nonneg=law.unscaled)
    return data, data.normalised(result.scales)


def fit_axes(result: Fit) -> list[Axis]:
    """The axes the fit measured distance in, as saved with it."""
    return [Axis(a["name"], a["powers"], a["log"]) for a in result.discrepancy["axes"]]


def point_distances(result: Fit, data: LawData,
                    extra: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Distance of each point from the fitted runs' hull in the law's axes, per direction
    group, split at the backtests' reach (``discrepancy.beyond_reach``: backtested k within
    reach, the prior's beyond). ``extra``: raw inputs of runs to count as fitted too."""
    s = result.discrepancy
    axes = fit_axes(result)
    hull = np.atleast_2d(np.asarray(s["hull"], np.float64))
    if extra is not None:
        hull = np.vstack([hull, disc.axis_coords(axes, extra)])
    d = disc.hull_offsets(disc.axis_coords(axes, data.inputs), hull, disc.axis_groups(axes))
    return disc.beyond_reach(d, s.get("k_reach"))


def _k_draws(result: Fit, n_draws: int, seed: int) -> float | np.ndarray:
    """One k per posterior draw (from k's posterior; a fixed k where the fit has none)."""
    s = result.discrepancy
    if not s.get("k_draws"):
        return s.get("k", 0.0)
    ks = np.asarray(s["k_draws"])
    # one stored k vector per posterior draw, drawn again in a fixed order per seed
    return ks[np.random.default_rng(seed).integers(0, len(ks), n_draws)]


def distance_parts(d: np.ndarray, discrepancy: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """(distance [n], its part past the backtests' reach [n]) from split distances ``d``
    ([n, 2G] at ``k_reach``; [n, G] or [n, 1] without a reach, then all of it is past)."""
    total = np.linalg.norm(d, axis=1)
    groups = len(discrepancy.get("k_groups") or ())
    if discrepancy.get("k_reach") is None or d.shape[1] != 2 * groups:
        return total, total
    return total, np.linalg.norm(d[:, groups:], axis=1)


def holdout_scores(result: Fit, held: pd.DataFrame) -> dict:
    """Errors and interval coverage of the predictive on held-out rows, per quantity."""
    tasks = [t for t in result.tasks if f"acc.{t}" in held.columns]
    data = law_data(held, result.law.inputs, columns=result.columns,
                    nonneg=result.law.unscaled, tasks=tasks)
    d = point_distances(result, data)  # the held rows' inputs are read once, with their targets
    draws = _draws(result, data.normalised(result.scales), d, seed=1)
    far = distance_parts(d, result.discrepancy)[1] > 0  # past reach: the prior's width
    # the point prediction is the law's posterior median: the discrepancy and the noise
    # widen the intervals but do not move it
    out = {name: _scores(draws[key], draws["loss_law"], data.y)
           | {"n_unbacktested": int(far.sum())}
           for name, key in (("loss", "loss"), ("loss_law", "loss_law"))}
    for t, y in data.acc.items():
        ok = ~np.isnan(y)
        if ok.any():
            out[f"acc.{t}"] = _scores(draws[f"acc.{t}"][:, ok], draws[f"acc_law.{t}"][:, ok],
                                      y[ok]) | {"n_unbacktested": int(far[ok].sum())}
    return out


def _scores(d: np.ndarray, law_draws: np.ndarray, y: np.ndarray) -> dict:
    med = np.median(law_draws, axis=0)
    lo90, hi90 = np.quantile(d, [0.05, 0.95], axis=0)
    return {"n": len(y), "median_abs_err": float(np.median(np.abs(med - y))),
            "mean_abs_err": float(np.mean(np.abs(med - y))),
            "coverage": {str(k): v for k, v in disc.coverage(d, y).items()},
            "mean_width90": float(np.mean(hi90 - lo90)),
            "finite": bool(np.isfinite(d).all())}


