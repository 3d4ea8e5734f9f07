"""A fit whose sampler diagnostics fail is sampled once more, carefully (smaller steps,
twice the warmup and the draws); the second run's draws and verdict stand and the fit says
why it was resampled. Runs too short to pass the bars by their length are not resampled."""

import json

import numpy as np
import pandas as pd

from datalaws.fit import Fit, FitConfig, fit
from datalaws.fit.api import RETRY_TARGET_ACCEPT


def _runs(n: int = 16, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    N = np.geomspace(2e7, 2e9, n)
    D = N * rng.uniform(10, 40, n)
    L = 1.8 + 0.4 * (N / 1e8) ** -0.34 + 0.4 * (D / 2e9) ** -0.28
    return pd.DataFrame({"params": N, "tokens": D,
                         "loss": L * np.exp(0.01 * rng.standard_normal(n))})


def test_failed_run_is_resampled_once_and_says_so(tmp_path):
    # one warmup step: no step size or mass adapted, every transition diverges
    r = fit(_runs(), "chinchilla", discrepancy="none",
            config=FitConfig(chains=2, warmup=1, draws=500, progress=False))
    note = r.data["resampled"]
    assert note.startswith("first run failed (") and "divergences: 1000" in note
    # the careful sampler drew the posterior that is kept, and the fit records it
    assert r.config.target_accept == RETRY_TARGET_ACCEPT
    assert (r.config.warmup, r.config.draws) == (2, 1000)
    assert r.idata.posterior.sizes["draw"] == 1000
    # two warmup steps are still too few: the second verdict stands, it is not masked
    assert not r.diagnostics.ok
    assert r.idata.sample_stats["diverging"].values.sum() > 0
    r.save(tmp_path / "f")
    assert json.loads((tmp_path / "f" / "summary.json").read_text())["resampled"] == note
    assert Fit.load(tmp_path / "f").data["resampled"] == note


def test_short_run_is_not_resampled():
    # 2 x 100 draws cannot reach an ESS of 400: rerunning it carefully would not either
    r = fit(_runs(), "chinchilla", discrepancy="none",
            config=FitConfig(chains=2, warmup=100, draws=100, progress=False))
    assert not r.diagnostics.ok and "resampled" not in r.data
    assert r.config.warmup == 100
