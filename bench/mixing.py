"""Data mixing laws on real and simulated sweeps: the posterior (NUTS) vs the paper's Huber
least-squares fit (``--method point``), each case in its own process (peak RSS measured by
the parent with ``wait4``, with the case's CPU seconds; wall time of each fit inside the
child). Wall times are inflated by whatever else the machine runs; compare the two methods
within a run, and read ``cpu_s`` (both fits) for the cost on free cores.

Real: RegMix (../shared/data/regmix_1m.csv; 512 train / 256 test mixtures of 17 Pile domains,
13 validation losses). The per-domain law (K latent terms per evaluation domain chosen by
cross-validation over mixtures, K = 1 the paper's eq. 1) is fitted on the train split
(``regmix``: all 13 validation losses in one law, sampled one evaluation domain at a time by
fit/blocks.py; ``regmix_pile_cc``: Pile-CC alone), Pile-CC loss is
predicted for the test split (Spearman, MAE, 90% coverage); ``regmix_each`` fits every
validation loss alone (K = 1: its own law, its own effect prior) and predicts each on the
test split, one row per domain and method with its time and diagnostics; the 1M fit then ranks the
mixtures trained at 60M and 1B (rank correlation of predicted 1M loss with the observed loss
there; beside it, the observed 1M test loss against the 60M one, the ceiling of any 1M
model).

Simulated: one-size per-domain sweeps with 2, 5 and 20 domains (as many evaluation domains as
training domains up to 5, 20 x 20 for the big one), a 3-size sweep (joint form) and an
implicit two-latent sweep, with known parameters: coverage of the true effects (recovery),
held-out 90% coverage, median |error| of NUTS vs least squares. One simulated data set's
held-out rows share one fit's errors (and, against the noisy losses, one draw of noise that
is ~5x the estimation error), so the small sweeps are also refitted on ``--replicates R``
more data sets (default 3; seeds 1..R) and the mean over all R + 1 is printed beside seed 0.

Usage: python bench/mixing.py [case ...] [--quick] [--timeout S] [--replicates R]
(default: every case, 4 chains x 500 warmup + 1000 draws, FitConfig's defaults; `--quick`
4 x 300 + 300; a case running past S seconds, default 900, is stopped and its peak memory
reported)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CASES = ("regmix", "regmix_pile_cc", "regmix_implicit", "regmix_each", "sim2", "sim5", "sim20",
         "sim_sizes", "sim_implicit")
QUICK = "--quick" in sys.argv
TIMEOUT = float(sys.argv[sys.argv.index("--timeout") + 1]) if "--timeout" in sys.argv else 900.0
REPLICATES = int(sys.argv[sys.argv.index("--replicates") + 1]) if "--replicates" in sys.argv else 3
REPLICATED = ("sim2", "sim5", "sim_sizes", "sim_implicit")  # cheap enough to refit (~1 min)


def _config():
    from datalaws.fit import FitConfig

    if QUICK:
        return FitConfig(chains=4, warmup=300, draws=300, progress=False)
    return FitConfig(progress=False)  # the defaults: what "diagnostics pass" means


def _metrics(pred, y) -> dict:
    import numpy as np
    from scipy.stats import spearmanr

    med = pred["loss_law_q50"].to_numpy()
    return {"spearman": float(spearmanr(med, y)[0]), "mae": float(np.mean(np.abs(med - y))),
            "median_err": float(np.median(np.abs(med - y))),
            "cov90": float(np.mean((pred["loss_q05"] <= y) & (y <= pred["loss_q95"]))),
            "finite": bool(np.isfinite(pred.filter(like="loss").to_numpy()).all())}


def _checks(r) -> dict:
    """R-hat (worst), bulk and tail ESS (lowest), divergences of a NUTS fit; {} for a point
    fit (nothing sampled)."""
    c = r.diagnostics.to_dict().get("checks", {}) if r.diagnostics else {}
    return {k: c[k]["value"] for k in ("r_hat", "ess_bulk", "ess_tail", "divergences")
            if k in c}


def _fit_both(train, law, test_points, y, clean=None, **kw) -> dict:
    """Both methods on one split; with ``clean`` (the simulated law without noise at the
    test points) also each method's median |error| against it: the held-out noise (1%,
    ~0.03 nats) dwarfs the estimation error (~0.006), so the error against the noisy
    losses differs between methods by chance more than by method."""
    import numpy as np

    from datalaws.fit import fit, predict

    out = {}
    for method in ("nuts", "point"):
        t0, c0 = time.perf_counter(), time.process_time()
        r = fit(train, law, config=_config(), discrepancy="none", method=method, **kw)
        pred = predict(r, test_points)
        if clean is not None:
            out.setdefault("median_err_law", {})[method] = float(np.median(np.abs(
                pred["loss_law_q50"].to_numpy() - clean)))
        out[method] = _metrics(pred, y) | {
            "fit_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
            "law": r.law.name,
            "diagnostics": r.diagnostics.failures() or "ok", "checks": _checks(r),
            "dropped_chains": r.idata.posterior.attrs.get("dropped_chains"),
            "resampled": r.data.get("resampled")}
        out[method]["_result"] = r
        # K latent terms are chosen once (cross-validated least squares: minutes at 13 x 17)
        law = r.law.name + ("1" if r.law.name == "mixing_domains" else "")
    return out


def _regmix(evals: str) -> dict:
    import numpy as np
    import pandas as pd
    from scipy.stats import spearmanr

    from datalaws.fit import predict

    df = pd.read_csv(DATA / "regmix_1m.csv")
    mix = [c for c in df if c.startswith("mix.")]
    loss = [c for c in df if c.startswith("loss.")]
    if evals in ("pile_cc", "implicit"):  # the implicit form: Pile-CC as the overall loss
        loss = ["loss.pile_cc"]
    train = df[df.split == "train"][mix + loss]
    test = df[df.split == "test"]
    if evals == "implicit":
        train = train.rename(columns={"loss.pile_cc": "loss"})[mix + ["loss"]]
        pts = test[mix]
        law = "mixing_implicit"
    else:
        pts = test[mix].assign(**{"eval.pile_cc": 1.0})
        law = "mixing_domains"
    out = _fit_both(train, law, pts, test["loss.pile_cc"].to_numpy())
    for size in ("60m", "1b"):
        big = pd.read_csv(DATA / f"regmix_{size}.csv")
        bp = big[mix] if evals == "implicit" else big[mix].assign(**{"eval.pile_cc": 1.0})
        for method in ("nuts", "point"):
            p = predict(out[method]["_result"], bp)["loss_law_q50"]
            out[method][f"rank_{size}"] = float(spearmanr(p, big["loss.pile_cc"])[0])
    m60 = pd.read_csv(DATA / "regmix_60m.csv").set_index("source_index")["loss.pile_cc"]
    obs = test.set_index("source_index")["loss.pile_cc"]
    out["observed_1m_vs_60m"] = float(spearmanr(obs, m60.loc[obs.index])[0])
    for method in ("nuts", "point"):
        out[method].pop("_result")
    out["n_train"], out["n_test"] = int(len(train)), int(len(test))
    return out | {"evals": len(loss), "domains": len(mix), "finite_check": bool(np.isfinite(
        out["nuts"]["mae"]))}


def _simulated(J: int, n_evals: int, n: int, seed: int = 0) -> dict:
    import numpy as np
    import pandas as pd

    from datalaws.fit.mixing import mixing_domains_law

    rng = np.random.default_rng(seed)
    domains = [f"d{j:02d}" for j in range(J)]
    evals = [f"e{i:02d}" for i in range(n_evals)]
    law = mixing_domains_law(domains, evals, sizes=())
    z = rng.normal(0, 0.6, (n_evals, J))
    z = (z - z.mean(axis=1, keepdims=True)).ravel()
    truth = {"e_mid": rng.uniform(2.5, 4.0, n_evals), "kappa": rng.uniform(1.0, 4.0, n_evals),
             "z": np.concatenate([z, np.zeros(J)]) if n_evals >= 3 else z}
    r = rng.dirichlet(np.full(J, 0.7), n + 100)
    df = pd.DataFrame({f"mix.{d}": r[:, j] for j, d in enumerate(domains)})
    x = {f"r.{d}": r[:, j] for j, d in enumerate(domains)}
    clean = {}
    for i in evals:
        onehot = {f"e.{e}": np.full(len(df), float(e == i)) for e in evals}
        clean[i] = np.asarray(law.fn(x | onehot, truth))
        df[f"loss.{i}"] = clean[i] * np.exp(0.01 * rng.standard_normal(len(df)))
    train, test = df.iloc[:n], df.iloc[n:]
    pts = pd.concat([test[[f"mix.{d}" for d in domains]].assign(
        **{f"eval.{e}": float(e == i) for e in evals}) for i in evals], ignore_index=True)
    y = np.concatenate([test[f"loss.{i}"].to_numpy() for i in evals])
    out = _fit_both(train, "mixing_domains", pts, y,
                    clean=np.concatenate([clean[i][n:] for i in evals]))
    s = out["nuts"].pop("_result").samples()
    out["point"].pop("_result")
    b = s["z"][:, : n_evals * J].reshape(len(s["z"]), n_evals, J)
    lo, hi = np.quantile(b - b.mean(-1, keepdims=True), [0.05, 0.95], axis=0)
    tb = truth["z"][: n_evals * J].reshape(n_evals, J)
    out["recovery90"] = float(np.mean((lo <= tb) & (tb <= hi)))
    return out | {"params": len(law.params), "rows": int(n * n_evals)}


def _sim_sizes(seed: int = 0) -> dict:
    import numpy as np
    import pandas as pd

    from datalaws.fit.mixing import mixing_law

    rng = np.random.default_rng(3 + seed)
    domains = ["books", "code", "web", "wiki"]
    law = mixing_law(domains, sizes=("N",))
    truth = {"e_mid": 2.6, "kappa": 2.0, "z": np.array([0.5, -0.6, 0.1, 0.0]), "a": 0.4,
             "alpha": 0.33}
    n = 120
    r = rng.dirichlet(np.full(4, 0.7), n + 40)
    params = np.concatenate([np.repeat([2e7, 6e7, 2e8], n // 3), np.full(40, 6e8)])
    df = pd.DataFrame({"params": params} | {f"mix.{d}": r[:, j] for j, d in enumerate(domains)})
    x = {"N": params / np.exp(np.log(params[:n]).mean())} | {f"r.{d}": r[:, j]
                                                            for j, d in enumerate(domains)}
    clean = np.asarray(law.fn(x, truth))
    df["loss"] = clean * np.exp(0.01 * rng.standard_normal(len(df)))
    out = _fit_both(df.iloc[:n], "mixing", df.iloc[n:].drop(columns="loss"),
                    df.loss.to_numpy()[n:], clean=clean[n:])
    for m in ("nuts", "point"):
        out[m].pop("_result")
    return out | {"note": "held out: 40 new mixtures at 3x the largest size"}


def _sim_implicit(seed: int = 0) -> dict:
    import numpy as np
    import pandas as pd

    from datalaws.fit.laws import get_law

    rng = np.random.default_rng(5 + seed)
    domains = ["books", "code", "web", "wiki", "arxiv"]
    law = get_law("mixing_implicit2", domains=domains, sizes=())
    z = rng.normal(0, 0.6, (2, 5))
    z = (z - z.mean(axis=1, keepdims=True)) * np.array([[1.0], [5.0]])  # latent 2 by t = 5 beta
    truth = {"e_mid": 3.0, "kappa1": 1.0, "gaps": np.array([4.0]), "z": z.ravel()}
    r = rng.dirichlet(np.full(5, 0.7), 240)
    x = {f"r.{d}": r[:, j] for j, d in enumerate(domains)}
    df = pd.DataFrame({f"mix.{d}": r[:, j] for j, d in enumerate(domains)})
    clean = np.asarray(law.fn(x, truth))
    df["loss"] = clean * np.exp(0.005 * rng.standard_normal(240))
    out = _fit_both(df.iloc[:160], "mixing_implicit", df.iloc[160:].drop(columns="loss"),
                    df.loss.to_numpy()[160:], clean=clean[160:])
    for m in ("nuts", "point"):
        out[m].pop("_result")
    return out | {"note": "K chosen by 5-fold CV over mixtures (truth K = 2)"}


def _regmix_each() -> dict:
    """Each RegMix validation loss fitted alone (K = 1) and predicted on the test split."""
    import pandas as pd

    df = pd.read_csv(DATA / "regmix_1m.csv")
    mix = [c for c in df if c.startswith("mix.")]
    train, test = df[df.split == "train"], df[df.split == "test"]
    out = {}
    for col in sorted(c for c in df if c.startswith("loss.")):
        r = _fit_both(train[mix + [col]], "mixing_domains1",
                      test[mix].assign(**{f"eval.{col[5:]}": 1.0}), test[col].to_numpy())
        for method in ("nuts", "point"):
            r[method].pop("_result")
        out[col[5:]] = r
    return {"domains": out}


def _print_each(r: dict) -> None:
    total = {"nuts": 0.0, "point": 0.0}
    for domain, res in r["domains"].items():
        for m in ("nuts", "point"):
            total[m] += res[m]["fit_s"]
            print(_row(domain[:16], res | {"peak_rss_gb": r["peak_rss_gb"]}, m), flush=True)
    ok = sum(res["nuts"]["diagnostics"] == "ok" for res in r["domains"].values())
    print(f"{'':16s} {len(r['domains'])} domains fitted one at a time: NUTS {total['nuts']:.0f} s "
          f"in all, least squares {total['point']:.0f} s; diagnostics pass on {ok}; case "
          f"cpu {r['cpu_s']:.0f} s", flush=True)


def run_case(name: str, seed: int = 0) -> dict:
    if name == "regmix_each":
        return _regmix_each()
    if name.startswith("regmix"):
        return _regmix({"regmix": "all", "regmix_pile_cc": "pile_cc",
                        "regmix_implicit": "implicit"}[name])
    if name.startswith("sim") and name[3:].isdigit():
        J = int(name[3:])
        return _simulated(J, min(J, 5) if J < 20 else 20, 200 if J == 20 else 40 * J // 2 + 40,
                          seed=seed)
    return {"sim_sizes": _sim_sizes, "sim_implicit": _sim_implicit}[name](seed)


def _child(name: str, seed: int = 0) -> dict:
    """Run one case in a fresh process: its result and its peak RSS (GB)."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", name, str(seed)]
                            + (["--quick"] if QUICK else []), stdout=subprocess.PIPE, text=True)
    t0, chunks, stopped = time.perf_counter(), [], False
    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    while True:  # reaped here, not by Popen: wait4 gives this child's own peak RSS
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if not stopped and time.perf_counter() - t0 > TIMEOUT:
            proc.kill()
            stopped = True
        time.sleep(0.5)
    reader.join()
    out = "".join(chunks)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if stopped or proc.returncode != 0:
        why = (f"stopped after {time.perf_counter() - t0:.0f} s" if stopped
               else f"exit {proc.returncode}")
        return {"error": f"{why}; peak RSS {usage.ru_maxrss / 1e6:.2f} GB, "
                         f"cpu {usage.ru_utime + usage.ru_stime:.0f} s"}
    res = json.loads(out.strip().splitlines()[-1])
    # CPU seconds of the whole case (both methods, prediction): on a shared machine the wall
    # clock measures the neighbours; CPU time / 2 bounds the wall time on 2 free cores
    return res | {"peak_rss_gb": usage.ru_maxrss / 1e6,  # KiB on Linux
                  "cpu_s": usage.ru_utime + usage.ru_stime}


