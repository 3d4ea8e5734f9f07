"""The per-domain law with K latent terms per evaluation domain (Ye's eq. 4 inside each
domain), K by cross-validation; chains stuck in a minor mode; memory-bounded evaluation;
``plan --mixture`` on a one-size fit."""

import json

import arviz as az
import numpy as np
import pandas as pd

from datalaws.fit import FitConfig, fit
from datalaws.fit.chains import drop_minor_modes
from datalaws.fit.mixing import mixing_domains_law, mixing_implicit_law
from datalaws.fit.mixing_fit import choose_domain_latent


def _table(seed, K, n=120, J=3, evals=("a", "b")):
    rng = np.random.default_rng(seed)
    domains = [f"d{j}" for j in range(J)]
    law = mixing_domains_law(domains, list(evals), sizes=(), latent=K)
    z = rng.normal(0, 1.0, (len(evals) * K, J))
    truth = {"e_mid": rng.uniform(2.5, 3.5, len(evals)),
             "z": (z - z.mean(axis=1, keepdims=True)).ravel()}
    if K == 1:
        truth["kappa"] = rng.uniform(1.0, 3.0, len(evals))
    else:  # well-separated curvatures: the latent terms are distinguishable
        truth |= {"kappa1": np.full(len(evals), 0.5), "gaps": np.full(len(evals) * (K - 1), 6.0)}
        # terms 2+ are given by t = kappa beta: linear effects ~N(0, 1) as in term 1
        kap = 0.5 + 6.0 * (np.arange(len(evals) * K) % K)
        truth["z"] = (truth["z"].reshape(-1, J) * np.where(kap > 0.5, kap, 1.0)[:, None]).ravel()
    r = rng.dirichlet(np.full(J, 0.7), n)
    df = pd.DataFrame({f"mix.{d}": r[:, j] for j, d in enumerate(domains)})
    x = {f"r.{d}": r[:, j] for j, d in enumerate(domains)}
    for i in evals:
        onehot = {f"e.{e}": np.full(n, float(e == i)) for e in evals}
        df[f"loss.{i}"] = np.asarray(law.fn(x | onehot, truth)) * np.exp(
            0.003 * rng.standard_normal(n))
    return df, domains


def test_one_domain_with_latent_terms_is_the_implicit_law():
    rng = np.random.default_rng(0)
    domains = ["a", "b", "c"]
    r = rng.dirichlet(np.ones(3), 20)
    x = {f"r.{d}": r[:, j] for j, d in enumerate(domains)}
    z = rng.normal(size=6)
    per = mixing_domains_law(domains, ["v"], sizes=(), latent=2)
    imp = mixing_implicit_law(domains, 2, sizes=())
    a = per.fn(x | {"e.v": np.ones(20)}, {"e_mid": [3.0], "kappa1": [1.0], "gaps": [2.0], "z": z})
    b = imp.fn(x, {"e_mid": 3.0, "kappa1": 1.0, "gaps": [2.0], "z": z})
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5)
    assert per.name == "mixing_domains2" and per.evals == ("v",)


def test_cross_validation_finds_latent_terms_only_when_they_are_there():
    df2, domains = _table(1, K=2, n=80, evals=("a",))
    k2, err2 = choose_domain_latent(df2, domains, candidates=(1, 2))
    assert k2 == 2 and err2[2] < 0.7 * err2[1], err2
    df1, _ = _table(2, K=1, n=80, evals=("a",))
    k1, err1 = choose_domain_latent(df1, domains, candidates=(1, 2))
    assert k1 == 1, err1


def _idata(lp):
    lp = np.asarray(lp, float)  # as the log likelihood of one row
    return az.from_dict(posterior={"x": np.zeros_like(lp)}, log_likelihood={"y": lp[..., None]})


def test_a_chain_in_a_negligible_mode_is_dropped_and_recorded():
    rng = np.random.default_rng(0)
    lp = rng.normal(-100, 3, (4, 200))
    lp[3] -= 60  # a worse local optimum: e^-60 of the mass
    out, stuck = drop_minor_modes(_idata(lp))
    assert stuck == [3] and out.posterior.sizes["chain"] == 3
    assert "minor mode" in out.posterior.attrs["dropped_chains"]
    lp[3] += 58  # overlapping densities: the same mode, kept
    assert drop_minor_modes(_idata(lp))[1] == []
    lp[1:3] -= 60
    lp[3] -= 60  # most chains far from one: no majority to trust, nothing dropped
    assert drop_minor_modes(_idata(lp))[1] == []


