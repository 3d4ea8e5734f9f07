"""Fit a law to a table of runs, save it, load it, predict from it.

``fit(table, "chinchilla")`` runs the point-fit baseline, samples the posterior with NUTS
(initialised from the point fit), learns the discrepancy scale by size-ordered backtesting,
checks the sampler, and evaluates held-out rows when asked. ``save_fit`` writes the files the
CLI, the planner and the report read: ``posterior.nc``, ``summary.json``, ``point_fit.json``.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd

from datalaws.fit import discrepancy as disc
from datalaws.fit.accuracy import accuracy_tasks, add_link, setup_link
from datalaws.fit.backtest import hull_summary, learn_k
from datalaws.fit.discrepancy import DEFAULT_K_SCALE
from datalaws.fit.infer import (
    AccuracyLink,
    Diagnostics,
    FitConfig,
    diagnose,
    point_fit,
    posterior_predictive,
    run_nuts,
)
from datalaws.fit.laws import DISCREPANCY_FORM, NOISE_PRIORS, Axis, Law, get_law, parse_prior
from datalaws.fit.table import LawData, TableError, law_data, split_holdout, table_hash

__all__ = ["FitResult", "fit", "save_fit", "load_fit", "predict", "prior_str",
           "DEFAULT_QUANTILES"]

DEFAULT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclasses.dataclass
class FitResult:
    """A fitted law: its posterior, the scales and columns it was fitted with, and checks."""

    law: Law
    idata: az.InferenceData
    summary: dict
    point: dict[str, float]
    link: AccuracyLink | None = None

    @property
    def scales(self) -> dict[str, float]:
        return self.summary["scales"]

    @property
    def k(self) -> float:
        return self.summary["discrepancy"]["k"]

    def samples(self) -> dict[str, np.ndarray]:
        """Posterior draws flattened over chains: name -> [draws, ...]."""
        post = self.idata.posterior
        return {v: post[v].values.reshape(-1, *post[v].shape[2:]) for v in post.data_vars}

    @property
    def diagnostics(self) -> Diagnostics:
        return Diagnostics(self.summary["diagnostics"]["checks"])


def prior_str(d) -> str:
    args = ", ".join(f"{np.asarray(getattr(d, a)).item():.4g}" for a in d.arg_constraints
                     if np.asarray(getattr(d, a)).size == 1)
    return f"{type(d).__name__}({args})"


def _scales(data: LawData, law: Law) -> dict[str, float]:
    # Geometric means: the law's constants become loss terms at a typical run (well-scaled).
    return {r: float(np.exp(np.mean(np.log(v)))) for r, v in data.inputs.items()
            if r not in law.unscaled}


def _build_law(name: str, priors: Mapping[str, str] | None,
               domains: Sequence[str] | None = None, pools: Sequence[str] | None = None,
               evals: Sequence[str] | None = None, sizes: Sequence[str] | None = None) -> Law:
    law = get_law(name, domains=domains, pools=pools, evals=evals, sizes=sizes)
    return law.with_priors({k: parse_prior(v) for k, v in (priors or {}).items()})


_DEFAULT_CONFIG = FitConfig()


def _pool_weights(df: pd.DataFrame, pools: Sequence[str] = ()) -> pd.DataFrame:
    """One-hot ``pool.<name>`` weights from a ``pool`` column, unless the table has them;
    pools named in ``pools`` but absent from the rows get weight 0."""
    if not any(c.startswith("pool.") for c in df.columns):
        if "pool" not in df.columns or df["pool"].isna().any():
            raise TableError("the filtering law needs a `pool` column (or pool.<name> "
                             "weights) with a value in every row")
        df = pd.concat([df, pd.get_dummies(df["pool"], prefix="pool", prefix_sep=".",
                                           dtype=float)], axis=1)
    from datalaws.fit.filtering import check_shares

    check_shares(df, pools or None)  # shares of a run's unique samples: in [0, 1], sum 1
    missing = {f"pool.{p}": 0.0 for p in pools if f"pool.{p}" not in df.columns}
    return df.assign(**missing) if missing else df


def _eval_rows(df: pd.DataFrame, evals: Sequence[str] = ()) -> pd.DataFrame:
    """Rows for the per-domain mixing law. Without ``eval.<domain>`` weights, each run's
    ``loss.<domain>`` columns become one row per domain (one-hot weights, that loss as
    ``loss``); domains named in ``evals`` but absent get weight 0."""
    if not any(c.startswith("eval.") for c in df.columns):
        loss_cols = sorted(c for c in df.columns if c.startswith("loss."))
        if not loss_cols:
            raise TableError("the mixing_domains law needs per-domain validation losses "
                             "(loss.<domain> columns), or eval.<domain> weights (the known "
                             "composition) beside an overall loss")
        base = df.drop(columns=loss_cols + (["loss"] if "loss" in df.columns else []))
        df = pd.concat([base.assign(loss=df[c], **{f"eval.{o[5:]}": float(o == c)
                                                   for o in loss_cols})
                        for c in loss_cols], ignore_index=True).dropna(subset=["loss"])
    missing = {f"eval.{e}": 0.0 for e in evals if f"eval.{e}" not in df.columns}
    return df.assign(**missing) if missing else df


def _law_frame(df: pd.DataFrame, law: Law) -> pd.DataFrame:
    """The table in the form the law reads (pool weights, per-domain eval rows)."""
    pools = [r[2:] for r in law.inputs if r.startswith("w.")]
    evals = [r[2:] for r in law.inputs if r.startswith("e.")]
    if pools:
        df = _pool_weights(df, pools)
    if evals:
        df = _eval_rows(df, evals)
    return df


def _check_runs(n: int, law: Law) -> None:
    """At least 5 runs; 5-9 (or fewer than twice the parameters) fit with a warning."""
    n_min = max(10, 2 * len(law.params) + 2)
    if n < 5:
        raise TableError(f"law {law.name!r} needs at least 5 runs to fit (got {n})")
    if n < n_min:
        warnings.warn(f"law {law.name!r} has {len(law.params)} parameters and only {n} runs: "
                      "the fit leans on its priors, and no backtest is possible, so the "
                      f"discrepancy uses a default prior twice as wide", stacklevel=3)


def _split_priors(priors: Mapping[str, str] | None) -> tuple[dict, dict]:
    """Law-parameter priors and noise priors (``sigma``, ``nu``; nu's is that of nu - 2)."""
    law_p, noise = {}, {}
    for k, v in (priors or {}).items():
        (noise if k in NOISE_PRIORS else law_p)[k] = v
    return law_p, {k: parse_prior(v) for k, v in noise.items()}


def fit(df: pd.DataFrame, law_name: str, *, config: FitConfig = _DEFAULT_CONFIG,
        columns: Mapping[str, str] | None = None, priors: Mapping[str, str] | None = None,
        holdout: str | None = None, discrepancy: str = "backtest",
        accuracy: str | None = None, floors: Mapping[str, float] | None = None,
        method: str = "nuts") -> FitResult:
    """Fit ``law_name`` to the rows of ``df`` (minus ``holdout``) and check the result.

    Args:
      columns: role -> column overrides, e.g. ``{"N": "N", "D": "D"}`` for published tables.
      priors: parameter -> prior text, e.g. ``{"alpha": "LogNormal(-1, 0.3)"}``; ``sigma``
        and ``nu`` (the prior of nu - 2) too.
      holdout: pandas expression selecting rows to hold out and predict.
      discrepancy: ``"backtest"`` (k from rolling-origin backtests) or ``"none"`` (k = 0).
      accuracy: ``"sigmoid"`` (a second stage on the loss posterior), ``"joint"`` (sigmoid
        links fitted with the loss) or ``"exponential"`` (joint); fits acc.<task> columns.
      floors: chance accuracy per task (see ``datalaws.fit.accuracy``).
      method: ``"nuts"`` (the posterior) or ``"point"`` (the Huber least-squares baseline
        alone, as the papers fit: intervals from the residual spread only).
    """
    if method not in ("nuts", "point"):
        raise ValueError(f"method={method!r}; use nuts|point")
    if discrepancy not in ("backtest", "none"):
        raise ValueError(f"discrepancy={discrepancy!r}; use backtest|none")
    t_start = time.perf_counter()
    law_priors, noise = _split_priors(priors)
    df, law = _prepare(df, law_name, law_priors, columns=columns, holdout=holdout)
    train_df, held_df = split_holdout(df, holdout)
    data = law_data(train_df, law.inputs, columns=columns, tasks=accuracy_tasks(df, accuracy),
                    nonneg=law.unscaled)
    _check_runs(len(train_df), law)
    if law.name.startswith("mixing"):  # counts what one size identifies, in mixtures
        from datalaws.fit.mixing import check_rows

        check_rows(law, train_df)
    link, acc, acc_mode, floor_source = setup_link(df, train_df, data, accuracy, floors)
    scales = _scales(data, law)
    x = data.normalised(scales)
    t0 = time.perf_counter()
    point = point_fit(law, x, data.y)
    t_point = time.perf_counter() - t0
    if method == "point":
        from datalaws.fit.mixing_fit import point_result

        return point_result(law, df, train_df, held_df, holdout, data, scales, x, point,
                            config, columns)
    t0 = time.perf_counter()
    joint = link if acc_mode == "joint" else None
    mcmc = run_nuts(law, x, data.y, config, link=joint, acc=acc if joint else None,
                    init=point, noise=noise)
    t_nuts = time.perf_counter() - t0
    idata = az.from_numpyro(mcmc)
    var_names = [p.name for p in law.params] + (["sigma", "nu"] if config.likelihood ==
                                                 "studentt" else ["sigma"])
    if link is not None and acc_mode == "two-stage":
        add_link(idata, law, x, acc, link, config)
    if link is not None:
        var_names += [v for v in idata.posterior.data_vars if v.startswith("acc_")]
    diag = diagnose(idata, var_names)
    summary = _summary(law, df, train_df, held_df, holdout, data, scales, config, diag,
                       law_priors, noise)
    summary["timings"] = {"point_fit_s": t_point, "nuts_s": t_nuts}
    if link is not None:
        summary["accuracy"] = {"form": link.form, "mode": acc_mode, "tasks": list(link.tasks),
                               "floors": list(link.floors), "floor_source": floor_source,
                               "ref_loss": link.ref_loss}
    result = FitResult(law=law, idata=idata, summary=summary, point=point, link=link)
    summary["params"] = _param_table(result, var_names)
    summary["derived"] = _derived_table(result)
    t0 = time.perf_counter()
    summary["discrepancy"] = _discrepancy(law, data, x, config, point, noise, discrepancy)
    summary["timings"]["backtest_s"] = time.perf_counter() - t0
    if link is not None:
        summary["accuracy"]["pearson"] = _pearson(result, x, acc)
    if len(held_df):
        summary["holdout"] = _holdout_metrics(result, held_df, columns)
    summary["timings"]["total_s"] = time.perf_counter() - t_start
    return result


def _prepare(df: pd.DataFrame, law_name: str, priors: Mapping[str, str], *,
             columns: Mapping[str, str] | None = None, holdout: str | None = None
             ) -> tuple[pd.DataFrame, Law]:
    domains = sorted(c[4:] for c in df.columns if c.startswith("mix."))
    if law_name.startswith("mixing") and not domains:
        raise TableError(f"the {law_name} law needs mix.<domain> columns (training "
                         "proportions)")
    sizes = None
    if law_name.startswith("mixing"):  # checked proportions; size terms only where varied
        from datalaws.fit.mixing_fit import prepare_table

        df, law_name, sizes = prepare_table(df, law_name, domains, columns=columns,
                                            holdout=holdout)
    if law_name == "filtering":
        df = _pool_weights(df)
    if law_name == "mixing_domains":
        df = _eval_rows(df)
    pools = sorted(c[5:] for c in df.columns if c.startswith("pool."))
    evals = sorted(c[5:] for c in df.columns if c.startswith("eval."))
    return df, _build_law(law_name, priors, domains, pools, evals, sizes=sizes)


def _summary(law, df, train_df, held_df, holdout, data, scales, config, diag, law_priors,
             noise) -> dict:
    noise_txt = {k: prior_str(noise.get(k, v)) for k, v in NOISE_PRIORS.items()}
    noise_txt["nu"] = f"2 + {noise_txt['nu']}"
    return {
        "law": law.name, "formula": law.formula, "reference": law.reference,
        "data_hash": table_hash(df), "n_rows": len(train_df), "n_holdout": len(held_df),
        "holdout_expr": holdout, "columns": data.columns, "scales": scales,
        "likelihood": config.likelihood, "config": dataclasses.asdict(config),
        "priors": {p.name: prior_str(p.prior) for p in law.params} | noise_txt,
        "prior_overrides": dict(law_priors) | {k: prior_str(v) for k, v in noise.items()},
        "meanings": {p.name: p.meaning for p in law.params},
        "accuracy": None,
        "diagnostics": {"ok": diag.ok, "checks": diag.checks, "failures": diag.failures()},
    }


def _discrepancy(law: Law, data: LawData, x, config: FitConfig, point, noise,
                 mode: str) -> dict:
    """The summary's discrepancy section: axes, hull, and k (a posterior, or 0 for none)."""
    axis_values = data.inputs[law.axis]
    out = {"mode": mode, "form": DISCREPANCY_FORM, "axis": law.axis,
           "axis_column": data.columns[law.axis], "x_max_fit": float(axis_values.max()),
           "axis_columns": {r: data.columns[r] for a in law.axes for r in a.powers}}
    out |= hull_summary(law, data)
    if mode == "none":
        return out | {"k": 0.0, "k_source": "none (--discrepancy none)", "backtest": [],
                      "backtest_points": [], "backtest_scores": [], "folds": []}
    wide = len(data.y) < max(10, 2 * len(law.params) + 2)
    section, _ = learn_k(law, data, x, config, point, noise=noise,
                         prior_scale=DEFAULT_K_SCALE * (2 if wide else 1))
    return out | section


def _param_table(result: FitResult, var_names: Sequence[str]) -> dict[str, dict]:
    s = az.summary(result.idata, var_names=list(var_names), kind="all",
                   stat_focus="mean", round_to="none")
    samples = result.samples()
    out = {}
    for name, row in s.iterrows():
        base = name.split("[")[0]
        v = samples[base]
        if "[" in name:
            v = v[:, int(name.split("[")[1].rstrip("]"))]
        q05, q50, q95 = np.quantile(v, [0.05, 0.5, 0.95])
        out[name] = {"mean": float(row["mean"]), "sd": float(row["sd"]), "q05": float(q05),
                     "q50": float(q50), "q95": float(q95), "r_hat": float(row["r_hat"]),
                     "ess_bulk": float(row["ess_bulk"]), "ess_tail": float(row["ess_tail"])}
    return out


def _derived_table(result: FitResult) -> dict[str, dict]:
    der = result.law.derived(result.samples(), result.scales)
    return {k: dict(zip(("q05", "q50", "q95"), map(float, np.quantile(np.asarray(v),
                                                                     [0.05, 0.5, 0.95]))))
            | {"mean": float(np.mean(v))} for k, v in der.items()}


def _pearson(result: FitResult, x, acc) -> dict:
    """Posterior of Pearson r between predicted and observed accuracy, over all (run, task)."""
    pp = posterior_predictive(result.law, result.samples(), x,
                              likelihood=result.summary["likelihood"], link=result.link)
    pred = np.stack([pp[f"acc_law.{t}"] for t in result.link.tasks], axis=-1)  # [S, n, T]
    obs = acc
    mask = ~np.isnan(obs)
    rs = np.array([np.corrcoef(p[mask], obs[mask])[0, 1] for p in pred])
    q05, q50, q95 = np.quantile(rs, [0.05, 0.5, 0.95])
    return {"mean": float(rs.mean()), "q05": float(q05), "q50": float(q50), "q95": float(q95)}


def predict(result: FitResult, points: pd.DataFrame, *,
            quantiles: Sequence[float] = DEFAULT_QUANTILES, seed: int = 1) -> pd.DataFrame:
    """Posterior predictive at new points: ``<quantity>_mean`` and ``_qNN`` columns.

    ``loss`` is a new observed run (law + discrepancy beyond the data + noise); ``loss_law`` is
    the law itself; with an accuracy link, ``acc.<task>`` and ``acc_law.<task>`` likewise.
    """
    draws = predictive_draws(result, points, seed=seed)
    out = points.copy()
    for name, d in draws.items():
        out[f"{name}_mean"] = d.mean(axis=0)
        for q, v in zip(quantiles, np.quantile(d, quantiles, axis=0)):
            out[f"{name}_q{round(q * 100):02d}"] = v
    return out


def predictive_draws(result: FitResult, points: pd.DataFrame, *, seed: int = 1
                     ) -> dict[str, np.ndarray]:
    """Draws [samples, rows] of every predicted quantity at ``points``."""
    law = result.law
    cols = {r: c for r, c in result.summary["columns"].items() if r in law.inputs}
    evals = [r[2:] for r in law.inputs if r.startswith("e.")]
    if evals and not any(c.startswith("eval.") for c in points.columns):
        raise TableError(f"points to predict need eval.<domain> weights, the composition whose "
                         f"loss to predict (one-hot for one domain); domains: {evals}")
    domains = [r[2:] for r in law.inputs if r.startswith("r.")]
    if domains:  # known domains; proportions and evaluation weights on the simplex
        from datalaws.fit import mixing

        mixing.check_unknown_mix(points, domains, "the points")
        points = mixing.check_mixtures(points, domains, where="the points")
        if evals:
            mixing.check_eval_weights(points, evals, where="the points")
    points = _law_frame(points, law)
    data = law_data(points, law.inputs, target=None, columns=cols, nonneg=law.unscaled)
    x = data.normalised(result.scales)
    samples = result.samples()
    d, k = _distance_and_k(result, data, len(next(iter(samples.values()))), seed)
    return posterior_predictive(law, samples, x, likelihood=result.summary["likelihood"],
                                link=result.link, distance=d, k=k, seed=seed)


def _distance_and_k(result: FitResult, data: LawData, n_draws: int, seed: int):
    """Distance of each point from the fitted runs' hull in the law's axes, and one k per
    posterior draw (from k's posterior; a fixed k for fits saved before k had one)."""
    s = result.summary["discrepancy"]
    if "hull" not in s:  # older summaries: distance along the law's one axis
        x = np.asarray(data.inputs[result.law.axis], dtype=np.float64)
        return np.maximum(0.0, np.log(x / s["x_max_fit"])), result.k
    axes = [Axis(a["name"], a["powers"], a["log"]) for a in s["axes"]]
    d = disc.hull_offsets(disc.axis_coords(axes, data.inputs), np.asarray(s["hull"]),
                          disc.axis_groups(axes))
    if not s.get("k_draws"):
        return d, s.get("k", 0.0)
    ks = np.asarray(s["k_draws"])
    # one stored k vector per posterior draw, drawn again in a fixed order per seed
    return d, ks[np.random.default_rng(seed).integers(0, len(ks), n_draws)]


def _holdout_metrics(result: FitResult, held: pd.DataFrame, columns) -> dict:
    tasks = list(result.link.tasks) if result.link else []
    data = law_data(held, result.law.inputs, columns=columns, nonneg=result.law.unscaled,
                    tasks=[t for t in tasks if f"acc.{t}" in held.columns])
    draws = predictive_draws(result, held)
    # the point prediction is the law's posterior median: the discrepancy and the noise
    # widen the intervals but do not move it
    out = {name: _scores(draws[key], draws["loss_law"], data.y)
           for name, key in (("loss", "loss"), ("loss_law", "loss_law"))}
    for t, y in data.acc.items():
        ok = ~np.isnan(y)
        if ok.any():
            out[f"acc.{t}"] = _scores(draws[f"acc.{t}"][:, ok], draws[f"acc_law.{t}"][:, ok],
                                      y[ok])
    return out


def _scores(d: np.ndarray, law_draws: np.ndarray, y: np.ndarray) -> dict:
    med = np.median(law_draws, axis=0)
    lo90, hi90 = np.quantile(d, [0.05, 0.95], axis=0)
    return {"n": len(y), "median_abs_err": float(np.median(np.abs(med - y))),
            "mean_abs_err": float(np.mean(np.abs(med - y))),
            "coverage": {str(k): v for k, v in disc.coverage(d, y).items()},
            "mean_width90": float(np.mean(hi90 - lo90)),
            "finite": bool(np.isfinite(d).all())}


def save_idata(idata: az.InferenceData, path: Path) -> None:
    """Write InferenceData as NetCDF atomically (temp file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    idata.to_netcdf(str(tmp))
    tmp.replace(path)


def save_fit(result: FitResult, out: str | Path) -> Path:
    """Write ``posterior.nc``, ``summary.json`` and ``point_fit.json`` into ``out`` atomically."""
    from datalaws.records import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_idata(result.idata, out / "posterior.nc")
    atomic_write_text(out / "point_fit.json", json.dumps(
        {"params": result.point, "derived": {k: float(v) for k, v in result.law.derived(
            result.point, result.scales).items()}, "method": "Huber(1e-3) on log loss, "
         "L-BFGS-B from a grid of starts"}, indent=1))
    from datalaws.io import dumps_json

    # NaN (e.g. r_hat of one chain) becomes null + a "_nonfinite" flag: valid JSON
    atomic_write_text(out / "summary.json", dumps_json(result.summary, indent=1, default=float))
    return out


def load_fit(path: str | Path) -> FitResult:
    """Read a fit directory written by ``save_fit`` (errors name the missing or bad file)."""
    from datalaws.io import loads_json

    path = Path(path)
    for f in ("summary.json", "posterior.nc"):
        if not (path / f).exists():
            raise FileNotFoundError(f"{path / f}: missing; is {path} a `datalaws fit` output?")
    try:
        summary = loads_json((path / "summary.json").read_text())  # NaN flags restored
    except json.JSONDecodeError as e:
        raise ValueError(f"{path / 'summary.json'}: corrupt ({e.msg})") from None
    domains = [r[2:] for r in summary["columns"] if r.startswith("r.")]
    pools = [r[2:] for r in summary["columns"] if r.startswith("w.")]
    evals = [r[2:] for r in summary["columns"] if r.startswith("e.")]
    sizes = [r for r in ("N", "D") if r in summary["columns"]]  # a mixing law's size terms
    # the user's prior overrides rebuild the law (older summaries: every prior, as printed;
    # vector priors such as the mixing laws' print as Independent() and are the defaults)
    priors = summary.get("prior_overrides", summary["priors"])
    law = _build_law(summary["law"], {k: v for k, v in priors.items()
                                      if k not in NOISE_PRIORS and not v.startswith(
                                          ("Independent(", "PooledEffects("))},
                     domains or None, pools or None,
                     evals or None, sizes=sizes if domains else None)
    idata = az.from_netcdf(str(path / "posterior.nc"))
    point = {}
    if (path / "point_fit.json").exists():
        point = json.loads((path / "point_fit.json").read_text())["params"]
    link = None
    if summary.get("accuracy"):
        a = summary["accuracy"]
        link = AccuracyLink(tasks=tuple(a["tasks"]), floors=tuple(a["floors"]), form=a["form"],
                            ref_loss=a["ref_loss"])
    return FitResult(law=law, idata=idata, summary=summary, point=point, link=link)