def _row(name, r, m):
    v = r[m]
    extra = "".join(f" {v.get(k, float('nan')):7.3f}" for k in ("rank_60m", "rank_1b"))
    return (f"{name:16s} {m:5s} {v['spearman']:8.4f} {v['mae']:7.4f} {v['median_err']:7.4f} "
            f"{v['cov90']:6.2f} {v['fit_s']:7.0f} {v['cpu_s']:7.0f} {r['peak_rss_gb']:6.2f}"
            f"{extra} {_diag(v.get('checks', {}))}  "
            f"{v['law']} {'' if v['diagnostics'] == 'ok' else 'DIAG: ' + str(v['diagnostics'])}"
            + (" (resampled: first run failed)" if v.get("resampled") else ""))


def _diag(c: dict) -> str:
    if not c:
        return f"{'-':>6s} {'-':>5s} {'-':>5s} {'-':>3s}"
    return (f"{c.get('r_hat', float('nan')):6.3f} {c.get('ess_bulk', float('nan')):5.0f} "
            f"{c.get('ess_tail', float('nan')):5.0f} {c.get('divergences', 0):3.0f}")


def main() -> None:
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        print(json.dumps(run_case(sys.argv[i + 1], int(sys.argv[i + 2])), default=str))
        return
    names = [a for a in sys.argv[1:] if not a.startswith("--") and a in CASES] or list(CASES)
    print(f"{'case':16s} {'meth':5s} {'spearman':>8s} {'mae':>7s} {'mederr':>7s} {'cov90':>6s} "
          f"{'fit_s':>7s} {'cpu_s':>7s} {'rss_gb':>6s} {'r60m':>7s} {'r1b':>7s} {'rhat':>6s} "
          f"{'essB':>5s} {'essT':>5s} {'div':>3s}")
    for name in names:
        r = _child(name)
        if "error" in r:
            print(f"{name:16s} {r['error']}")
            continue
        if isinstance(r.get("domains"), dict):  # regmix_each: one row per domain
            _print_each(r)
            continue
        for m in ("nuts", "point"):
            print(_row(name, r, m), flush=True)
        notes = {k: v for k, v in r.items() if k not in ("nuts", "point", "peak_rss_gb")}
        notes["nuts_share"] = round(r["nuts"]["fit_s"] / (r["nuts"]["fit_s"] + r["point"][
            "fit_s"]), 2)
        print(f"{'':16s} {notes}", flush=True)
        if name in REPLICATED and REPLICATES:
            _replicates(name, r)


