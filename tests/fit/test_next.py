"""`datalaws next` picks runs that shrink the target's uncertainty more than a Chinchilla grid
of the same cost (checked by exact Bayesian updating of the posterior draws), and writes a
sweep spec that `sweep run` expands to exactly those runs."""

import copy

import arviz as az
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import least_squares

from datalaws.cli import main
from datalaws.fit import Diagnostics, Fit, FitConfig
from datalaws.fit.api import predictive_draws
from datalaws.fit.design import chinchilla_grid, next_runs
from datalaws.fit.laws import get_law
from datalaws.fit.trust import discrepancy_var
from datalaws.launch.sweep import expand, load_spec

TRUTH = {"E": 1.8, "a": 0.4, "alpha": 0.34, "b": 0.4, "beta": 0.28}
SIGMA = 0.01
TARGET = (1e9, 2e10)


def _laplace_posterior(draws: int = 4000) -> Fit:
    """A posterior from simulated small runs (1e6-1e7 parameters): least squares on log loss
    and its Laplace approximation (Gaussian in E, log a, alpha, log b, beta)."""
    rng = np.random.default_rng(0)
    N = np.repeat(np.geomspace(1e6, 1e7, 4), 3)
    D = N * np.tile([10.0, 20.0, 40.0], 4)
    scales = {"N": float(np.exp(np.log(N).mean())), "D": float(np.exp(np.log(D).mean()))}
    law = get_law("chinchilla")
    x = {"N": N / scales["N"], "D": D / scales["D"]}

    def params(t):
        return {"E": t[0], "a": np.exp(t[1]), "alpha": t[2], "b": np.exp(t[3]), "beta": t[4]}

    true_x = {"N": N / 1e8, "D": D / 2e9}  # TRUTH is stated at N0 = 1e8, D0 = 2e9
    y = np.log(np.asarray(law.fn(true_x, TRUTH))) + SIGMA * rng.standard_normal(len(N))
    res = least_squares(lambda t: np.log(np.asarray(law.fn(x, params(t)))) - y,
                        [1.5, np.log(0.5), 0.3, np.log(0.5), 0.3])
    cov = SIGMA ** 2 * np.linalg.pinv(res.jac.T @ res.jac)
    t = rng.multivariate_normal(res.x, cov, size=draws)
    t[:, [0, 2, 4]] = np.abs(t[:, [0, 2, 4]])  # keep the constants positive
    post = {k: v[None, :] for k, v in params(t.T).items()}
    post |= {"sigma": np.full((1, draws), SIGMA)}
    # the discrepancy measures distance along N from the fitted sizes
    discrepancy = {"k": 0.0, "x_max_fit": 1e7, "backtest": [],
                   "hull": [[np.log(N.min())], [np.log(N.max())]],
                   "axes": [{"name": "N", "powers": {"N": 1.0}, "log": True}]}
    return Fit(law=law, columns={"N": "params", "D": "tokens", "loss": "loss"}, scales=scales,
               idata=az.from_dict(posterior=post), point=params(res.x),
               config=FitConfig(likelihood="normal"), discrepancy=discrepancy,
               diagnostics=Diagnostics({}), data={"data_hash": "sim"})


@pytest.fixture(scope="module")
def posterior():
    return _laplace_posterior()


def _posterior_var_after(r: Fit, runs: pd.DataFrame, truths: int = 60) -> float:
    """Exact Bayesian updating of the draws (importance weights) on simulated observations of
    ``runs``, each truth a posterior draw: the expected posterior variance of the target."""
    pts = pd.concat([pd.DataFrame({"params": [TARGET[0]], "tokens": [TARGET[1]]}),
                     runs[["params", "tokens"]]], ignore_index=True)
    f = np.log(predictive_draws(r, pts)["loss_law"])  # [S, 1 + runs]
    rng = np.random.default_rng(1)
    out = []
    for s in rng.choice(len(f), truths, replace=False):
        obs = f[s, 1:] + SIGMA * rng.standard_normal(len(runs))
        logw = -0.5 * np.sum((obs[None, :] - f[:, 1:]) ** 2, axis=1) / SIGMA ** 2
        w = np.exp(logw - logw.max())
        w /= w.sum()
        mean = np.sum(w * f[:, 0])
        out.append(np.sum(w * (f[:, 0] - mean) ** 2))
    return float(np.mean(out))


