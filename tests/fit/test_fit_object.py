"""A fit is one typed object: saved and loaded it is equal to itself and predicts bit for bit
the same; priors travel as numbers; a folder written by the previous version (summary.json
read back as state, priors as text) is refused in one line with the bad-input exit code. A
fit whose sampler diagnostics fail is sampled once more, carefully (smaller steps, twice the
warmup and the draws); the second run's draws and verdict stand and the fit says why it was
resampled. Runs too short to pass the bars by their length are not resampled."""

import json

import numpy as np
import numpyro.distributions as dist
import pandas as pd
import pytest

from datalaws.cli import main
from datalaws.exitcodes import EXIT_BAD_INPUT
from datalaws.fit import Fit, FitConfig, fit, get_law, predict
from datalaws.fit.result import FitFormatError, dist_from_dict, dist_to_dict
from datalaws.fit.sampling import RETRY_TARGET_ACCEPT


def _runs(n: int = 16, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    N = np.geomspace(2e7, 2e9, n)
    D = N * rng.uniform(10, 40, n)
    L = 1.8 + 0.4 * (N / 1e8) ** -0.34 + 0.4 * (D / 2e9) ** -0.28
    return pd.DataFrame({"params": N, "tokens": D,
                         "loss": L * np.exp(0.01 * rng.standard_normal(n))})


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    # a prior override, a held-out set and a backtest: every field of the Fit is filled
    r = fit(_runs(), "chinchilla", priors={"alpha": "LogNormal(-1.2, 0.4)",
                                           "sigma": "HalfNormal(0.05)"},
            holdout="params > 1e9", config=FitConfig(chains=2, warmup=100, draws=100,
                                                     progress=False))
    path = tmp_path_factory.mktemp("fit") / "chin"
    r.save(path)
    return r, path


def test_saved_fit_loads_equal_and_predicts_bitwise(fitted):
    r, path = fitted
    loaded = Fit.load(path)
    assert loaded == r
    # 2 x 100 draws cannot reach an ESS of 400: a careful rerun of that length would not either
    assert not r.diagnostics.ok and "resampled" not in r.data and r.config.warmup == 100
    assert loaded.discrepancy_k == r.discrepancy_k > 0
    assert loaded.law.groups == r.law.groups and loaded.columns == r.columns
    assert dist_to_dict(loaded.law.params[2].prior) == {"dist": "LogNormal", "loc": -1.2,
                                                        "scale": 0.4}
    assert dist_to_dict(loaded.noise["sigma"]) == {"dist": "HalfNormal", "scale": 0.05}
    pts = pd.DataFrame({"params": [3e8, 1e10, 1e11], "tokens": [6e9, 2e11, 2e12]})
    a, b = predict(r, pts), predict(loaded, pts)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    # state is fit.json; summary.json is an export for people
    state = json.loads((path / "fit.json").read_text())
    assert state["priors"]["alpha"] == {"dist": "LogNormal", "loc": -1.2, "scale": 0.4}
    assert "params" in json.loads((path / "summary.json").read_text())
    # a changed field makes them unequal
    loaded.discrepancy = loaded.discrepancy | {"k": 0.0}
    assert loaded != r


def test_predict_in_blocks_matches_one_block(fitted, monkeypatch, capsys):
    # a long grid is predicted a block of points at a time (memory); the law's columns and
    # the distances do not depend on the blocks, and the noisy run's quantiles only by noise
    from datalaws.fit import api

    r, _ = fitted
    pts = pd.DataFrame({"params": np.geomspace(1e8, 1e11, 7),
                        "tokens": np.geomspace(2e9, 2e12, 7)})
    whole = predict(r, pts)
    monkeypatch.setattr(api, "PREDICT_BLOCK", 3)
    blocks = predict(r, pts, progress=True)
    assert "predicting 7 points: 3/3 (100%)" in capsys.readouterr().out  # a live line
    assert list(blocks.columns) == list(whole.columns) and len(blocks) == len(pts)
    law = [c for c in whole if c.startswith(("loss_law", "distance"))]
    pd.testing.assert_frame_equal(blocks[law], whole[law], check_exact=True)
    pd.testing.assert_frame_equal(blocks.iloc[:3], predict(r, pts.iloc[:3]), check_exact=True)
    # 200 draws: the medians of two noise draws differ by Monte Carlo error, well inside
    assert (abs(blocks.loss_q50 - whole.loss_q50) < 0.25 * (whole.loss_q95 - whole.loss_q05)).all()
    assert not blocks.loss_q95.equals(whole.loss_q95)  # its own noise, not a copy of block 0


def test_priors_round_trip_as_numbers():
    for d in (dist.LogNormal(-0.7, 1.0), dist.Gamma(2.0, 0.1), dist.Normal(0.0, 2.0),
              dist.Beta(1.0, 4.0), dist.StudentT(3.0, 0.0, 1.0),
              dist.Normal(0.0, 1.0).expand([3]).to_event(1)):
        spec = dist_to_dict(d)
        back = dist_from_dict(json.loads(json.dumps(spec)))
        assert type(back) is type(d) and dist_to_dict(back) == spec
        x = np.full(d.event_shape, 0.3) if d.event_shape else 0.3
        np.testing.assert_allclose(back.log_prob(x), d.log_prob(x), rtol=1e-6)
    # a prior numpyro does not name (a law's own class, e.g. the per-domain mixing law's
    # pooled effects) is left to the law to rebuild; the others are numbers
    from datalaws.fit.mixing import PooledEffects

    assert dist_to_dict(PooledEffects(2, 3)) is None
    law = get_law("mixing_domains", domains=["a", "b"], evals=["a", "b"])
    assert dist_to_dict(law.params[0].prior)["dist"] == "Independent"


def _old_fit_folder(path) -> None:
    """A fit folder as the previous version wrote it (c4093d3's save_fit): summary.json with
    priors as formatted text, posterior.nc, point_fit.json; no fit.json."""
    import arviz as az

    path.mkdir()
    summary = {"law": "chinchilla", "columns": {"N": "params", "D": "tokens", "loss": "loss"},
               "scales": {"N": 1e8, "D": 2e9}, "likelihood": "studentt",
               "priors": {"alpha": "LogNormal(-1.05, 0.5)"}, "prior_overrides": {},
               "discrepancy": {"k": 0.1, "x_max_fit": 1e9}, "data_hash": "x",
               "diagnostics": {"ok": True, "checks": {}, "failures": []}}
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "point_fit.json").write_text(json.dumps({"params": {"E": 1.8}}))
    az.from_dict(posterior={"E": np.ones((1, 10))}).to_netcdf(str(path / "posterior.nc"))


