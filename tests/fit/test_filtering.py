"""Filtering / repetition law: parameters recovered; the best pool depends on the budget."""

import numpy as np
import pandas as pd

from datalaws.cli import main
from datalaws.fit import FitConfig, fit, save_fit
from datalaws.fit.laws import filtering_law
from datalaws.fit.plan import pool_frontier

# a small high-quality pool (steep, b = 0.5) and a large plain one (b = 0.3)
TRUTH = {"d": 1.8, "A": 1.0, "tau": 2.0, "b_hq": 0.5, "b_web": 0.3}
UNIQUE = {"hq": 1e9, "web": 5e10}


def _table(seed, n=90):
    rng = np.random.default_rng(seed)
    pool = rng.choice(["hq", "web"], n)
    tokens = np.exp(rng.uniform(np.log(5e7), np.log(3e9), n))
    unique = np.array([UNIQUE[p] for p in pool])
    df = pd.DataFrame({"tokens": tokens, "repetitions": tokens / unique, "pool": pool})
    law = filtering_law(["hq", "web"])
    x = {"n": tokens / np.exp(np.log(tokens).mean()), "repetitions": df.repetitions.to_numpy(),
         "w.hq": (pool == "hq").astype(float), "w.web": (pool == "web").astype(float)}
    df["loss"] = np.asarray(law.fn(x, TRUTH)) * np.exp(0.005 * rng.standard_normal(n))
    return df


def test_filtering_law_recovers_truth_and_frontier(tmp_path):
    covered = total = 0
    for seed in (0, 1):
        r = fit(_table(seed), "filtering", config=FitConfig(progress=False),
                discrepancy="none")
        assert r.summary["diagnostics"]["ok"], r.summary["diagnostics"]["failures"]
        for name, true in TRUTH.items():
            p = r.summary["params"][name]
            covered += p["q05"] <= true <= p["q95"]
            total += 1
    assert covered >= 0.8 * total, f"{covered}/{total}"
    # the true frontier: the steep high-quality pool wins until it has been repeated too often
    law, n0 = filtering_law(["hq", "web"]), r.scales["n"]
    budgets = np.geomspace(1e8, 6e10, 9)

    def true_loss(pool, n):
        x = {"n": np.array([n / n0]), "repetitions": np.array([n / UNIQUE[pool]]),
             "w.hq": np.array([float(pool == "hq")]), "w.web": np.array([float(pool == "web")])}
        return float(law.fn(x, TRUTH)[0])

    def truth_at(n):
        return min(UNIQUE, key=lambda p: true_loss(p, n))

    truth = [truth_at(n) for n in budgets]
    assert "hq" in truth and "web" in truth  # the trade-off is inside the range
    front = pool_frontier(r, budgets, UNIQUE)
    sure = front.p_best > 0.9
    assert (front.best_pool[sure] == np.array(truth)[sure]).all(), (front, truth)
    assert sure.sum() >= 6
    # the same through the CLI, from the saved fit
    save_fit(r, tmp_path / "fit")
    assert main(["plan", str(tmp_path / "fit"), "--pools", "hq=1e9,web=5e10", "--tokens",
                 "3e8,4e10"]) == 0
    cli = pd.read_csv(tmp_path / "fit" / "pool_frontier.csv")
    assert list(cli.best_pool) == [truth_at(3e8), truth_at(4e10)]
