"""``datalaws next``: the small runs that most narrow the prediction at a target, per FLOP.

Bayesian experimental design on the posterior draws. The quantity of interest is the log loss
of the target run (N*, D*). Its predictive variance today is

    V = Var_s[log L_law(x*; theta_s)] + E[sum_g k_g^2 d_g(x*)^2] + sigma^2,

the spread of the law over posterior draws, the discrepancy beyond the fitted runs (d_g: the
extrapolation distance per axis group the fit uses, k_g its posterior scale) and the
run-to-run noise. Training a candidate run x_j adds an observation y_j = log L(x_j) + noise.
Linearised (the joint distribution of the law's values at the target and at every candidate,
taken Gaussian with the covariance of the posterior draws: an ensemble Kalman update), its
expected effect on the law term is

    Var(g | y_A) = Var(g) - C_gA (C_AA + sigma^2 I)^-1 C_Ag,

which for a Gaussian is the expected information gain 0.5 log(V_before / V_after) about the
target. A run also moves the edge of the data: the target's distance is recomputed from the
fitted runs plus the chosen ones, so runs toward the target shrink the discrepancy term too.

Runs are chosen greedily under the FLOP budget (C = 6 N D per run), by variance reduction per
FLOP, and, as the budgeted-greedy rule asks, compared with picking by reduction alone; the
set that ends with the smaller variance wins. The order of the picks is their rank.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from datalaws.fit.api import predictive_draws
from datalaws.fit.result import Fit
from datalaws.fit.trust import discrepancy_var, extrapolation_distance, trained_range

__all__ = ["Design", "next_runs", "candidate_grid", "chinchilla_grid", "Z90"]

Z90 = 1.6448536269514722  # the 90% central interval is +-Z90 sd on the log scale
TOKENS_PER_PARAM = (2.0, 5.0, 10.0, 20.0, 40.0, 80.0)


@dataclasses.dataclass
class Design:
    """The ranked runs to train next and what they are expected to do at the target."""

    target: dict  # params, tokens (and mixture), with today's predictive median and sd
    budget: float
    runs: pd.DataFrame  # the picks, in order: rank, preset, params, tokens, flops, sd after...
    candidates: pd.DataFrame  # every candidate alone: its variance reduction and cost
    sd_now: float  # predictive sd of log loss at the target today
    sd_after: float  # expected after training the picks
    rule: str  # which greedy rule won

    def width90(self, sd: float) -> float:
        """The 90% interval's width in loss units at the target's median."""
        m = self.target["loss_q50"]
        return float(m * (np.exp(Z90 * sd) - np.exp(-Z90 * sd)))

    def to_dict(self) -> dict:
        return {"target": self.target, "budget_flops": self.budget, "rule": self.rule,
                "sd_log_now": self.sd_now, "sd_log_after": self.sd_after,
                "width90_now": self.width90(self.sd_now),
                "width90_after": self.width90(self.sd_after),
                "runs": self.runs.to_dict(orient="records")}

    def sweep_spec(self, like: Mapping | None = None, mixture: str | None = None) -> str:
        """A sweep spec (TOML) with one [[runs]] table per pick; ``like``: an existing spec
        whose ``out`` and [defaults] (data store, seq_len, tasks, ...) the runs share;
        ``mixture``: the training mixture of runs whose law does not choose one."""
        like = dict(like or {})
        t = self.target
        lines = [f"# datalaws next: the runs that most narrow the 90% interval at "
                 f"N = {t['params']:.3g}, D = {t['tokens']:.3g}",
                 f"# expected 90% width {self.width90(self.sd_now):.4g} -> "
                 f"{self.width90(self.sd_after):.4g} (loss units) for "
                 f"{self.runs.flops.sum():.3g} of {self.budget:.3g} FLOPs"]
        if "out" in like:
            lines.append(f"out = {_toml(like['out'])}")
        if like.get("eval_mix"):
            lines.append(f"eval_mix = {_toml(like['eval_mix'])}")
        lines.append("[defaults]")
        defaults = dict(like.get("defaults") or {})
        if "data" not in defaults:
            lines.append('data = "store"  # the token store to train on: set it')
        lines += [f"{k} = {_toml(v)}" for k, v in defaults.items()]
        for _, r in self.runs.iterrows():
            lines.append("\n[[runs]]")
            if isinstance(r.get("preset"), str):
                lines.append(f"preset = {_toml(r['preset'])}")
            else:
                lines.append(f"# no preset: a model of {r['params']:.4g} parameters")
            lines.append(f"tokens = {int(round(r['tokens']))}")
            mix = r.get("mixture") if isinstance(r.get("mixture"), str) else ""
            if mix or mixture:
                lines.append(f"mixture = {_toml(mix or mixture)}")
        return "\n".join(lines) + "\n"


def _toml(v) -> str:
    """A TOML value for the plain types a sweep spec holds."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # TOML basic strings share JSON's escapes
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml(x)}" for k, x in v.items()) + "}"
    if isinstance(v, Sequence):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    raise ValueError(f"cannot write {v!r} into a sweep spec")


