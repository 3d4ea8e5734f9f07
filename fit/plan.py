"""Uncertainty-aware compute planning: the model size and tokens for a FLOP budget.

For a budget C (FLOPs, ``C = 6 N D``) every candidate size N gets ``D = C / (6N)`` tokens;
the fitted posterior (with the discrepancy term beyond the data) gives predictive draws of
loss — or, with an accuracy link, of downstream accuracy — at each candidate. The plan
minimises expected loss (``objective="mean"``) or a chosen quantile (``"q90"`` of loss: the
risk-averse choice, equivalent to a low quantile of accuracy). Candidates are a fine
log-spaced grid (continuous) and, when given, the model presets (snapped).

The planner searches only the sizes the user allows (``min_params``/``max_params``; by
default from the smallest trained size to ``MAX_PARAMS_FACTOR`` x the largest) and says so when
the optimum lies outside. Every candidate carries its extrapolation distance from the fitted
runs; loss objectives use the discrepancy-aware predictive with common random numbers (one
discrepancy and noise draw per posterior draw for all candidates), so quantiles are smooth in
N. The runner-up is the best allowed plan at least 2x away in size; ``why`` says in words why
the pick beats it.

The default it is compared with is the point-fit (Huber + L-BFGS) compute-optimal plan, as
Hoffmann et al. and Epoch would choose; ``p_beats_default`` is the posterior probability
that the plan's loss (law + discrepancy, same draws) is below the default's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from datalaws.fit.api import predictive_draws
from datalaws.fit.mixture import eval_weights
from datalaws.fit.result import Fit
from datalaws.fit.table import law_data
from datalaws.fit.trust import (
    backtest_coverage_at,
    crn_log_loss,
    extrapolation_distance,
    in_words,
    trained_range,
)

__all__ = ["Plan", "plan", "plan_fit", "parse_objective", "allowed_range",
           "budget_from_gpu_hours", "pool_frontier", "MAX_PARAMS_FACTOR"]


@dataclasses.dataclass
class Plan:
    """The chosen candidate, the ranked candidates, the runner-up and the default."""

    chosen: dict  # snapped to a preset when presets were given, else the continuous best
    continuous: dict  # the best size on the continuous grid (inside the allowed range)
    candidates: pd.DataFrame  # ranked, best first; `allowed` marks the trust region
    default: dict
    p_beats_default: float
    objective: str
    budget: float
    runner_up: dict | None = None  # best allowed plan at least 2x away in size
    p_beats_runner_up: float | None = None
    why: str = ""  # in words: why the pick beats the runner-up
    trust: dict = dataclasses.field(default_factory=dict)  # range, distance, backtest coverage
    warnings: list[str] = dataclasses.field(default_factory=list)
    metric: str = "loss"
    mixture: dict | None = None  # best_mixture at the plan, when the law reads the mixture

    def to_dict(self) -> dict:
        return {"objective": self.objective, "metric": self.metric,
                "budget_flops": self.budget, "chosen": self.chosen,
                "continuous": self.continuous, "runner_up": self.runner_up,
                "p_beats_runner_up": self.p_beats_runner_up,
                "p_beats_runner_up_words": (None if self.p_beats_runner_up is None
                                            else in_words(self.p_beats_runner_up)),
                "why": self.why, "default": self.default,
                "p_beats_default": self.p_beats_default, "trust": self.trust,
                "warnings": self.warnings, "mixture": self.mixture,
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


# The default trust region: no smaller than the smallest trained model (the law has not been
# checked below it, and planning there only dodges the discrepancy term) and no larger than
# MAX_PARAMS_FACTOR x the largest (beyond two decades no backtest has ever been checked).
MAX_PARAMS_FACTOR = 100.0


def allowed_range(result: Fit, min_params: float | None = None,
                  max_params: float | None = None) -> dict:
    """The sizes the planner may choose: given, or the defaults tied to the trained range."""
    try:
        n_lo, n_hi = trained_range(result, "N")
    except ValueError:
        if min_params is None or max_params is None:
            raise
        n_lo = n_hi = float("nan")
    lo = float(min_params) if min_params is not None else n_lo
    hi = float(max_params) if max_params is not None else n_hi * MAX_PARAMS_FACTOR
    if not (0 < lo < hi):
        raise ValueError(f"--min-params {lo:.3g} / --max-params {hi:.3g}: need 0 < min < max")
    rule = ("given" if min_params is not None and max_params is not None else
            f"default: from the smallest trained size to {MAX_PARAMS_FACTOR:g}x the largest")
    return {"min_params": lo, "max_params": hi, "trained_min_params": n_lo,
            "trained_max_params": n_hi, "rule": rule}


def _frame(result: Fit, N: np.ndarray, D: np.ndarray, unique: float | None,
           mixture: dict[str, float] | None = None,
           evals: dict[str, float] | None = None) -> pd.DataFrame:
    """Candidate runs as a table in the fit's own columns."""
    cols, law = result.columns, result.law
    inputs = law.inputs
    mix_roles = {d: law.role("domains", d) for d in law.domains}
    eval_roles = [law.role("evals", e) for e in law.evals]
    missing = set(inputs) - {"N", "D", "U", "repetitions", *mix_roles.values(), *eval_roles}
    if missing:
        raise ValueError(f"law {result.law.name!r} also needs {sorted(missing)}; the planner "
                         "searches size and tokens only for this law")
    if mix_roles and mixture is None:
        raise ValueError(f"law {result.law.name!r} depends on the mixture: give --mixture "
                         "(datalaws then also reports the best mixture at the plan)")
    weights = eval_weights(result.law, evals)
    frame = pd.DataFrame({cols["N"]: N})
    for d, r in mix_roles.items():
        frame[cols[r]] = float((mixture or {}).get(d, 0.0))
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