def _summary(r: dict) -> dict:
    """One data set's comparison: median |error| (vs the noisy held-out losses and vs the
    true law) per method, NUTS's held-out 90% coverage and recovery, its diagnostics."""
    law = r.get("median_err_law", {})
    return {"err_nuts": r["nuts"]["median_err"], "err_point": r["point"]["median_err"],
            "law_nuts": law.get("nuts", float("nan")), "law_point": law.get("point",
                                                                           float("nan")),
            "cov90": r["nuts"]["cov90"], "cov90_point": r["point"]["cov90"],
            "recovery90": r.get("recovery90", float("nan")),
            "diag_ok": r["nuts"]["diagnostics"] == "ok",
            "resampled": bool(r["nuts"].get("resampled"))}


def _replicates(name: str, first: dict) -> None:
    """Seeds 1..REPLICATES of a simulated case, each in its own process, and the mean over
    them and seed 0."""
    import numpy as np

    rows = {0: _summary(first)}
    for seed in range(1, REPLICATES + 1):
        r = _child(name, seed)
        if "error" in r:
            print(f"{'':16s} seed {seed}: {r['error']}")
            continue
        rows[seed] = _summary(r)
        if r["nuts"]["diagnostics"] != "ok":
            print(f"{'':16s} seed {seed}: DIAG {r['nuts']['diagnostics']}"
                  + (f" ({r['nuts']['resampled']})" if r["nuts"].get("resampled") else ""))
    cols = list(rows[0])
    print(f"{'':16s} seed " + " ".join(f"{c:>11s}" for c in cols))
    for seed, row in rows.items():
        print(f"{'':16s} {seed:4d} " + " ".join(f"{float(row[c]):11.4f}" for c in cols))
    mean = {c: float(np.mean([float(row[c]) for row in rows.values()])) for c in cols}
    print(f"{'':16s} mean " + " ".join(f"{mean[c]:11.4f}" for c in cols)
          + f"   ({len(rows)} data sets)", flush=True)


if __name__ == "__main__":
    main()
