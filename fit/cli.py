"""`datalaws fit`, `datalaws predict`, `datalaws laws`."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register_cli"]


def _pairs(text: str | None, what: str) -> dict[str, str]:
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        if "=" not in item:
            raise ValueError(f"{what}: expected KEY=VALUE pairs separated by commas, got {item!r}")
        k, v = item.split("=", 1)
        if k.strip() in out:
            raise ValueError(f"{what}: {k.strip()} is given twice")
        out[k.strip()] = v.strip()
    return out


def _positive(values: list[str], flag: str, text: str) -> list[float]:
    """``values`` as positive finite numbers, or one line naming ``flag`` and its ``text``."""
    import math

    try:
        out = [float(v) for v in values]
    except ValueError:
        raise ValueError(f"{flag} {text!r}: not numbers") from None
    if not all(math.isfinite(v) and v > 0 for v in out):
        raise ValueError(f"{flag} {text!r}: each value must be a positive finite number")
    return out


def _cmd_fit(a: argparse.Namespace) -> int:
    from datalaws.cli import EXIT_BAD_DIAGNOSTICS
    from datalaws.fit.api import fit
    from datalaws.fit.infer import FitConfig
    from datalaws.fit.table import filter_rows, read_table, validate_table

    out_dir = _check_fit_out(a.out, a.force)  # before reading or sampling anything
    df = filter_rows(validate_table(read_table(a.data), source=str(a.data)), a.where)
    priors = _priors(a.prior)
    result = fit(df, a.law, config=FitConfig(chains=a.chains, warmup=a.warmup, draws=a.draws,
                                             seed=a.seed, likelihood=a.likelihood),
                 columns=_pairs(a.columns, "--columns"), priors=priors, holdout=a.holdout,
                 discrepancy=a.discrepancy, accuracy=a.accuracy,
                 floors=_floors(a.floors),
                 method=a.method)
    out = result.save(out_dir)
    _print_summary(result.summary)
    print(f"wrote {out}/fit.json, posterior.nc, summary.json")
    if not result.diagnostics.ok:
        for f in result.diagnostics.failures():
            print(f"DIAGNOSTIC FAILED: {f}", file=sys.stderr)
        if not a.allow_bad:
            print("the fit was written but its sampler diagnostics failed; do not trust it "
                  "(rerun with more --warmup/--draws, or --allow-bad to accept)", file=sys.stderr)
            return EXIT_BAD_DIAGNOSTICS
    return 0


FIT_MARKERS = ("fit.json", "summary.json", "posterior.nc")  # a folder holding these is a fit


def _check_fit_out(out: str, force: bool):
    """Refuse an output folder before sampling: a file, or an existing fit without --force,
    or a non-empty folder that is not a fit (a run, a store) even with --force."""
    from pathlib import Path

    from datalaws.io import OutputError, check_output_dir

    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not any((out / m).exists()
                                                       for m in FIT_MARKERS):
        raise OutputError(f"--out {out}: a non-empty folder that is not a fit; choose "
                          "another folder")
    return check_output_dir(out, force=force)


def _priors(items: list[str] | None) -> dict[str, str]:
    """``--prior name=Dist(args)``, each checked now (not after the data are read)."""
    from datalaws.fit.laws import parse_priors

    out = {}
    for item in items or []:
        name, eq, text = item.partition("=")
        if not eq or not name.strip():
            raise ValueError(f"--prior {item!r}: write name=Distribution(args), e.g. "
                             "alpha='LogNormal(-1,0.3)'")
        if name.strip() in out:
            raise ValueError(f"--prior {name.strip()} is given twice")
        out[name.strip()] = text.strip()
    try:
        parse_priors(out)
    except ValueError as e:
        raise ValueError(f"--{e}") from None  # "--prior alpha=...: ..."
    return out


def _print_summary(s: dict) -> None:
    print(f"{s['law']}: {s['formula']}  ({s['n_rows']} runs)")
    print(f"{'param':>10} {'mean':>10} {'q05':>10} {'q95':>10} {'r_hat':>6} {'ess_bulk':>8}")
    nan = float("nan")  # a point fit (--method point) has no sampler statistics
    hidden = [n for n in s["params"] if n.startswith("z[")]  # the mixing laws' effects
    for name, p in s["params"].items():
        if name not in hidden:
            print(f"{name:>10} {p['mean']:10.4g} {p['q05']:10.4g} {p['q95']:10.4g} "
                  f"{p.get('r_hat', nan):6.3f} {p.get('ess_bulk', nan):8.0f}")
    if hidden:  # mixing laws: hundreds of standardised effects; the file has them all
        print(f"{'':>10} ({len(hidden)} mixture effects z[*] in summary.json)")
    for name, p in s["derived"].items():
        print(f"{name:>10} {p['mean']:10.4g} {p['q05']:10.4g} {p['q95']:10.4g}   (derived)")
    d = s["discrepancy"]
    axes = ", ".join(a["name"] for a in d["axes"])
    print(f"discrepancy: {d['mode']}, k = {d['k']:.4g} (distance along {axes}; "
          f"k from {d.get('k_source', d['mode'])})")
    for g, v in (d.get("k_axes") or {}).items():
        p0 = f"  P(k = 0) = {v['p_zero']:.2f}" if v.get("p_zero") is not None else ""
        print(f"  k[{g}] = {v['q50']:.4g} [{v['q05']:.4g}, {v['q95']:.4g}]{p0}")
    bad = [i for i, f in enumerate(d.get("folds") or []) if not f.get("ok", True)]
    if bad:
        print(f"  backtest folds {bad} did not converge: k may be off")
    if s.get("accuracy") and "pearson" in s["accuracy"]:
        r = s["accuracy"]["pearson"]
        print(f"pearson(predicted, observed accuracy) = {r['q50']:.3f} "
              f"[{r['q05']:.3f}, {r['q95']:.3f}]")
        link = s["accuracy"].get("diagnostics")
        if link:  # its own sampler, reported apart: a weak link does not fail the loss fit
            print("accuracy link diagnostics: " + ("pass" if link["ok"] else
                  "FAIL (" + "; ".join(link["failures"]) + "): its intervals are suspect"))
        drift = s["accuracy"].get("drift")
        if drift:
            source = (f"{drift['folds']} backtest folds along loss" if drift["folds"] else
                      f"too few runs to backtest: its prior, {drift['k_prior']}")
            print(f"accuracy link drift below loss {drift['loss_min']:.4g} (k per unit of log "
                  f"loss; {source}): " + ", ".join(
                      f"{t} {v['q50']:.2g} [{v['q05']:.2g}, {v['q95']:.2g}]"
                      for t, v in drift["k_tasks"].items()))
    if "holdout" in s:
        print(f"held out ({s['holdout_expr']}):")
        for q, h in s["holdout"].items():
            cov = ", ".join(f"{k}: {v:.2f}" for k, v in h["coverage"].items())
            far = (f"; {h['n_unbacktested']} {_unbacktested(s.get('discrepancy', {}))}"
                   if h.get("n_unbacktested") and "_law" not in q else "")  # law: no widening
            print(f"  {q:9s} n={h['n']} median |err| {h['median_abs_err']:.4f}  "
                  f"coverage {cov}{far}")
    ok = "pass" if s["diagnostics"]["ok"] else "FAIL"
    print(f"diagnostics: {ok}")


def _cmd_predict(a: argparse.Namespace) -> int:
    from datalaws.fit.api import predict
    from datalaws.fit.result import Fit
    from datalaws.fit.table import read_table
    from datalaws.io import TABLE_SUFFIXES, check_output_file, write_table

    dest = check_output_file(a.out, force=a.force, suffixes=TABLE_SUFFIXES,
                             protect=FIT_MARKERS)
    quantiles = _quantiles(a.quantiles)
    result = Fit.load(a.fit_dir)
    points = result.law.prepare(read_table(a.at), where=str(a.at), validate=True)
    out = predict(result, points, quantiles=quantiles, progress=True)
    write_table(out, dest)  # .csv or .parquet, as the extension says
    print(f"wrote {len(out)} predictions to {dest}")
    far = out["distance_unbacktested"].to_numpy()
    if (far > 0).any():
        print(f"{int((far > 0).sum())} of {len(out)} points lie up to {far.max():.2f} log units "
              f"{_unbacktested(result.discrepancy)}; see distance_unbacktested")
    return 0


def _unbacktested(discrepancy: dict) -> str:
    """Where a point with a distance_unbacktested lies, and what sets its interval there."""
    if discrepancy.get("mode") == "none":
        return "beyond the fitted runs, with no discrepancy term to widen them"
    if discrepancy.get("k_reach") is None:
        return "beyond the fitted runs with no backtest possible, widened by the k prior"
    return "past the farthest run a backtest fold predicted, widened by the k prior"


def _floors(text: str | None) -> dict[str, float]:
    out = {}
    for k, v in _pairs(text, "--floors").items():
        try:
            out[k] = float(v)
        except ValueError:
            raise ValueError(f"--floors {k}={v!r}: chance accuracy must be a number in [0, 1)"
                             ) from None
    return out


def _quantiles(text: str) -> list[float]:
    try:
        qs = [float(q) for q in text.split(",")]
    except ValueError:
        raise ValueError(f"--quantiles {text!r}: write numbers in (0, 1), e.g. 0.05,0.5,0.95"
                         ) from None
    if not all(0 < q < 1 for q in qs):
        raise ValueError(f"--quantiles {text!r}: each must lie strictly between 0 and 1")
    names = [round(q * 100) for q in qs]  # the columns are named _qNN
    if len(set(names)) < len(names):
        raise ValueError(f"--quantiles {text!r}: two of them name one column _qNN (whole "
                         "percents); give each once")
    return qs


def _cmd_laws(a: argparse.Namespace) -> int:
    from datalaws.fit.accuracy import DEFAULT_FLOOR
    from datalaws.fit.discrepancy import DEFAULT_K_SCALE
    from datalaws.fit.laws import DISCREPANCY_FORM, LAWS, NOISE_PRIORS
    from datalaws.fit.result import prior_str

    for law in LAWS.values():
        print(f"{law.name}: {law.formula}")
        print(f"  source: {law.reference}")
        print(f"  inputs: {', '.join(f'{r}<-{c}' for r, c in law.inputs.items())}; "
              f"extrapolates along {', '.join(a.name for a in law.axes) or law.axis}")
        for p in law.params:
            print(f"  {p.name:>8} ~ {prior_str(p.prior):28s} {p.meaning}")
        print()
    print("noise on log loss (every law): Student-t(nu, log L, sigma) with nu > 2, or "
          "Normal(log L, sigma); --prior sigma=... and --prior nu=... (the prior of nu - 2); "
          "mixing_domains: one sigma and nu per evaluation domain")
    for k, v in NOISE_PRIORS.items():
        print(f"  {k:>8} ~ {'2 + ' if k == 'nu' else ''}{prior_str(v)}")
    print(f"discrepancy: {DISCREPANCY_FORM}; default prior on each axis' k: "
          f"HalfNormal({DEFAULT_K_SCALE}) (twice as wide below 10 runs; calibrated on "
          "language-model loss sweeps), also beyond the backtests' reach; --prior "
          "k=HalfNormal(s) sets it for a target whose drift is of another size")
    print("accuracy (--accuracy): per task acc = floor + (1 - floor) (1 - delta) "
          "sigmoid(-s (L - L0)) + N(0, sigma), fitted after the loss law on its posterior "
          "draws (sigmoid, the default) or with it (joint); exponential: err = (1 - floor) - "
          "k exp(-gamma L), joint. Floors: --floors task=v, else a chance.<task> column, "
          f"else {DEFAULT_FLOOR} with a warning. Two-stage links drift below the fitted "
          "runs' lowest loss: + k_t * d * z, d in log loss, k_t per task from backtests "
          "along loss")
    print("inputs are divided by their geometric mean in the data (N0, D0, ...): a = A/N0^alpha")
    return 0


def _cmd_compare(a: argparse.Namespace) -> int:
    from datalaws.fit.compare import compare
    from datalaws.fit.result import Fit

    fits = [Fit.load(d) for d in a.fit_dirs]
    table, by = compare(fits, [f"{f.law.name}:{d}" for f, d in zip(fits, a.fit_dirs)],
                        rank_by=a.rank_by)
    print("ranked by " + ("out-of-range backtest log score (mean per held-back row, on the "
                          "folds every fit shares)" if by == "backtest" else "PSIS-LOO"))
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    if table["warning"].fillna(False).astype(bool).any():
        print("warning = True: PSIS-LOO is unreliable for that fit (a Pareto k above 0.7: some "
              "run sways its posterior); its elpd_loo is approximate")
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    from datalaws.fit.report import write_report
    from datalaws.fit.table import read_table
    from datalaws.io import check_output_file

    # never over a fit's own files, nor over another page without --force
    check_output_file(a.out, force=a.force, suffixes=(".html",), protect=FIT_MARKERS)
    table = read_table(a.data) if a.data else None
    print(f"wrote {write_report(a.fit_dirs, table, a.out)}")
    return 0


def _cmd_nested(a: argparse.Namespace) -> int:
    from pathlib import Path

    import arviz as az
    import numpy as np

    from datalaws.cli import EXIT_BAD_DIAGNOSTICS
    from datalaws.fit.infer import diagnose
    from datalaws.fit.nested import fit_nested
    from datalaws.fit.result import write_netcdf
    from datalaws.fit.table import read_table
    from datalaws.io import dumps_json
    from datalaws.records import atomic_write_text

    _check_fit_out(a.out, a.force)  # before sampling: an existing fit needs --force
    table = read_table(a.data)
    at = read_table(a.at) if a.at else None
    quantiles = _quantiles(a.quantiles)  # before sampling: a bad option costs nothing
    f = fit_nested(table, chains=a.chains, warmup=a.warmup, draws=a.draws, seed=a.seed,
                   progress=True)
    idata = az.from_numpyro(f.mcmc)
    names = [v for v in idata.posterior.data_vars if not v.startswith("z_")]
    diag = diagnose(idata, names)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_netcdf(idata, out / "posterior.nc")
    summary = {"model": "nested step/size/mixture (datalaws.fit.nested)",
               "domains": f.domains, "N0": f.N0, "S0": f.S0,
               "params": {n: {"mean": float(np.mean(f.samples[n])),
                              "q05": np.quantile(f.samples[n], 0.05, axis=0).tolist(),
                              "q95": np.quantile(f.samples[n], 0.95, axis=0).tolist()}
                          for n in names},
               "diagnostics": {"ok": diag.ok, "failures": diag.failures()}}
    atomic_write_text(out / "summary.json", dumps_json(summary, indent=1))  # NaN -> null
    for n in ("alpha", "beta", "e_mid"):
        p = summary["params"][n]
        print(f"{n:6s} {p['mean']:.4f} [{p['q05']:.4f}, {p['q95']:.4f}]")
    if a.at:
        pred = f.predict_table(at, quantiles=quantiles)
        for row in pred.to_dict(orient="records"):  # plain Python numbers, not np.float64
            print(", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in row.items()))
        atomic_write_text(out / "predictions.csv", pred.to_csv(index=False))
    print(f"wrote {out}/posterior.nc, summary.json" + (", predictions.csv" if a.at else ""))
    if not diag.ok:
        for msg in diag.failures():
            print(f"diagnostics FAILED: {msg}", file=sys.stderr)
        return 0 if a.allow_bad else EXIT_BAD_DIAGNOSTICS
    return 0


def _cmd_next(a: argparse.Namespace) -> int:
    from datalaws.cli import preset_sizes
    from datalaws.fit.design import TOKENS_PER_PARAM, next_runs
    from datalaws.fit.result import Fit
    from datalaws.io import check_output_file
    from datalaws.records import atomic_write_text, parse_mixture

    out = check_output_file(a.out, force=a.force, suffixes=(".toml",), protect=FIT_MARKERS)
    if a.target.count(",") != 1:
        raise ValueError(f"--target {a.target!r}: give N,D (parameters,tokens), e.g. 1e9,2e10")
    target = _positive(a.target.split(","), "--target", a.target)
    if a.vocab is not None and a.vocab <= 0:
        raise ValueError(f"--vocab {a.vocab}: must be positive")
    like, vocab = _like_spec(a.like), a.vocab
    if like and vocab is None:  # the presets' sizes on the store the runs will train on
        vocab = _store_vocab(like.get("defaults", {}).get("data"))
    result = Fit.load(a.fit_dir)
    given = _pairs(a.sizes, "--sizes")
    sizes = (dict(zip(given, _positive(list(given.values()), "--sizes", a.sizes))) if given
             else preset_sizes(result.columns.get("N"), vocab or 32768))
    ratios = (_positive(a.tokens_per_param.split(","), "--tokens-per-param",
                        a.tokens_per_param) if a.tokens_per_param else TOKENS_PER_PARAM)
    design = next_runs(result, a.budget, target[0], target[1], sizes=sizes, max_runs=a.runs,
                       tokens_per_param=ratios,
                       mixture=parse_mixture(a.mixture) if a.mixture else None,
                       mixtures=[parse_mixture(m) for m in a.mixtures.split(";")]
                       if a.mixtures else None,
                       evals=parse_mixture(a.evals) if a.evals else None)
    t = design.target
    print(f"target {t['params']:.3g} params x {t['tokens']:.3g} tokens: loss median "
          f"{t['loss_q50']:.4f}, 90% interval width {design.width90(design.sd_now):.4g} today "
          f"(distance {t['distance']:.2f} beyond the fitted runs)")
    if design.runs.empty:
        print("no candidate run within the budget narrows the interval by 1% or more")
        return 0
    cols = ["rank", "preset", "params", "tokens", "tokens_per_param", "flops",
            "width90_after", "reduction_pct", "reduction_per_eflop"]
    if design.target["mixture"]:
        cols.insert(5, "mixture")
    print(f"next runs (greedy {design.rule}; {design.runs.flops.sum():.3g} of "
          f"{design.budget:.3g} FLOPs):")
    print(design.runs[cols].fillna("-").to_string(index=False,
                                                  float_format=lambda v: f"{v:.4g}"))
    print(f"expected 90% width at the target: {design.width90(design.sd_now):.4g} -> "
          f"{design.width90(design.sd_after):.4g}")
    run_mix = a.mixture or _like_mixture(like)
    atomic_write_text(out, design.sweep_spec(like, mixture=run_mix))
    print(f"wrote {out} (datalaws sweep run {out})"
          + (f"; runs train on mixture {run_mix}" if run_mix else
             "; give the runs a mixture (--mixture or a --like spec with one)"))
    return 0


def _like_spec(path: str | None) -> dict | None:
    if not path:
        return None
    import tomllib
    from pathlib import Path

    if not Path(path).is_file():
        raise FileNotFoundError(f"--like {path}: no such sweep spec")
    try:
        return tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"--like {path}: invalid TOML ({e})") from None


def _like_mixture(like: dict | None) -> str | None:
    """The training mixture of the --like spec: its default, else its grid's first."""
    if not like:
        return None
    mix = (like.get("defaults") or {}).get("mixture") or (like.get("grid") or {}).get("mixture")
    if isinstance(mix, list):
        mix = mix[0] if mix else None
    if isinstance(mix, dict):
        mix = ",".join(f"{k}={v}" for k, v in mix.items())
    return mix