def test_twenty_domain_prediction_stays_small():
    # draws x rows x 20 x 20: accumulated one evaluation domain at a time
    import resource

    J = 20
    domains, evals = [f"d{j}" for j in range(J)], [f"e{j}" for j in range(J)]
    law = mixing_domains_law(domains, evals, sizes=())
    rng = np.random.default_rng(0)
    S, n = 1000, 2000
    r = rng.dirichlet(np.ones(J), n)
    x = {f"r.{d}": r[None, :, j] for j, d in enumerate(domains)} | {
        f"e.{e}": (np.arange(n) % J == i).astype(np.float32)[None] for i, e in enumerate(evals)}
    p = {"e_mid": np.full((S, 1, J), 3.0, np.float32), "kappa": np.ones((S, 1, J), np.float32),
         "z": rng.normal(0, 0.3, (S, 1, J * J + J)).astype(np.float32)}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = np.asarray(law.fn(x, p))
    grown_gb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1e6
    assert out.shape == (S, n) and np.isfinite(out).all()
    assert grown_gb < 1.0  # [E, S, n] at once, with its temporaries, was several GB


def test_plan_mixture_on_a_one_size_fit(tmp_path):
    from datalaws.cli import main

    df, _ = _table(3, K=1, n=40)
    res = fit(df, "mixing_domains1", method="point", config=FitConfig(progress=False))
    res.save(tmp_path / "fit")
    rc = main(["plan", str(tmp_path / "fit"), "--mixture", "d0=0.4,d1=0.3,d2=0.3",
               "--evals", "a=0.5,b=0.5"])
    assert rc == 0
    out = json.loads((tmp_path / "fit" / "plan.json").read_text())
    best = out["mixture"]
    assert abs(sum(best["mixture"].values()) - 1) < 1e-5
    assert 0.0 <= best["p_beats_runner_up"] <= 1.0 and 0.0 <= best["p_beats_default"] <= 1.0


def test_each_evaluation_domain_has_its_own_noise():
    # a quiet and a noisy validation domain: one sigma for both would over-cover the first
    # and under-cover the second
    rng = np.random.default_rng(4)
    domains, evals, n = ["d0", "d1", "d2"], ["a", "b"], 100
    law = mixing_domains_law(domains, evals, sizes=())
    truth = {"e_mid": [3.0, 3.5], "kappa": [2.0, 1.0], "z": [0.5, -0.5, 0.0, -0.3, 0.6, -0.3]}
    r = rng.dirichlet(np.full(3, 0.7), n)
    df = pd.DataFrame({f"mix.{d}": r[:, j] for j, d in enumerate(domains)})
    x = {f"r.{d}": r[:, j] for j, d in enumerate(domains)}
    for i, sd in (("a", 0.003), ("b", 0.03)):
        onehot = {f"e.{e}": np.full(n, float(e == i)) for e in evals}
        df[f"loss.{i}"] = np.asarray(law.fn(x | onehot, truth)) * np.exp(
            sd * rng.standard_normal(n))
    res = fit(df.iloc[:60], "mixing_domains1", discrepancy="none", config=FitConfig(
        chains=4, warmup=300, draws=300, progress=False, likelihood="normal"))
    ratio = np.median(np.diff(np.log(res.samples()["sigma"]), axis=1))
    assert 1.6 < ratio < 2.9, ratio  # log(0.03 / 0.003) = 2.3
    from datalaws.fit import predict

    test = df.iloc[60:]
    widths = {}
    for i in evals:
        p = predict(res, test[[f"mix.{d}" for d in domains]].assign(**{f"eval.{i}": 1.0}))
        y = test[f"loss.{i}"].to_numpy()
        cover = np.mean((p.loss_q05 <= y) & (y <= p.loss_q95))
        assert 0.75 <= cover <= 1.0, (i, cover)
        widths[i] = np.median(p.loss_q95 - p.loss_q05)
    assert widths["b"] > 5 * widths["a"], widths


def test_least_squares_in_linear_effects_is_the_same_law_in_t():
    from datalaws.fit.mixing_ls import join_domains

    rng = np.random.default_rng(1)
    domains, evals = ["d0", "d1", "d2"], ["a", "b", "c"]
    r = rng.dirichlet(np.ones(3), 30)
    x = {f"r.{d}": r[:, j] for j, d in enumerate(domains)}
    beta_law = mixing_implicit_law(domains, 2, sizes=(), t_coords=False)
    law = mixing_domains_law(domains, evals, sizes=(), latent=2)
    points = [{"e_mid": 3.0 + k, "kappa1": 1.0 + k, "gaps": [3.0], "z": rng.normal(0, 0.5, 6)}
              for k in range(3)]
    joined = join_domains(law, points)
    for k, e in enumerate(evals):
        onehot = {f"e.{v}": np.full(30, float(v == e)) for v in evals}
        np.testing.assert_allclose(np.asarray(law.fn(x | onehot, joined)),
                                   np.asarray(beta_law.fn(x, points[k])), rtol=1e-5)


def test_latent_terms_by_the_one_standard_error_rule():
    from datalaws.fit.mixing_fit import _pick

    assert _pick({1: 0.081, 2: 0.068, 3: 0.066}, {1: 0.004, 2: 0.004, 3: 0.004}) == 2
    assert _pick({1: 0.081, 2: 0.068, 3: 0.060}, {1: 0.004, 2: 0.004, 3: 0.004}) == 3
    assert _pick({1: 0.0300, 2: 0.0297}, {1: 0.0001, 2: 0.0001}) == 1  # within 2%
