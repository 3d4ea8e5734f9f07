"""The per-domain mixing law on many domains: the joint sampler's fixed Laplace mass past
ADAPT_MAX_PARAMS, and fit()'s one NUTS per evaluation domain, stitched into the law's
parameters (fit/blocks.py). Apart from test_mixing.py so that the two slowest fits can run
on different CI workers."""

import warnings

import numpy as np

from datalaws.fit import FitConfig, fit, predict
from datalaws.fit.infer import point_fit
from datalaws.fit.mixing import mixing_domains_law
from datalaws.fit.sampling import ADAPT_MAX_PARAMS, run_nuts, unconstrained_size
from tests.fit.mixing_tables import effects, long_rows, per_domain_table


def test_many_domain_law_samples_in_few_steps_from_a_laplace_mass():
    # 10 domains x 8 evaluation domains sampled jointly (as rows of a known composition or
    # size terms make a fit do): 114 parameters, past ADAPT_MAX_PARAMS, so NUTS uses the fixed
    # Laplace mass (fit/sampling.py). numpyro's windowed dense adaptation took the maximum
    # 1023 leapfrog steps per draw at 420 effects (bench/mixing.py sim20).
    evals = [f"e{i}" for i in range(8)]
    df, law, truth, domains = per_domain_table(3, 10, evals, 120)
    assert unconstrained_size(law) > ADAPT_MAX_PARAMS
    _, x, y = long_rows(df, domains, evals)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        mcmc = run_nuts(law, x, y, FitConfig(chains=2, warmup=200, draws=200, progress=False),
                        init=point_fit(law, x, y))
    assert not [w for w in seen if "leapfrog steps" in str(w.message)]  # a pace, not a size
    steps = np.asarray(mcmc.get_extra_fields()["num_steps"])
    assert np.mean(steps) < 128, np.mean(steps)  # depth <= 7 on average, never 10 throughout
    assert not np.any(mcmc.get_extra_fields()["diverging"])
    lo, hi = np.quantile(effects(mcmc.get_samples(), 10, True), [0.05, 0.95], axis=0)
    tb = truth["z"][: 8 * 10].reshape(8, 10)
    assert np.mean((lo <= tb) & (tb <= hi)) >= 0.8


def test_per_domain_rows_are_sampled_one_domain_at_a_time():
    # the same 10 x 8 sweep through fit(): each evaluation domain its own NUTS (fit/blocks.py),
    # stitched into the law's parameters, the pooled scales fixed at least squares' values
    evals = [f"e{i}" for i in range(8)]
    df, law, truth, domains = per_domain_table(3, 10, evals, 160)
    train, test = df.iloc[:120], df.iloc[120:]
    r = fit(train, "mixing_domains1", config=FitConfig(chains=2, warmup=200, draws=200,
                                                         progress=False), discrepancy="none")
    post = r.idata.posterior
    assert post["sigma"].shape[-1] == 8 and post["nu"].shape[-1] == 8
    log_tau = post["z"].values[..., 80:]
    assert np.all(np.ptp(log_tau, axis=(0, 1)) == 0)  # fixed: empirical Bayes
    np.testing.assert_allclose(log_tau[0, 0], r.point["z"][80:], rtol=1e-6)
    # each domain's own step size: nowhere near NUTS's 1023-step cap (summed over 8 domains)
    steps = r.idata.sample_stats["n_steps"].values / 8
    assert np.mean(steps) < 128, np.mean(steps)
    c = r.diagnostics.to_dict()["checks"]
    # 2 x 200 draws: R-hat's own noise is ~0.02 here (the 1.01 bar is for 4 x 1000)
    assert c["r_hat"]["value"] < 1.06 and c["divergences"]["value"] == 0, c
    # the pointwise log likelihood is in the table's row order: each row's own domain's
    ll = r.idata.log_likelihood["log_loss"].values
    obs = r.idata.observed_data["log_loss"].values
    assert ll.shape[-1] == len(obs) == 8 * 120 and np.isfinite(ll).all()
    lo, hi = np.quantile(effects(r.samples(), 10, True), [0.05, 0.95], axis=0)
    tb = truth["z"][: 8 * 10].reshape(8, 10)
    assert np.mean((lo <= tb) & (tb <= hi)) >= 0.8
    pts, _, y = long_rows(test, domains, evals)
    pred = predict(r, pts)
    assert 0.8 <= np.mean((pred.loss_q05 <= y) & (y <= pred.loss_q95)) <= 0.98


def test_stitched_domains_keep_their_order_and_drop_stuck_chains_everywhere():
    from datalaws.fit.blocks import BlockRun, BlockSamples

    law = mixing_domains_law(["d0", "d1"], ["a", "b", "c"], sizes=())  # pooled: + log tau
    C, D = 4, 5

    def run(i, stuck=()):
        return BlockRun({"e_mid": np.full((C, D, 1), i), "kappa": np.full((C, D, 1), 10 + i),
                         "z": np.full((C, D, 2), 20 + i), "sigma": np.full((C, D), 0.1 * i),
                         "nu": np.full((C, D), 5.0 + i)},
                        {"diverging": np.zeros((C, D), bool) | (i == 1),
                         "energy": np.ones((C, D)), "num_steps": np.full((C, D), 7)},
                        np.zeros((C, D, 3)), stuck=stuck)

    log_tau = np.log([0.3, 0.4])
    s = BlockSamples(law, [], [run(0), run(1, (2,)), run(2)], log_tau, 9)
    assert s.kept == [0, 1, 3]  # chain 2 stuck in one domain: dropped from all three
    g = s.get_samples(group_by_chain=True)
    assert g["sigma"].shape == (3, D, 3) and np.allclose(g["sigma"][0, 0], [0, 0.1, 0.2])
    assert np.allclose(g["e_mid"][0, 0], [0, 1, 2]) and np.allclose(g["nu"][0, 0], [5, 6, 7])
    assert np.allclose(g["z"][0, 0], [20, 20, 21, 21, 22, 22, *log_tau])  # domain rows, tau
    assert s.get_samples()["z"].shape == (3 * D, 8)
    extra = s.get_extra_fields()
    assert extra["diverging"].all() and np.all(extra["num_steps"] == 21)  # any; summed
    many = BlockSamples(law, [], [run(0, (0,)), run(1, (1,)), run(2, (2,))], log_tau, 9)
    assert many.kept == [0, 1, 2, 3]  # half or more stuck: a failure to report, not hide
