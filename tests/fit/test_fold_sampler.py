"""Backtest folds sampled side by side (fit/fold_sampler.py): each fold is its own posterior,
on its own rows, with its own NUTS adaptation, so an ill-posed fold does not spoil the others."""

import arviz as az
import numpy as np

from datalaws.fit.infer import FitConfig, point_fit
from datalaws.fit.laws import get_law
from datalaws.fit.sampling import run_nuts


def _sweep(rng):
    """A Chinchilla-law sweep (1% noise), normalised as the fit does."""
    law = get_law("chinchilla")
    N = np.repeat(np.geomspace(2e7, 2e9, 6), 6)
    D = N * np.tile(np.geomspace(5, 200, 6), 6)
    y = (1.8 + 400 * N ** -0.34 + 400 * D ** -0.28) * np.exp(0.01 * rng.standard_normal(N.size))
    x = {"N": N / np.exp(np.log(N).mean()), "D": D / np.exp(np.log(D).mean())}
    return law, x, y, N


def _rhat(v: np.ndarray) -> float:  # [chains, draws]
    return float(az.rhat(v))


def test_each_fold_is_its_own_posterior_with_its_own_nuts():
    law, x, y, N = _sweep(np.random.default_rng(0))
    point = point_fit(law, x, y)
    sizes = np.unique(N)
    ridge = N <= sizes[1]  # two sizes: E, a and alpha are a ridge the prior closes
    well = N <= sizes[4]  # five sizes: identified
    cfg = FitConfig(chains=2, warmup=200, draws=400, likelihood="normal", progress=False)
    m = run_nuts(law, x, y, cfg, init=point, mask=np.stack([ridge, well]))
    s = m.get_samples(group_by_chain=True)
    assert s["E"].shape == (2, 400, 2, 1) and s["sigma"].shape == (2, 400, 2, 1)
    steps = np.asarray(m.extra["num_steps"])  # [chains, draws, folds]: a trajectory per fold
    assert steps.shape == (2, 400, 2)
    # the well-posed fold converges beside the ridge, in shorter trajectories of its own
    for name in ("E", "a", "alpha", "b", "beta", "sigma"):
        assert _rhat(s[name][:, :, 1, 0]) < 1.05, name
    assert steps[:, :, 1].mean() < steps[:, :, 0].mean(), steps.mean(axis=(0, 1))
    # fold f is the law on fold f's rows: the same posterior as that fold sampled alone
    alone = run_nuts(law, x, y, cfg, init=point, mask=well)
    a = alone.get_samples()
    for name in ("E", "beta", "sigma"):
        joint = s[name][:, :, 1, 0].ravel()
        se = np.sqrt(joint.var() / 100 + np.var(a[name]) / 100)  # ESS >= 100 each
        assert abs(joint.mean() - np.mean(a[name])) < 4 * se, name
    # the ridge fold's noise is estimated from its own 12 rows (12 of 36 rows' residuals)
    assert abs(np.median(s["sigma"][:, :, 0, 0]) - 0.01) < 0.006


def test_a_fold_failing_r_hat_is_sampled_once_more_alone(monkeypatch):
    from datalaws.fit import backtest

    law, x, y, N = _sweep(np.random.default_rng(1))
    point = point_fit(law, x, y)
    sizes = np.unique(N)
    masks = np.stack([N <= sizes[3], N <= sizes[4]])
    cfg = FitConfig(chains=2, warmup=100, draws=100, likelihood="normal", progress=False)
    monkeypatch.setattr(backtest, "FOLD_MAX_RHAT", np.inf)  # no fold fails
    first, diags = backtest._fold_draws(law, x, y, cfg, point, None, masks)
    assert first["E"].shape == (2, 100, 2, 1) and not any("resampled" in d for d in diags)
    # a bar between the two folds' R-hats: the worse fold alone is sampled again
    rh = [d["r_hat"] for d in diags]
    worse = int(np.argmax(rh))
    monkeypatch.setattr(backtest, "FOLD_MAX_RHAT", float(np.mean(rh)))
    again, diags2 = backtest._fold_draws(law, x, y, cfg, point, None, masks)
    assert diags2[worse].get("resampled") and "resampled" not in diags2[1 - worse]
    assert again["E"].shape == first["E"].shape  # thinned back to the others' length
    np.testing.assert_array_equal(again["E"][:, :, 1 - worse], first["E"][:, :, 1 - worse])
    assert not np.array_equal(again["E"][:, :, worse], first["E"][:, :, worse])