def _store_vocab(store: str | None) -> int | None:
    from pathlib import Path

    tok = Path(store or "") / "tokenizer.json"
    if not store or not tok.exists():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tok)).get_vocab_size()


def _sampler_options(p: argparse.ArgumentParser) -> None:
    """NUTS settings and the verdict on bad diagnostics, shared by `fit` and `nested`."""
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allow-bad", action="store_true", help="exit 0 despite bad diagnostics")
    p.add_argument("--force", action="store_true", help="overwrite an existing fit in --out")


def _output_options(p: argparse.ArgumentParser, what: str, default: str | None = None) -> None:
    """``--out`` (required unless it has a default) and ``--force`` to overwrite it."""
    p.add_argument("--out", required=default is None, default=default, help=what)
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")


def _add_nested(sub: argparse._SubParsersAction) -> None:
    n = sub.add_parser("nested", help="step x size x mixture as one hierarchical model")
    n.add_argument("data", help="loss curves: mix.<domain>, params, step, loss per row")
    n.add_argument("--at", help="points to predict: mix.<domain>, params, step columns")
    n.add_argument("--quantiles", default="0.05,0.5,0.95",
                   help="predictive quantiles to write, e.g. 0.05,0.25,0.5,0.75,0.95")
    n.add_argument("--out", required=True, help="output folder")
    _sampler_options(n)
    n.set_defaults(func=_cmd_nested)


