"""The planner finds a known optimum and turns risk-averse when uncertainty grows."""

import arviz as az
import numpy as np
import pytest

from datalaws.fit import Diagnostics, Fit, FitConfig
from datalaws.fit.laws import get_law
from datalaws.fit.plan import budget_from_gpu_hours, parse_objective, plan, plan_fit

TRUTH = {"E": 1.8, "a": 0.4, "alpha": 0.34, "b": 0.4, "beta": 0.28}
SCALES = {"N": 1e8, "D": 2e9}


def _posterior(k=0.0, x_max_fit=1e12, spread=1e-3, draws=2000, lo=None):
    """Draws around TRUTH, fitted (as far as the discrepancy knows) on runs of ``lo`` (default:
    symmetric about the reference size on the log scale) to ``x_max_fit`` parameters: the
    discrepancy grows with the distance along N outside that range."""
    rng = np.random.default_rng(0)
    post = {n: v * np.exp(spread * rng.standard_normal((1, draws))) for n, v in TRUTH.items()}
    post |= {"sigma": np.full((1, draws), 1e-3), "nu": np.full((1, draws), 30.0)}
    lo = SCALES["N"] ** 2 / x_max_fit if lo is None else lo
    discrepancy = {"k": k, "backtest": [],
                   "hull": [[np.log(lo)], [np.log(x_max_fit)]],
                   "axes": [{"name": "N", "powers": {"N": 1.0}, "log": True}]}
    return Fit(law=get_law("chinchilla"), columns={"N": "params", "D": "tokens", "loss": "loss"},
               scales=SCALES, idata=az.from_dict(posterior=post), point=dict(TRUTH),
               config=FitConfig(likelihood="studentt"), discrepancy=discrepancy,
               diagnostics=Diagnostics({}))


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
    with pytest.raises(ValueError, match="unknown domain.*no mixture domains"):
        plan_fit(_posterior(), 1e20, mixture={"web": 1.0})  # the law reads no mixture


def test_continuous_plan_has_no_preset_name():
    p = plan(_posterior(), 1e20, sizes={"s": 1e8})
    assert p.continuous["preset"] is None and p.chosen["preset"] == "s"


def _ranged(k=0.0, lo=1e7, hi=3e8):
    post = _posterior(k=k, x_max_fit=hi, lo=lo)
    post.discrepancy["backtest"] = [
        {"d_lo": 0.0, "d_hi": 1.0, "n": 10, "backtest_cov50": 0.5, "backtest_cov90": 0.9}]
    return post


def test_plans_stay_inside_the_trained_range_and_say_so():
    # at 1e14 FLOPs the unconstrained optimum (2e6) is below the smallest trained size (1e7)
    p = plan(_ranged(), 1e14, objective="q90")
    assert p.trust["min_params"] == pytest.approx(1e7, rel=1e-12)  # exp(log 1e7)
    assert p.trust["max_params"] == pytest.approx(3e10)
    assert p.chosen["params"] >= 1e7 * (1 - 1e-9)
    assert p.chosen["params"] == pytest.approx(1e7, rel=1e-9)  # the edge nearest the optimum
    assert p.trust["optimum_outside"] and "below --min-params" in p.trust["optimum_outside"]
    assert any("below --min-params" in w for w in p.warnings)
    # every candidate carries its distance: 0 inside the fitted range, growing beyond it
    c = p.candidates.sort_values("params")
    assert (c.distance[(c.params >= 1e7) & (c.params <= 3e8)] == 0).all()
    assert np.all(np.diff(c.distance[c.params > 3e8]) > 0)
    wide = plan(_ranged(), 1e14, objective="q90", min_params=1e3, max_params=1e12)
    assert wide.chosen["params"] < 1e7 and wide.trust["optimum_outside"] is None


def test_quantile_objective_is_smooth_and_discrepancy_aware():
    p = plan(_ranged(k=0.05, lo=1e4), 1e21, objective="q90")
    c = p.candidates[p.candidates.preset.isna()].sort_values("params")
    q = c.loss_q95.to_numpy()
    # one valley: the q95 curve falls then rises, without Monte Carlo wiggles
    turns = np.sum(np.diff(np.sign(np.diff(q))) != 0)
    assert turns <= 1, turns
    beyond = c[c.distance > 1]
    assert (beyond.loss_q95 - beyond.loss_q05).is_monotonic_increasing  # wider with distance


def test_runner_up_and_why_in_words():
    import json

    p = plan(_ranged(k=0.05), 1e21, objective="q90")
    r = p.runner_up
    assert r is not None and abs(np.log(r["params"] / p.chosen["params"])) >= np.log(2) - 1e-9
    assert 0.0 <= p.p_beats_runner_up <= 1.0
    if p.p_beats_runner_up < 0.5:  # risk-averse: a tighter worst case, said in words
        assert "safer choice" in p.why
    d = json.loads(json.dumps(p.to_dict()))  # plain JSON
    assert d["p_beats_runner_up_words"] in d["why"] and "runner-up" in d["why"]
    assert d["trust"]["backtest"]["n"] >= 0 and "distance" in d["chosen"]


def test_trained_range_reads_sizes_from_axes_that_combine_them():
    # the over-training law measures distance in compute C = N D and tokens per parameter
    # M = D / N: the trained sizes are still the hull's, as sqrt(C / M)
    from datalaws.fit.trust import trained_range

    N = np.array([1e8, 1e8, 1e9, 1e9, 3e8])
    D = N * np.array([20.0, 200.0, 20.0, 200.0, 60.0])
    post = _posterior()
    post.discrepancy = {"k": 0.0, "hull": np.stack([np.log(N * D), np.log(D / N)], 1).tolist(),
                        "axes": [{"name": a.name, "powers": dict(a.powers), "log": a.log}
                                 for a in get_law("overtrain").axes]}
    assert trained_range(post, "N") == pytest.approx((1e8, 1e9), rel=1e-9)
    assert trained_range(post, "D") == pytest.approx((2e9, 2e11), rel=1e-9)
    post.discrepancy["axes"] = post.discrepancy["axes"][1:]  # M alone cannot give N
    with pytest.raises(ValueError, match="range of 'N'"):
        trained_range(post, "N")
