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
from collections.abc import Mapping, Sequence
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd

from datalaws.fit import discrepancy as disc
from datalaws.fit.infer import (
    AccuracyLink,
    Diagnostics,
    FitConfig,
    diagnose,
    point_fit,
    posterior_predictive,
    run_nuts,
)
from datalaws.fit.laws import DISCREPANCY_FORM, NOISE_PRIORS, Law, get_law, parse_prior
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
               evals: Sequence[str] | None = None) -> Law:
    law = get_law(name, domains=domains, pools=pools, evals=evals)
    return law.with_priors({k: parse_prior(v) for k, v in (priors or {}).items()})


def _tasks(df: pd.DataFrame, accuracy: str | None) -> list[str]:
    if accuracy is None:
        return []
    tasks = sorted(c[4:] for c in df.columns if c.startswith("acc."))
    if not tasks:
        raise TableError(f"--accuracy {accuracy} asks for a loss->accuracy link but the "
                         "table has no acc.<task> columns")
    return tasks


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


def fit(df: pd.DataFrame, law_name: str, *, config: FitConfig = _DEFAULT_CONFIG,
        columns: Mapping[str, str] | None = None, priors: Mapping[str, str] | None = None,
        holdout: str | None = None, discrepancy: str = "backtest",
        accuracy: str | None = None, floors: Mapping[str, float] | None = None) -> FitResult:
    """Fit ``law_name`` to the rows of ``df`` (minus ``holdout``) and check the result.

    Args:
      columns: role -> column overrides, e.g. ``{"N": "N", "D": "D"}`` for published tables.
      priors: parameter -> prior text, e.g. ``{"alpha": "LogNormal(-1, 0.3)"}``.
      holdout: pandas expression selecting rows to hold out and predict.
      discrepancy: ``"backtest"`` (learn k by size-ordered backtesting) or ``"none"``.
      accuracy: ``"sigmoid"`` or ``"exponential"`` to fit acc.<task> columns jointly.
      floors: chance accuracy per task (default 0.25 where not given).
    """
    if discrepancy not in ("backtest", "none"):
        raise ValueError(f"discrepancy={discrepancy!r}; use backtest|none")
    t_start = time.perf_counter()
    domains = sorted(c[4:] for c in df.columns if c.startswith("mix."))
    if law_name.startswith("mixing") and not domains:
        raise TableError(f"the {law_name} law needs mix.<domain> columns (training "
                         "proportions)")
    if law_name == "filtering":
        df = _pool_weights(df)
    if law_name == "mixing_domains":
        df = _eval_rows(df)
    pools = sorted(c[5:] for c in df.columns if c.startswith("pool."))
    evals = sorted(c[5:] for c in df.columns if c.startswith("eval."))
    law = _build_law(law_name, priors, domains, pools, evals)
    train_df, held_df = split_holdout(df, holdout)
    tasks = _tasks(df, accuracy)
    data = law_data(train_df, law.inputs, columns=columns, tasks=tasks,
                    nonneg=law.unscaled)
    n_min = 2 * len(law.params) + 2
    if len(train_df) < n_min:
        raise TableError(f"law {law.name!r} has {len(law.params)} parameters; fit it on at "
                         f"least {n_min} runs (got {len(train_df)})")
    scales = _scales(data, law)
    x = data.normalised(scales)
    link = None
    acc = None
    if tasks:
        floors = dict(floors or {})
        link = AccuracyLink(tasks=tuple(tasks), floors=tuple(floors.get(t, 0.25) for t in tasks),
                            form=accuracy, ref_loss=float(np.median(data.y)))
        acc = np.stack([data.acc[t] for t in tasks], axis=1)

    t0 = time.perf_counter()
    point = point_fit(law, x, data.y)
    t_point = time.perf_counter() - t0
    t0 = time.perf_counter()
    mcmc = run_nuts(law, x, data.y, config, link=link, acc=acc, init=point)
    t_nuts = time.perf_counter() - t0
    idata = az.from_numpyro(mcmc)
    var_names = [p.name for p in law.params] + list(NOISE_PRIORS if config.likelihood ==
                                                    "studentt" else ["sigma"])
    if link is not None:
        var_names += [v for v in idata.posterior.data_vars if v.startswith("acc_")]
    diag = diagnose(idata, var_names)

    axis_values = data.inputs[law.axis]
    summary = {
        "law": law.name, "formula": law.formula, "reference": law.reference,
        "data_hash": table_hash(df), "n_rows": len(train_df), "n_holdout": len(held_df),
        "holdout_expr": holdout, "columns": data.columns, "scales": scales,
        "likelihood": config.likelihood,
        "config": dataclasses.asdict(config),
        "priors": {p.name: prior_str(p.prior) for p in law.params}
        | {k: prior_str(v) for k, v in NOISE_PRIORS.items()},
        "meanings": {p.name: p.meaning for p in law.params},
        "accuracy": None if link is None else {"form": link.form, "tasks": list(link.tasks),
                                               "floors": list(link.floors),
                                               "ref_loss": link.ref_loss},
        "diagnostics": {"ok": diag.ok, "checks": diag.checks, "failures": diag.failures()},
        "timings": {"point_fit_s": t_point, "nuts_s": t_nuts},
    }
    result = FitResult(law=law, idata=idata, summary=summary, point=point, link=link)
    summary["params"] = _param_table(result, var_names)
    summary["derived"] = _derived_table(result)

    t0 = time.perf_counter()
    k, table, points = 0.0, [], []
    if discrepancy == "backtest":
        k, table, points = _learn_k(law, data, config, point)
    summary["timings"]["backtest_s"] = time.perf_counter() - t0
    summary["discrepancy"] = {"mode": discrepancy, "form": DISCREPANCY_FORM,
                              "axis": law.axis, "axis_column": data.columns[law.axis],
                              "x_max_fit": float(axis_values.max()), "k": k,
                              "backtest": table, "backtest_points": points}
    if link is not None:
        summary["accuracy"]["pearson"] = _pearson(result, x, acc)
    if len(held_df):
        summary["holdout"] = _holdout_metrics(result, held_df, columns)
    summary["timings"]["total_s"] = time.perf_counter() - t_start
    return result


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


