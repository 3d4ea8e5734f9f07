"""The planner finds a known optimum and turns risk-averse when uncertainty grows."""

import arviz as az
import numpy as np
import pytest

from datalaws.fit.api import FitResult
from datalaws.fit.laws import get_law
from datalaws.fit.plan import budget_from_gpu_hours, parse_objective, plan

TRUTH = {"E": 1.8, "a": 0.4, "alpha": 0.34, "b": 0.4, "beta": 0.28}
SCALES = {"N": 1e8, "D": 2e9}


def _posterior(k=0.0, x_max_fit=1e12, spread=1e-3, draws=2000):
    rng = np.random.default_rng(0)
    post = {n: v * np.exp(spread * rng.standard_normal((1, draws))) for n, v in TRUTH.items()}
    post |= {"sigma": np.full((1, draws), 1e-3), "nu": np.full((1, draws), 30.0)}
    summary = {"scales": SCALES, "columns": {"N": "params", "D": "tokens", "loss": "loss"},
               "likelihood": "studentt",
               "discrepancy": {"k": k, "x_max_fit": x_max_fit}}
    return FitResult(law=get_law("chinchilla"), idata=az.from_dict(posterior=post),
                     summary=summary, point=dict(TRUTH))


def _true_optimum(budget):
    N = np.geomspace(1e5, 1e13, 200_001)
    D = budget / (6 * N)
    L = get_law("chinchilla").fn({"N": N / SCALES["N"], "D": D / SCALES["D"]}, TRUTH)
    i = int(np.argmin(np.asarray(L)))
    return N[i], D[i]


@pytest.mark.parametrize("budget", [1e19, 1e21])
def test_planner_finds_known_optimum(budget):
    n_star, d_star = _true_optimum(budget)
    p = plan(_posterior(), budget)
    assert abs(p.continuous["tokens"] / d_star - 1) < 0.05
    # snapped to presets: the chosen one is the preset nearest the optimum in loss
    sizes = {f"s{i}": float(n) for i, n in enumerate(np.geomspace(1e6, 1e11, 11))}
    ps = plan(_posterior(), budget, sizes=sizes)
    nearest = min(sizes.values(), key=lambda n: abs(np.log(n / n_star)))
    assert abs(np.log(ps.chosen["params"] / nearest)) <= np.log(np.sqrt(10)) + 1e-9
    assert 0.0 <= p.p_beats_default <= 1.0


def test_risk_averse_objective_picks_a_safer_plan():
    # beyond 3e8 parameters the discrepancy widens intervals with distance
    post = _posterior(k=0.3, x_max_fit=3e8)
    mean = plan(post, 1e21, objective="mean")
    safe = plan(post, 1e21, objective="q95")
    assert safe.continuous["params"] < 0.7 * mean.continuous["params"]
    assert safe.continuous["loss_q95"] <= mean.continuous["loss_q95"]


def test_bad_inputs():
    with pytest.raises(ValueError, match="objective"):
        parse_objective("q200")
    with pytest.raises(ValueError, match="budget"):
        plan(_posterior(), -1)
    with pytest.raises(ValueError, match="hardware"):
        budget_from_gpu_hours(10, "abacus", 0.4)
    assert budget_from_gpu_hours(1, "h100", 0.5) == pytest.approx(3600 * 989e12 * 0.5)


def test_continuous_plan_has_no_preset_name():
    p = plan(_posterior(), 1e20, sizes={"s": 1e8})
    assert p.continuous["preset"] is None and p.chosen["preset"] == "s"
