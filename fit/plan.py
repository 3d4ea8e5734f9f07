"""Uncertainty-aware compute planning: the model size and tokens for a FLOP budget.

For a budget C (FLOPs, ``C = 6 N D``) every candidate size N gets ``D = C / (6N)`` tokens;
the fitted posterior (with the discrepancy term beyond the data) gives predictive draws of
loss — or, with an accuracy link, of downstream accuracy — at each candidate. The plan
minimises expected loss (``objective="mean"``) or a chosen quantile (``"q90"`` of loss: the
risk-averse choice, equivalent to a low quantile of accuracy). Candidates are a fine
log-spaced grid (continuous) and, when given, the model presets (snapped).

The default it is compared with is the point-fit (Huber + L-BFGS) compute-optimal plan, as
Hoffmann et al. and Epoch would choose; ``p_beats_default`` is the posterior probability
that the plan's loss (law + discrepancy, same draws) is below the default's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from datalaws.fit.api import FitResult, predictive_draws
from datalaws.fit.mixture import eval_weights
from datalaws.fit.table import law_data

__all__ = ["Plan", "plan", "parse_objective", "budget_from_gpu_hours", "pool_frontier"]


@dataclasses.dataclass
class Plan:
    """The chosen candidate, the ranked candidates and the comparison with the default."""

    chosen: dict  # snapped to a preset when presets were given, else the continuous best
    continuous: dict  # the best size on the continuous grid
    candidates: pd.DataFrame  # ranked, best first
    default: dict
    p_beats_default: float
    objective: str
    budget: float

    def to_dict(self) -> dict:
        return {"objective": self.objective, "budget_flops": self.budget,
                "chosen": self.chosen, "continuous": self.continuous, "default": self.default,
                "p_beats_default": self.p_beats_default,
                "candidates": self.candidates.head(15).to_dict(orient="records")}

    def launch_snippet(self) -> str:
        c = self.chosen
        lines = ["# datalaws sweep spec for the planned run", "[grid]"]
        if c.get("preset"):
            lines.append(f'preset = ["{c["preset"]}"]')
        else:
            lines.append(f"# no preset: a model of {c['params']:.3g} parameters")
        lines.append(f"tokens = [{c['tokens']:.4g}]")
        return "\n".join(lines) + "\n"


def parse_objective(text: str) -> tuple[str, float | None]:
    """``"mean"`` or ``"qNN"`` (a quantile of loss; q90 is risk-averse)."""
    if text == "mean":
        return "mean", None
    if text.startswith("q") and text[1:].isdigit() and 0 < int(text[1:]) < 100:
        return "quantile", int(text[1:]) / 100
    raise ValueError(f"--objective {text!r}: use mean or qNN, e.g. q90 (risk-averse on loss)")


def _frame(result: FitResult, N: np.ndarray, D: np.ndarray, unique: float | None,
           mixture: dict[str, float] | None = None,
           evals: dict[str, float] | None = None) -> pd.DataFrame:
    """Candidate runs as a table in the fit's own columns."""
    cols = result.summary["columns"]
    inputs = result.law.inputs
    mix_roles = [r for r in inputs if r.startswith("r.")]
    eval_roles = [r for r in inputs if r.startswith("e.")]
    missing = set(inputs) - {"N", "D", "U", "repetitions", *mix_roles, *eval_roles}
    if missing:
        raise ValueError(f"law {result.law.name!r} also needs {sorted(missing)}; the planner "
                         "searches size and tokens only for this law")
    if mix_roles and mixture is None:
        raise ValueError(f"law {result.law.name!r} depends on the mixture: give --mixture "
                         "(datalaws then also reports the best mixture at the plan)")
    weights = eval_weights(result.law, evals)
    frame = pd.DataFrame({cols["N"]: N})
    for r in mix_roles:
        frame[cols[r]] = float((mixture or {}).get(r[2:], 0.0))
    for e, w in weights.items():
        frame[f"eval.{e}"] = w
    if "D" in inputs:
        frame[cols["D"]] = D
    if "U" in inputs:  # the data-constrained law: repetitions from the unique budget
        if unique is None:
            raise ValueError(f"law {result.law.name!r} needs --unique-tokens")
        frame[cols["U"]] = np.minimum(unique, D)
        frame[cols["repetitions"]] = np.maximum(D / unique, 1.0)
    return frame