def test_a_previous_version_fit_fails_in_one_line(tmp_path, capsys):
    old = tmp_path / "old"
    _old_fit_folder(old)
    with pytest.raises(FitFormatError, match="older datalaws.*refit"):
        Fit.load(old)
    pd.DataFrame({"params": [1e9], "tokens": [2e10]}).to_csv(tmp_path / "pts.csv", index=False)
    code = main(["predict", str(old), "--at", str(tmp_path / "pts.csv"), "--out",
                 str(tmp_path / "p.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_BAD_INPUT
    assert len(err) == 1 and err[0].startswith("error: ") and "refit" in err[0], err
    assert not (tmp_path / "p.csv").exists()


def test_a_format_2_fit_loads_unless_its_sigmoid_link_had_the_old_ceiling(fitted, tmp_path):
    import shutil

    r, path = fitted
    for link, loads in ((None, True), ({"tasks": ["arc"], "floors": [0.25], "form": "sigmoid",
                                        "ref_loss": 3.0}, False)):
        old = tmp_path / f"v2_{loads}"
        shutil.copytree(path, old)
        state = json.loads((old / "fit.json").read_text())
        (old / "fit.json").write_text(json.dumps(state | {"format": 2, "link": link}))
        if loads:
            loaded = Fit.load(old)
            assert loaded.law.name == r.law.name and loaded.link is None
            assert loaded.discrepancy_k == r.discrepancy_k
        else:
            with pytest.raises(FitFormatError, match="old ceiling.*refit"):
                Fit.load(old)


def test_compare_reads_saved_fits(fitted, tmp_path, capsys):
    r, path = fitted
    r.save(tmp_path / "again")  # the same law twice: equal scores, both ranked
    assert main(["compare", str(path), str(tmp_path / "again")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ranked by ") and out.count("chinchilla:") == 2
    assert "elpd_loo" in out and "backtest_log_score" in out


def test_a_damaged_fit_json_is_one_line(fitted, tmp_path):
    r, _ = fitted
    r.save(tmp_path / "f")
    state = json.loads((tmp_path / "f" / "fit.json").read_text())
    del state["columns"]
    (tmp_path / "f" / "fit.json").write_text(json.dumps(state))
    with pytest.raises(FitFormatError, match="fit.json: unreadable.*columns"):
        Fit.load(tmp_path / "f")
    (tmp_path / "f" / "fit.json").write_text("{")
    with pytest.raises(FitFormatError, match="corrupt"):
        Fit.load(tmp_path / "f")


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
