"""A fit as people read it: the ``summary.json`` export (parameter and derived tables,
priors as text, the checks). Written beside the fit; never read back as state."""

from __future__ import annotations

import dataclasses

import arviz as az
import numpy as np

from datalaws.fit.laws import NOISE_PRIORS
from datalaws.fit.result import Fit, prior_str

__all__ = ["summary", "param_table", "derived_table", "priors_text"]


def param_table(f: Fit) -> dict[str, dict]:
    """Mean, sd, 5/50/95% quantiles, R-hat and ESS of every sampled quantity (a point fit:
    its values, and the residual spread as sigma)."""
    if f.method == "point":
        flat = {}
        for n, v in f.point.items():  # one row per element, named as ArviZ names them
            vals = np.ravel(v)
            flat |= ({n: float(vals[0])} if np.ndim(v) == 0 else
                     {f"{n}[{k}]": float(e) for k, e in enumerate(vals)})
        flat["sigma"] = float(f.samples()["sigma"][0])
        return {n: {"mean": v, "q05": v, "q50": v, "q95": v} for n, v in flat.items()}
    from datalaws.fit.api import sampled_names

    with np.errstate(invalid="ignore", divide="ignore"):  # fixed elements (blocks): 0 / 0
        s = az.summary(f.idata, var_names=sampled_names(f.law, f.idata, f.likelihood),
                       kind="all", stat_focus="mean", round_to="none")
    samples = f.samples()
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


def derived_table(f: Fit) -> dict[str, dict]:
    """The law's natural-scale constants (e.g. A = a N0^alpha): mean and quantiles."""
    der = f.law.derived(f.samples(), f.scales)
    return {k: dict(zip(("q05", "q50", "q95"), map(float, np.quantile(np.asarray(v),
                                                                     [0.05, 0.5, 0.95]))))
            | {"mean": float(np.mean(v))} for k, v in der.items()}


def priors_text(f: Fit) -> dict[str, str]:
    """Each prior as text, for people (the noise too)."""
    noise = {k: prior_str(f.noise.get(k, v)) for k, v in NOISE_PRIORS.items()}
    noise["nu"] = f"2 + {noise['nu']}"
    return {p.name: prior_str(p.prior) for p in f.law.params} | noise


def summary(f: Fit) -> dict:
    """The export: what ``datalaws fit`` prints and ``summary.json`` holds."""
    law, d = f.law, f.diagnostics
    out = {"law": law.name, "formula": law.formula, "reference": law.reference,
           "method": f.method, **f.data, "columns": f.columns, "scales": f.scales,
           "likelihood": f.likelihood, "config": dataclasses.asdict(f.config),
           "priors": priors_text(f), "meanings": {p.name: p.meaning for p in law.params},
           "accuracy": None, "timings": f.timings,
           "diagnostics": {"ok": d.ok, "checks": d.checks, "failures": d.failures()},
           "params": param_table(f), "derived": derived_table(f),
           "discrepancy": f.discrepancy}
    if f.link is not None:
        out["accuracy"] = dataclasses.asdict(f.link) | (f.accuracy or {})
    if f.holdout:
        out["holdout"] = f.holdout
    if f.method == "point":
        out["point_method"] = ("Huber(1e-3) on log loss, L-BFGS from random starts; intervals "
                               "from the residual spread only (no parameter uncertainty)")
    return out