def candidate_grid(result: Fit, budget: float, target_params: float, *,
                   sizes: Mapping[str, float] | None = None,
                   tokens_per_param: Sequence[float] = TOKENS_PER_PARAM,
                   mixtures: Sequence[Mapping[str, float] | None] = (None,)) -> pd.DataFrame:
    """Runs one could train next: sizes from the smallest trained one up to the target (the
    given presets, else 4 per decade) x tokens per parameter x mixtures, each within budget."""
    n_lo, _ = trained_range(result, "N")
    if sizes:
        named = [(k, float(v)) for k, v in sizes.items() if n_lo * 0.999 <= v <= target_params]
    else:
        decades = max(np.log10(target_params / n_lo), 0.34)
        named = [(None, float(n)) for n in np.geomspace(n_lo, target_params,
                                                         int(np.ceil(4 * decades)) + 1)]
    rows = [{"preset": name, "params": n, "tokens": r * n, "tokens_per_param": r,
             "flops": 6.0 * n * r * n, "mixture": _mix_text(m), "mix_dict": m}
            for name, n in named for r in tokens_per_param for m in mixtures]
    out = pd.DataFrame(rows, columns=["preset", "params", "tokens", "tokens_per_param",
                                      "flops", "mixture", "mix_dict"])
    return out[out.flops <= budget].reset_index(drop=True)


def _mix_text(m: Mapping[str, float] | None) -> str:
    return ",".join(f"{k}={v:.4g}" for k, v in m.items()) if m else ""


def _frames(result: Fit, rows: pd.DataFrame, evals) -> pd.DataFrame:
    from datalaws.fit.plan import _frame

    parts = [_frame(result, np.array([n]), np.array([t]), None, m, evals)
             for n, t, m in zip(rows.params, rows.tokens, rows.mix_dict)]
    return pd.concat(parts, ignore_index=True)


def _noise_var(result: Fit) -> float:
    s = result.samples()
    if "sigma" not in s:
        return 0.0
    var = np.asarray(s["sigma"], np.float64).reshape(-1) ** 2
    if result.likelihood == "studentt" and "nu" in s:
        nu = np.asarray(s["nu"], np.float64).reshape(-1)
        var = var * np.where(nu > 2.2, nu / np.maximum(nu - 2, 1e-9), 1.0 / 0.2 + 1.0)
    return float(np.median(var))


def _greedy(cov: np.ndarray, cost: np.ndarray, budget: float, var_of, *, by_ratio: bool,
            max_runs: int, s2: float, min_gain: float = 0.01) -> list[tuple[int, float]]:
    """Picks (candidate, variance after) in order; ``var_of(law_var, picks)`` is the total
    predictive variance at the target after training ``picks``."""
    cov = cov.copy()
    picks: list[tuple[int, float]] = []
    left, v = budget, var_of(cov[0, 0], [])
    while len(picks) < max_runs:
        best, best_val, best_v = None, 0.0, v
        chosen = [j for j, _ in picks]
        for j in range(len(cost)):
            if j in chosen or cost[j] > left:
                continue
            c = cov[0, j + 1]
            v_j = var_of(cov[0, 0] - c * c / (cov[j + 1, j + 1] + s2), chosen + [j])
            val = (v - v_j) / (cost[j] if by_ratio else 1.0)
            if val > best_val:
                best, best_val, best_v = j, val, v_j
        if best is None or v - best_v <= min_gain * v:  # nothing worth its FLOPs left
            break
        col = cov[:, best + 1].copy()
        cov -= np.outer(col, col) / (col[best + 1] + s2)  # condition on the new run
        picks.append((best, best_v))
        left -= cost[best]
        v = best_v
    return picks


def _ranked(picked: pd.DataFrame, sds: np.ndarray, med: float) -> pd.DataFrame:
    """The picks in order with the target's sd and 90% width after each, and its share."""
    runs = picked.drop(columns="mix_dict").reset_index(drop=True)
    width = med * (np.exp(Z90 * sds) - np.exp(-Z90 * sds))
    runs.insert(0, "rank", np.arange(1, len(runs) + 1))
    runs["sd_log_after"] = sds[1:]
    runs["width90_after"] = width[1:]
    runs["reduction"] = width[:-1] - width[1:]  # of the 90% width, this pick's share
    runs["reduction_pct"] = 100 * runs.reduction / width[0]
    runs["reduction_per_eflop"] = runs.reduction / (runs.flops / 1e18)
    return runs