def _metric_draws(result: Fit, frame: pd.DataFrame, metric: str, seed: int
                  ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Predictive draws [S, n] of ``metric``: for loss the discrepancy-aware predictive with
    common random numbers (smooth in N, so the argmin is not Monte Carlo noise)."""
    draws = predictive_draws(result, frame, seed=seed)
    if metric == "loss":
        return np.exp(crn_log_loss(result, frame, seed=seed)[0]), draws
    if metric not in draws:
        raise ValueError(f"metric {metric!r} not predicted by this fit; have {sorted(draws)}")
    return draws[metric], draws


def _score(y: np.ndarray, kind: str, q: float | None, sign: float) -> np.ndarray:
    if kind == "mean":
        return sign * y.mean(axis=0)
    return sign * np.quantile(y, q if sign > 0 else 1 - q, axis=0)


def _candidates(result: Fit, budget: float, grid: int, sizes, unique_tokens,
                edges: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, list]:
    """Sizes on a wide log grid with the allowed range's edges (and the presets), each with
    D = budget / 6N tokens."""
    n_fit = result.scales["N"]
    Ns = np.unique(np.concatenate([np.geomspace(n_fit / 1e3, n_fit * 1e4, grid), edges]))
    names: list = [None] * len(Ns)
    if sizes:
        Ns = np.concatenate([Ns, list(sizes.values())])
        names += list(sizes)
    D = budget / (6 * Ns)
    keep = D >= 1
    if unique_tokens is not None and "U" not in result.law.inputs:
        keep &= D <= unique_tokens  # no repetition model: stay within the unique tokens
    if not keep.any():
        raise ValueError(f"no candidate fits budget {budget:.3g} FLOPs with the constraints")
    return Ns[keep], D[keep], [n for n, k in zip(names, keep) if k]


def _as_dict(row) -> dict:
    d = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
    d["preset"] = d["preset"] if isinstance(d["preset"], str) else None  # NaN: no preset
    return d


def plan(result: Fit, budget: float, *, objective: str = "mean",
         sizes: dict[str, float] | None = None, unique_tokens: float | None = None,
         metric: str = "loss", grid: int = 400, seed: int = 0,
         mixture: dict[str, float] | None = None, evals: dict[str, float] | None = None,
         min_params: float | None = None, max_params: float | None = None) -> Plan:
    """Best (N, D = budget / 6N) inside the allowed sizes; see the module docstring."""
    if budget <= 0 or not np.isfinite(budget):
        raise ValueError(f"budget={budget}: FLOPs must be a positive number")
    kind, q = parse_objective(objective)
    trust = allowed_range(result, min_params, max_params)
    Ns, D, names = _candidates(result, budget, grid, sizes, unique_tokens,
                               (trust["min_params"], trust["max_params"]))
    frame = _frame(result, Ns, D, unique_tokens, mixture, evals)
    y, draws = _metric_draws(result, frame, metric, seed)
    sign = -1.0 if metric.startswith("acc") else 1.0  # minimise loss, maximise accuracy
    score = _score(y, kind, q, sign)
    qs = np.quantile(y, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
    allowed = (Ns >= trust["min_params"] * (1 - 1e-9)) & (Ns <= trust["max_params"] * (1 + 1e-9))
    if not allowed.any():
        raise ValueError(f"no size in [{trust['min_params']:.3g}, {trust['max_params']:.3g}] "
                         f"parameters has at least one token at {budget:.3g} FLOPs")
    cand = pd.DataFrame({"preset": names, "params": Ns, "tokens": D, "tokens_per_param": D / Ns,
                         "distance": extrapolation_distance(result, frame), "allowed": allowed,
                         f"{metric}_mean": y.mean(axis=0), f"{metric}_q05": qs[0],
                         f"{metric}_q25": qs[1], f"{metric}_q50": qs[2], f"{metric}_q75": qs[3],
                         f"{metric}_q95": qs[4], "score": score, "row": np.arange(len(Ns))})
    cand = cand.iloc[np.argsort(score, kind="stable")].reset_index(drop=True)
    ok = cand[cand.allowed]
    pick = ok[ok.preset.notna()] if sizes and ok.preset.notna().any() else ok[ok.preset.isna()]
    chosen, continuous = _as_dict(pick.iloc[0]), _as_dict(ok[ok.preset.isna()].iloc[0])
    outside = _optimum_outside(cand, trust)
    runner = pick[np.abs(np.log(pick.params / chosen["params"])) >= np.log(2) - 1e-9]
    runner_up = _as_dict(runner.iloc[0]) if len(runner) else None
    p_runner = None
    if runner_up is not None:
        a, b = y[:, chosen["row"]], y[:, runner_up["row"]]
        p_runner = float(np.mean(sign * a < sign * b))
    default, p_default = _versus_point_fit(result, frame, chosen["row"], metric, sign, seed)
    chosen["accuracy"] = _accuracy(draws, chosen["row"])
    for c in (chosen, continuous, runner_up or {}):
        c.pop("row", None)
    trust |= {"distance": chosen["distance"], "optimum_outside": outside,
              "backtest": backtest_coverage_at(result, chosen["distance"])}
    return Plan(chosen=chosen, continuous=continuous, candidates=cand.drop(columns="row"),
                default=default, p_beats_default=p_default, objective=objective,
                budget=budget, runner_up=runner_up, p_beats_runner_up=p_runner,
                why=_why(chosen, runner_up, p_runner, objective, metric, outside),
                trust=trust, warnings=_warnings(result, chosen, trust), metric=metric)


def _optimum_outside(cand: pd.DataFrame, trust: dict) -> str | None:
    """Where the unconstrained optimum lies, when it is not inside the allowed sizes."""
    best = cand[cand.preset.isna()].iloc[0]
    if best.allowed:
        return None
    side = "below --min-params" if best.params < trust["min_params"] else "above --max-params"
    return (f"the objective's optimum without limits is {best.params:.3g} parameters, "
            f"{side} ({trust['min_params']:.3g}-{trust['max_params']:.3g}): the plan is the "
            "best size inside the range; widen it with --min-params/--max-params to accept "
            "a plan the fitted runs say nothing about")


def _versus_point_fit(result: Fit, frame: pd.DataFrame, best: int, metric: str,
                      sign: float, seed: int) -> tuple[dict, float]:
    """The point fit's compute-optimal size at this budget and P(plan beats it)."""
    law = result.law
    cols = {r: c for r, c in result.columns.items() if r in law.inputs}
    x = law_data(frame, law.inputs, target=None, columns=cols,
                 nonneg=law.unscaled).normalised(result.scales)
    point_loss = np.asarray(law.fn(x, {k: np.asarray(v) for k, v in result.point.items()}))
    d_idx = int(np.argmin(point_loss))
    d_draws = predictive_draws(result, frame.iloc[[d_idx, best]], seed=seed)
    key = "loss_law" if metric == "loss" else metric.replace("acc.", "acc_law.")
    p = float(np.mean(sign * d_draws[key][:, 1] < sign * d_draws[key][:, 0]))
    n_col = result.columns["N"]
    d_col = result.columns.get("D")
    n = float(frame[n_col].iloc[d_idx])
    tokens = float(frame[d_col].iloc[d_idx]) if d_col in frame else float("nan")
    return {"params": n, "tokens": tokens, "point_fit_loss": float(point_loss[d_idx])}, p


def _accuracy(draws: dict[str, np.ndarray], row: int) -> dict:
    out = {}
    for name, d in draws.items():
        if name.startswith("acc.") or name.startswith("acc_mean"):
            qs = np.quantile(d[:, row], [0.05, 0.25, 0.5, 0.75, 0.95])
            out[name] = dict(zip(("q05", "q25", "q50", "q75", "q95"), map(float, qs)))
    return out


def _why(chosen: dict, runner: dict | None, p: float | None, objective: str, metric: str,
         outside: str | None) -> str:
    """The pick against the runner-up, in words."""
    def name(c):
        return (c["preset"] + " " if c.get("preset") else "") + f"({c['params']:.3g} params, " \
            f"{c['tokens']:.3g} tokens)"

    if runner is None:
        return (f"{name(chosen)} is the only size inside the allowed range at this budget"
                + (f"; {outside}" if outside else ""))
    goal = "expected" if objective == "mean" else f"{objective} (risk-averse)"
    better = "lower" if not metric.startswith("acc") else "higher"
    text = (f"{name(chosen)} beats the runner-up {name(runner)}: its {goal} {metric} is "
            f"{better} ({chosen['score'] if better == 'lower' else -chosen['score']:.4g} vs "
            f"{runner['score'] if better == 'lower' else -runner['score']:.4g}); it has the "
            f"{better} {metric} in {100 * p:.0f}% of posterior draws ({in_words(p)})")
    dd = runner["distance"] - chosen["distance"]
    if abs(dd) > 0.05:
        text += (f"; the runner-up lies {'farther beyond' if dd > 0 else 'closer to'} the "
                 f"fitted runs (distance {runner['distance']:.2f} vs "
                 f"{chosen['distance']:.2f}), so its interval is "
                 f"{'wider' if dd > 0 else 'narrower'}")
    if p < 0.5:
        text += (f". The runner-up is more often better ({100 * (1 - p):.0f}% of draws) but "
                 f"its bad cases are worse: the pick is the safer choice the {goal} objective "
                 "asks for")
    elif p < 0.66:
        text += "; the two are close: either is a defensible choice"
    return text + (f". Note: {outside}" if outside else "")


def _warnings(result: Fit, chosen: dict, trust: dict) -> list[str]:
    out = []
    if not result.diagnostics.ok:
        out.append("sampler diagnostics failed: " + "; ".join(result.diagnostics.failures()))
    if chosen["distance"] > 0:
        out.append(f"beyond the data: the plan lies {chosen['distance']:.2f} (log units) "
                   "outside the fitted runs; its interval includes the learned discrepancy")
    bt = trust["backtest"]
    if bt.get("beyond_backtest") or not bt.get("n"):
        out.append(bt["note"])
    if trust["optimum_outside"]:
        out.append(trust["optimum_outside"])
    samples = result.samples()
    for name in ("gamma", "delta"):
        lo, hi = np.quantile(samples[name], [0.05, 0.95]) if name in samples else (0, 0)
        if lo < 0 < hi:
            out.append(f"quality effect {name}: its 90% interval [{lo:.3g}, "
                       f"{hi:.3g}] spans zero; the data cannot tell its sign")
    return out


def pool_frontier(result: Fit, tokens: Sequence[float],
                  unique_tokens: Mapping[str, float], *, seed: int = 0) -> pd.DataFrame:
    """How much to filter at each budget (filtering-law fits): the best filtering level (the
    union of the k best pools, ``unique_tokens`` ordered best first) per budget, with its
    posterior probability of being best. See ``datalaws.fit.filtering.plan_filtering``."""
    from datalaws.fit.filtering import plan_filtering

    return plan_filtering(result, tokens, unique_tokens, seed=seed).best


def budget_from_gpu_hours(hours: float, hardware: str, mfu: float) -> float:
    """FLOPs from GPU-hours at a measured MFU and the chip's dense bf16 peak."""
    from datalaws.hardware import PEAK_BF16, peak_of

    peak = peak_of(hardware)
    if peak is None or hardware.lower() == "cpu":
        raise ValueError(f"--hardware {hardware!r}: choose from {sorted(PEAK_BF16)[:-1]}")
    if not 0 < mfu <= 1:
        raise ValueError(f"--mfu {mfu}: must be in (0, 1]")
    return hours * 3600 * peak * mfu


def plan_fit(result: Fit, budget: float, *, objective: str = "mean",
             mixture: Mapping[str, float] | None = None,
             evals: Mapping[str, float] | None = None, **options) -> Plan:
    """``plan`` for a fit as ``datalaws plan`` asks it: ``mixture`` (a mixing law fitted over
    sizes) names known domains, and the plan carries the best mixture at the chosen size and
    tokens (``Plan.mixture``, with P(beats ``mixture``)). ``options`` go to ``plan``."""
    law = result.law
    unknown = sorted(set(mixture or {}) - set(law.domains))
    if unknown:
        raise ValueError(f"--mixture: unknown domain(s) {unknown}; the {law.name} fit knows "
                         f"{list(law.domains) or 'no mixture domains'}")
    p = plan(result, budget, objective=objective, mixture=mixture, evals=evals, **options)
    if mixture is not None:
        from datalaws.fit.mixture import best_mixture

        q = None if objective == "mean" else int(objective[1:]) / 100
        p.mixture = best_mixture(result, params=p.chosen["params"], tokens=p.chosen["tokens"],
                                 quantile=q, default=mixture, evals=evals)
    return p
