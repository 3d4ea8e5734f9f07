"""Sampler diagnostics: R-hat, ESS, divergences and BFMI from ArviZ, each checked."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import arviz as az
import numpy as np

__all__ = ["Diagnostics", "diagnose"]


@dataclasses.dataclass(frozen=True)
class Diagnostics:
    """Each check with its value, threshold and verdict; ``ok`` only if all pass."""

    checks: dict[str, dict]

    @property
    def ok(self) -> bool:
        return all(c["pass"] for c in self.checks.values())

    def failures(self) -> list[str]:
        return [f"{name}: {c['value']:.4g} (needs {c['rule']}; worst: {c.get('where', '-')})"
                for name, c in self.checks.items() if not c["pass"]]

    def to_dict(self) -> dict:
        """{ok, checks, failures}: what a summary stores."""
        return {"ok": self.ok, "checks": self.checks, "failures": self.failures()}


def diagnose(idata: az.InferenceData, var_names: Sequence[str], *, max_rhat: float = 1.01,
             min_ess: float = 400, min_bfmi: float = 0.3) -> Diagnostics:
    """R-hat, bulk/tail ESS, divergences and BFMI from ArviZ, each checked. Elements
    constant over every draw (a fixed value held in a sampled vector, such as the pooled
    effect scales of a law sampled one evaluation domain at a time) are not checked."""
    with np.errstate(invalid="ignore", divide="ignore"):  # fixed elements: 0 / 0
        rhat = az.rhat(idata, var_names=list(var_names))
        ess_bulk = az.ess(idata, var_names=list(var_names), method="bulk")
        ess_tail = az.ess(idata, var_names=list(var_names), method="tail")

    def worst(ds, fn):
        vals = {}
        for v in ds.data_vars:  # elements that never move are fixed, not sampled: skipped
            draws = np.asarray(idata.posterior[v].values)
            moved = np.ptp(draws, axis=(0, 1)) > 0
            if np.any(moved):
                vals[v] = float(fn(np.asarray(ds[v].values)[moved]))
        if not vals:  # nothing moved at all: no sampler ran
            return float("nan"), "-"
        name = (max if fn is np.max else min)(vals, key=vals.get)
        return vals[name], name

    r, r_at = worst(rhat, np.max)
    eb, eb_at = worst(ess_bulk, np.min)
    et, et_at = worst(ess_tail, np.min)
    div = int(idata.sample_stats["diverging"].values.sum())
    bfmi = float(np.min(az.bfmi(idata)))
    return Diagnostics({
        "r_hat": {"value": r, "rule": f"<= {max_rhat}", "pass": bool(r <= max_rhat),
                  "where": r_at},
        "ess_bulk": {"value": eb, "rule": f">= {min_ess}", "pass": bool(eb >= min_ess),
                     "where": eb_at},
        "ess_tail": {"value": et, "rule": f">= {min_ess}", "pass": bool(et >= min_ess),
                     "where": et_at},
        "divergences": {"value": div, "rule": "== 0", "pass": div == 0},
        "bfmi": {"value": bfmi, "rule": f">= {min_bfmi}", "pass": bool(bfmi >= min_bfmi)},
    })