def next_runs(result: Fit, budget: float, target_params: float, target_tokens: float, *,
              sizes: Mapping[str, float] | None = None,
              tokens_per_param: Sequence[float] = TOKENS_PER_PARAM, max_runs: int = 8,
              mixture: Mapping[str, float] | None = None,
              mixtures: Sequence[Mapping[str, float]] | None = None,
              evals: Mapping[str, float] | None = None, seed: int = 0,
              max_draws: int = 2000) -> Design:
    """The runs (at most ``max_runs``, together within ``budget`` FLOPs) that most reduce the
    predictive variance of log loss at (``target_params``, ``target_tokens``)."""
    for name, v in (("--budget", budget), ("target params", target_params),
                    ("target tokens", target_tokens)):
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name} = {v}: must be a positive number")
    if max_runs < 1:
        raise ValueError(f"--runs {max_runs}: must be >= 1")
    cands = candidate_grid(result, budget, target_params, sizes=sizes,
                           tokens_per_param=tokens_per_param,
                           mixtures=list(mixtures) if mixtures else [mixture])
    if cands.empty:
        n_lo, _ = trained_range(result, "N")
        raise ValueError(f"no candidate run fits {budget:.3g} FLOPs: the smallest trained size "
                         f"({n_lo:.3g}) at {min(tokens_per_param):g} tokens per parameter costs "
                         f"{6 * min(tokens_per_param) * n_lo ** 2:.3g}")
    target = pd.DataFrame({"params": [target_params], "tokens": [target_tokens],
                           "mix_dict": [mixture], "mixture": [_mix_text(mixture)]})
    tgt_frame, cand_frame = _frames(result, target, evals), _frames(result, cands, evals)
    law = np.log(predictive_draws(result, pd.concat([tgt_frame, cand_frame], ignore_index=True),
                                  seed=seed)["loss_law"])
    law = law[:: max(1, len(law) // max_draws)]
    cov = np.atleast_2d(np.cov(law, rowvar=False))
    s2 = _noise_var(result)

    def var_of(law_var: float, picks: list[int]) -> float:
        extra = cand_frame.iloc[picks] if picks else None
        return max(law_var, 0.0) + float(discrepancy_var(result, tgt_frame, extra)[0]) + s2

    cost = cands.flops.to_numpy()
    tries = {rule: _greedy(cov, cost, budget, var_of, by_ratio=rule == "per FLOP",
                           max_runs=max_runs, s2=s2) for rule in ("per FLOP", "by reduction")}
    v0 = var_of(cov[0, 0], [])
    rule = min(tries, key=lambda r: tries[r][-1][1] if tries[r] else v0)
    picks = tries[rule]
    sds = np.sqrt([v0] + [v for _, v in picks])
    med = float(np.exp(np.median(law[:, 0])))
    runs = _ranked(cands.iloc[[j for j, _ in picks]], sds, med)
    alone = [v0 - var_of(cov[0, 0] - cov[0, j + 1] ** 2 / (cov[j + 1, j + 1] + s2), [j])
             for j in range(len(cands))]
    cands = cands.drop(columns="mix_dict").assign(var_reduction=alone)
    cands["var_reduction_per_eflop"] = cands.var_reduction / (cands.flops / 1e18)
    tgt = {"params": float(target_params), "tokens": float(target_tokens),
           "mixture": _mix_text(mixture), "loss_q50": med,
           "distance": float(extrapolation_distance(result, tgt_frame)[0])}
    return Design(target=tgt, budget=float(budget), runs=runs,
                  candidates=cands.sort_values("var_reduction_per_eflop", ascending=False),
                  sd_now=float(sds[0]), sd_after=float(sds[-1]), rule=rule)


def chinchilla_grid(budget: float, n_min: float, *, sizes: int = 4,
                    tokens_per_param: Sequence[float] = (10.0, 20.0, 40.0)) -> pd.DataFrame:
    """The reference design, a Chinchilla-style grid: ``sizes`` sizes log-spaced from
    ``n_min`` (e.g. the next size above the trained ones) x ``tokens_per_param`` ratios, the
    largest size chosen so that all runs cost ``budget`` FLOPs together."""
    ratios = np.asarray(tokens_per_param, dtype=np.float64)

    def cost(n_top: float) -> float:
        n = np.geomspace(n_min, n_top, sizes)
        return float(np.sum(6 * ratios[None, :] * n[:, None] ** 2))

    if cost(n_min) > budget:
        raise ValueError(f"a grid of {sizes} sizes from {n_min:.3g} parameters costs more than "
                         f"{budget:.3g} FLOPs")
    lo, hi = n_min, n_min * 1e6
    for _ in range(200):  # bisection on the largest size
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if cost(mid) <= budget else (lo, mid)
    n = np.repeat(np.geomspace(n_min, lo, sizes), len(ratios))
    r = np.tile(ratios, sizes)
    return pd.DataFrame({"params": n, "tokens": r * n, "flops": 6 * r * n ** 2})