def plan(result: FitResult, budget: float, *, objective: str = "mean",
         sizes: dict[str, float] | None = None, unique_tokens: float | None = None,
         metric: str = "loss", grid: int = 400, seed: int = 0,
         mixture: dict[str, float] | None = None,
         evals: dict[str, float] | None = None) -> Plan:
    """Best (N, D = budget / 6N) under the posterior; see the module docstring."""
    if budget <= 0 or not np.isfinite(budget):
        raise ValueError(f"budget={budget}: FLOPs must be a positive number")
    kind, q = parse_objective(objective)
    n_fit = result.scales["N"]
    Ns = np.geomspace(n_fit / 1e3, n_fit * 1e4, grid)
    names = [None] * grid
    if sizes:
        Ns = np.concatenate([Ns, list(sizes.values())])
        names += list(sizes)
    D = budget / (6 * Ns)
    keep = D >= 1
    if unique_tokens is not None and "U" not in result.law.inputs:
        keep &= D <= unique_tokens  # no repetition model: stay within the unique tokens
    Ns, D, names = Ns[keep], D[keep], [n for n, k in zip(names, keep) if k]
    if len(Ns) == 0:
        raise ValueError(f"no candidate fits budget {budget:.3g} FLOPs with the constraints")
    frame = _frame(result, Ns, D, unique_tokens, mixture, evals)
    draws = predictive_draws(result, frame, seed=seed)
    y = draws[metric] if metric in draws else None
    if y is None:
        raise ValueError(f"metric {metric!r} not predicted by this fit; have {sorted(draws)}")
    sign = -1.0 if metric.startswith("acc") else 1.0  # minimise loss, maximise accuracy
    if kind == "mean":
        score = sign * y.mean(axis=0)
    else:
        score = sign * np.quantile(y, q if sign > 0 else 1 - q, axis=0)
    qs = np.quantile(y, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
    cand = pd.DataFrame({"preset": names, "params": Ns, "tokens": D, "tokens_per_param": D / Ns,
                         f"{metric}_mean": y.mean(axis=0), f"{metric}_q05": qs[0],
                         f"{metric}_q25": qs[1], f"{metric}_q50": qs[2], f"{metric}_q75": qs[3],
                         f"{metric}_q95": qs[4], "score": score})
    order = np.argsort(score, kind="stable")
    cand = cand.iloc[order].reset_index(drop=True)
    preset_rows = cand[cand.preset.notna()]
    chosen_row = preset_rows.iloc[0] if sizes else cand.iloc[0]
    best_idx = order[0] if not sizes else int(np.flatnonzero(np.array(names) ==
                                                             chosen_row.preset)[0])

    # default: the point fit's compute-optimal size at this budget
    law = result.law
    cols = {r: c for r, c in result.summary["columns"].items() if r in law.inputs}
    x = law_data(frame, law.inputs, target=None, columns=cols,
                 nonneg=law.unscaled).normalised(result.scales)
    point_loss = np.asarray(law.fn(x, {k: np.asarray(v) for k, v in result.point.items()}))
    d_idx = int(np.argmin(point_loss))
    d_draws = predictive_draws(result, frame.iloc[[d_idx, best_idx]], seed=seed)
    law_key = "loss_law" if metric == "loss" else metric.replace("acc.", "acc_law.")
    default_y, plan_y = d_draws[law_key][:, 0], d_draws[law_key][:, 1]
    p_beats = float(np.mean(sign * plan_y < sign * default_y))
    def as_dict(row):
        d = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        d["preset"] = d["preset"] if isinstance(d["preset"], str) else None  # NaN: no preset
        return d

    chosen = as_dict(chosen_row)
    continuous = as_dict(cand[cand.preset.isna()].iloc[0])
    default = {"params": float(Ns[d_idx]), "tokens": float(D[d_idx]),
               "point_fit_loss": float(point_loss[d_idx])}
    return Plan(chosen=chosen, continuous=continuous, candidates=cand, default=default,
                p_beats_default=p_beats, objective=objective, budget=budget)


def pool_frontier(result: FitResult, tokens: Sequence[float],
                  unique_tokens: Mapping[str, float], *, seed: int = 0) -> pd.DataFrame:
    """The quality-quantity trade-off: for each token budget, each pool's predicted loss
    (repeating its ``unique_tokens`` as often as the budget needs) and the best pool."""
    pools = [r[2:] for r in result.law.inputs if r.startswith("w.")]
    if not pools:
        raise ValueError(f"law {result.law.name!r} has no pools; fit the filtering law")
    unknown = set(unique_tokens) - set(pools)
    if unknown:
        raise ValueError(f"pools {sorted(unknown)} were not in the fit; it has {pools}")
    cols = result.summary["columns"]
    rows = []
    for n in tokens:
        frame = pd.DataFrame([{cols["n"]: n, cols["repetitions"]: n / u, "pool": p}
                              for p, u in unique_tokens.items()])
        draws = predictive_draws(result, frame, seed=seed)["loss_law"]
        med = np.median(draws, axis=0)
        best = int(np.argmin(med))
        p_best = float(np.mean(np.argmin(draws, axis=1) == best))
        row = {"tokens": n, "best_pool": frame.pool[best], "p_best": p_best}
        row |= {f"loss_q50.{p}": float(m) for p, m in zip(frame.pool, med)}
        rows.append(row)
    return pd.DataFrame(rows)


def budget_from_gpu_hours(hours: float, hardware: str, mfu: float) -> float:
    """FLOPs from GPU-hours at a measured MFU and the chip's dense bf16 peak."""
    from datalaws.hardware import PEAK_BF16, peak_of

    peak = peak_of(hardware)
    if peak is None or hardware.lower() == "cpu":
        raise ValueError(f"--hardware {hardware!r}: choose from {sorted(PEAK_BF16)[:-1]}")
    if not 0 < mfu <= 1:
        raise ValueError(f"--mfu {mfu}: must be in (0, 1]")
    return hours * 3600 * peak * mfu