def _add_report(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("report", help="self-contained HTML report of one or more fits")
    r.add_argument("fit_dirs", nargs="+")
    r.add_argument("--data", help="the table the fits used (for curves and residuals)")
    _output_options(r, "report.html")
    r.set_defaults(func=_cmd_report)


def _add_next(sub: argparse._SubParsersAction) -> None:
    nx = sub.add_parser("next", help="the next runs that most narrow the prediction at a "
                        "target, per FLOP (writes a sweep spec)")
    nx.add_argument("fit_dir", help="a `datalaws fit` output folder")
    nx.add_argument("--budget", type=float, required=True, help="FLOPs for the new runs")
    nx.add_argument("--target", required=True, help="N,D of the run to predict, e.g. 1e9,2e10")
    nx.add_argument("--runs", type=int, default=8, help="at most this many runs")
    nx.add_argument("--sizes", help="candidate sizes name=N,... (default: the model presets)")
    nx.add_argument("--tokens-per-param", help="candidate D/N ratios (default 5,10,20,40,80)")
    nx.add_argument("--mixture", help="the target's mixture domain=r,... (mixing-law fits)")
    nx.add_argument("--mixtures", help="candidate mixtures, ';'-separated (default: --mixture)")
    nx.add_argument("--evals", help="validation composition (per-domain mixing fits)")
    nx.add_argument("--like", help="an existing sweep spec whose out and [defaults] to reuse")
    nx.add_argument("--vocab", type=int, help="vocabulary of the presets (default: the "
                    "--like spec's store tokenizer, else 32768)")
    _output_options(nx, "sweep spec to write", default="next_sweep.toml")
    nx.set_defaults(func=_cmd_next)


def _add_fit(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("fit", help="fit a law to a table of runs with NUTS")
    f.add_argument("law", help="law name (see `datalaws laws`)")
    f.add_argument("data", help="table of runs (.csv or .parquet)")
    f.add_argument("--out", required=True, help="output folder")
    f.add_argument("--columns", help="role=column overrides, e.g. N=N,D=D,loss=loss")
    f.add_argument("--prior", action="append", help="override a prior: alpha='LogNormal(-1,0.3)'")
    f.add_argument("--holdout", help="pandas expression of rows to hold out, e.g. 'params>=2e9'")
    f.add_argument("--where", help="pandas expression of the rows to use at all, e.g. "
                   "'loss < 6 and name_consistent'")
    f.add_argument("--discrepancy", default="backtest", choices=["backtest", "none"])
    f.add_argument("--accuracy", nargs="?", const="sigmoid",
                   choices=["sigmoid", "joint", "exponential"],
                   help="also fit acc.<task> columns: sigmoid (the default) after the loss "
                        "law, on its posterior draws, so accuracy never moves it; joint or "
                        "exponential with it (see `datalaws laws`)")
    f.add_argument("--floors", help="chance accuracy per task, e.g. copa=0.5,arc=0.25")
    f.add_argument("--likelihood", default="studentt", choices=["studentt", "normal"])
    f.add_argument("--method", default="nuts", choices=["nuts", "point"],
                   help="nuts: the posterior; point: the papers' Huber least-squares fit alone "
                        "(the baseline; intervals from its residual spread only)")
    _sampler_options(f)
    f.set_defaults(func=_cmd_fit)


def register_cli(sub: argparse._SubParsersAction) -> None:
    _add_nested(sub)
    _add_report(sub)
    _add_next(sub)
    _add_fit(sub)
    p = sub.add_parser("predict", help="posterior predictive at new points",
                       description="Writes <quantity>_mean and _qNN columns (loss: a new run; "
                       "loss_law: the law alone; acc.<task> with a link), and each point's "
                       "distance beyond the fitted runs with its part past the backtests' "
                       "reach, distance_unbacktested (log units; only the k prior widens "
                       "over it).")
    p.add_argument("fit_dir")
    p.add_argument("--at", required=True, help="table of points (.csv/.parquet)")
    _output_options(p, "output .csv or .parquet")
    p.add_argument("--quantiles", default="0.05,0.25,0.5,0.75,0.95")
    p.set_defaults(func=_cmd_predict)
    c = sub.add_parser("compare", help="rank laws fitted to one table by out-of-range "
                       "backtest score, PSIS-LOO beside it")
    c.add_argument("--rank-by", choices=["backtest", "loo"], default="backtest")
    c.add_argument("fit_dirs", nargs="+")
    c.set_defaults(func=_cmd_compare)
    sub.add_parser("laws", help="list laws, formulas and priors").set_defaults(func=_cmd_laws)