@pytest.mark.parametrize("k", [0.0, 0.02])
def test_next_beats_a_chinchilla_grid_of_the_same_cost(posterior, k):
    r = copy.copy(posterior)
    r.discrepancy = posterior.discrepancy | {"k": k}
    budget = 1e18
    design = next_runs(r, budget, *TARGET, max_runs=4)
    assert 1 <= len(design.runs) <= 4 and design.runs.flops.sum() <= budget
    assert design.sd_after < design.sd_now
    # the reference: the sweep extended upward, sizes x 10/20/40 tokens per parameter
    grid = chinchilla_grid(design.runs.flops.sum(), 1e7 * 10 ** 0.25)
    assert grid.flops.sum() == pytest.approx(design.runs.flops.sum(), rel=1e-6)
    tgt = pd.DataFrame({"params": [TARGET[0]], "tokens": [TARGET[1]]})
    v0 = (float(np.var(np.log(predictive_draws(r, tgt)["loss_law"])))
          + discrepancy_var(r, tgt)[0])
    v_next = _posterior_var_after(r, design.runs) + discrepancy_var(r, tgt, design.runs)[0]
    v_grid = _posterior_var_after(r, grid) + discrepancy_var(r, tgt, grid)[0]
    # the 90% interval's width is proportional to the sd (log scale)
    narrow_next, narrow_grid = np.sqrt(v0) - np.sqrt(v_next), np.sqrt(v0) - np.sqrt(v_grid)
    assert narrow_next >= 1.2 * narrow_grid, (narrow_next, narrow_grid)
    assert np.sqrt(v_next) <= 0.7 * np.sqrt(v_grid), (v_next, v_grid)
    # the linearised prediction of the design agrees with exact updating within a factor 2
    assert 0.5 < (design.sd_after ** 2 - SIGMA ** 2) / v_next < 2.0, (design.sd_after, v_next)


def test_more_budget_never_leaves_more_uncertainty(posterior):
    small = next_runs(posterior, 2e17, *TARGET)
    large = next_runs(posterior, 2e19, *TARGET)
    assert large.sd_after <= small.sd_after + 1e-12


def test_cli_writes_a_sweep_spec_sweep_run_accepts(posterior, tmp_path, capsys):
    posterior.save(tmp_path / "fit")
    like = tmp_path / "sweep.toml"
    like.write_text(f'out = "{tmp_path / "runs"}"\n[defaults]\ndata = "store"\nseq_len = 64\n'
                    'tasks = ["a.jsonl"]\n[grid]\npreset = ["tiny"]\ntokens = [1e5]\n'
                    'mixture = ["web=0.7,code=0.3", "web=0.3,code=0.7"]\n')
    out = tmp_path / "next.toml"
    # candidates: the model presets (sizes at the default vocabulary)
    assert main(["next", str(tmp_path / "fit"), "--budget", "2e18", "--target", "1e9,2e10",
                 "--like", str(like), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "rank" in printed and "width90_after" in printed
    runs = expand(load_spec(out))
    table = [ln.split() for ln in printed.splitlines() if ln.strip()[:1].isdigit()]
    picked = [(row[1], float(row[3])) for row in table]
    assert [r.config["preset"] for r in runs] == [p for p, _ in picked] and picked
    for r, (_, t) in zip(runs, picked):
        assert r.config["tokens"] == pytest.approx(t, rel=1e-3)  # the table prints 4 digits
    assert all(r.config["seq_len"] == 64 and r.config["data"] == "store" for r in runs)
    assert all(r.config["mixture"] == {"web": 0.7, "code": 0.3} for r in runs)
    assert all(str(r.out).startswith(str(tmp_path / "runs")) for r in runs)
    # an existing spec is not overwritten; bad targets get one line
    assert main(["next", str(tmp_path / "fit"), "--budget", "2e18", "--target", "1e9,2e10",
                 "--out", str(out)]) == 1
    assert main(["next", str(tmp_path / "fit"), "--budget", "2e18", "--target", "1e9",
                 "--out", str(tmp_path / "x.toml")]) == 1
    assert "--target" in capsys.readouterr().err