def _learn_k(law, data, config, point):
    axis = data.inputs[law.axis]
    log_y = np.log(data.y)
    x = data.normalised(_scales(data, law))
    # Backtest fits only feed a 1-D choice of k: two chains and short runs are plenty.
    bt_config = dataclasses.replace(config, chains=min(2, config.chains), warmup=250, draws=250,
                                    progress=False)

    def fit_folds(masks: np.ndarray) -> list[dict[str, np.ndarray]]:
        # All folds in one sampler: the law with a leading fold axis, each fold's likelihood
        # masked to its rows. Folds keep the full fit's input scales and its point init.
        mcmc = run_nuts(law, x, data.y, bt_config, init=point, mask=masks)
        s = {k: np.asarray(v) for k, v in mcmc.get_samples().items()}
        return [{k: v[:, f, 0] for k, v in s.items()} for f in range(len(masks))]

    def predict_fold(samples, test):
        pp = posterior_predictive(law, samples, {r: v[test] for r, v in x.items()},
                                  likelihood=config.likelihood)
        return np.log(pp["loss"])

    if config.progress:
        print("learning the discrepancy scale k by size-ordered backtesting ...", flush=True)
    folds = disc.run_backtest(axis, fit_folds, predict_fold, log_y, min_fit=2 * len(law.params) + 2)
    k = disc.choose_k(folds)
    if not folds:
        import warnings

        warnings.warn(f"no size-ordered backtest was possible ({len(axis)} runs, "
                      f"{len(np.unique(axis))} distinct {law.axis}; each fold needs "
                      f"{2 * len(law.params) + 2} runs below its cut): k = 0, so intervals "
                      "beyond the data are NOT widened", stacklevel=3)
    elif config.progress:
        print(f"k = {k:.4g} from {len(folds)} backtest folds", flush=True)
    return k, disc.backtest_table(folds, k), disc.backtest_points(folds, k)


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
    points = _law_frame(points, law)
    data = law_data(points, law.inputs, target=None, columns=cols, nonneg=law.unscaled)
    x = data.normalised(result.scales)
    d = disc.distance(data.inputs[law.axis], result.summary["discrepancy"]["x_max_fit"])
    return posterior_predictive(law, result.samples(), x, likelihood=result.summary["likelihood"],
                                link=result.link, distance=d, k=result.k, seed=seed)


def _holdout_metrics(result: FitResult, held: pd.DataFrame, columns) -> dict:
    y = law_data(held, result.law.inputs, columns=columns, nonneg=result.law.unscaled).y
    draws = predictive_draws(result, held)
    # the point prediction is the law's posterior median: the discrepancy and the noise
    # widen the intervals but do not move it
    med = np.median(draws["loss_law"], axis=0)
    out = {}
    for name, key in (("loss", "loss"), ("loss_law", "loss_law")):
        d = draws[key]
        lo90, hi90 = np.quantile(d, [0.05, 0.95], axis=0)
        out[name] = {
            "n": len(y),
            "median_abs_err": float(np.median(np.abs(med - y))),
            "mean_abs_err": float(np.mean(np.abs(med - y))),
            "coverage": {str(k): v for k, v in disc.coverage(d, y).items()},
            "mean_width90": float(np.mean(hi90 - lo90)),
        }
    return out


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
    atomic_write_text(out / "summary.json", json.dumps(result.summary, indent=1, default=float))
    return out


def load_fit(path: str | Path) -> FitResult:
    """Read a fit directory written by ``save_fit`` (errors name the missing or bad file)."""
    path = Path(path)
    for f in ("summary.json", "posterior.nc"):
        if not (path / f).exists():
            raise FileNotFoundError(f"{path / f}: missing; is {path} a `datalaws fit` output?")
    try:
        summary = json.loads((path / "summary.json").read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path / 'summary.json'}: corrupt ({e.msg})") from None
    domains = [r[2:] for r in summary["columns"] if r.startswith("r.")]
    pools = [r[2:] for r in summary["columns"] if r.startswith("w.")]
    evals = [r[2:] for r in summary["columns"] if r.startswith("e.")]
    law = _build_law(summary["law"], {k: v for k, v in summary["priors"].items()
                                      if k not in NOISE_PRIORS}, domains or None, pools or None,
                     evals or None)
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
