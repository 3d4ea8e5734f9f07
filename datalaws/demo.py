"""`datalaws demo`: the pipeline end to end on the embedded corpus, reusing what is done.

1. prepare three domains of the embedded corpus (stdlib code, docstrings, help topics)
   into a token store with per-document diversity, and score their syntheticity under a
   briefly trained teacher;
2. run a sweep of tiny models (sizes x token budgets x three mixtures) on the local executor;
3. collect the run records into a table;
4. fit the Chinchilla, mixing and quality-aware laws (NUTS, backtested discrepancy), pick
   the best mixture and a risk-averse compute plan, and write the HTML report.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["run_demo"]

SPEC = """\
out = "{out}/runs"
[defaults]
data = "{out}/store"
seq_len = 64
batch = 8
lr = 0.003
save_every = 100
tasks = {tasks}
[grid]
preset = {presets}
tokens = {tokens}
mixture = ["code=0.6,docs=0.2,docstrings=0.2", "code=0.2,docs=0.4,docstrings=0.4",
           "code=0.34,docs=0.33,docstrings=0.33"]
seed = [0]
"""


def run_demo(out: Path, *, fast: bool = False) -> None:
    import json
    import time

    from datalaws.data.store import embedded_corpus, prepare_domain, train_tokenizer
    from datalaws.launch.sweep import expand, load_spec, run_local
    from datalaws.records import atomic_write_text, read_records

    t0 = time.perf_counter()
    out = out.absolute()
    store = out / "store"
    store.mkdir(parents=True, exist_ok=True)
    print("== 1/4 data: embedded corpus -> token store", flush=True)
    domains = ("code", "docs", "docstrings")
    task_dir = out / "tasks"
    store_done = all((store / d / "meta.json").exists() for d in domains)
    corpus = None if store_done and task_dir.exists() else embedded_corpus()
    if not store_done:  # else: reuse the store
        if not (store / "tokenizer.json").exists():
            train_tokenizer((d for v in corpus.values() for d in v), 1024,
                            store / "tokenizer.json")
        for domain in domains:
            prepare_domain(store, domain, corpus[domain])

    print("== 1b/4 quality: syntheticity under a briefly trained teacher", flush=True)
    teacher = out / "teacher"
    if not (teacher / "teacher.record.json").exists():
        from datalaws.model.cli import run_from_dict

        run_from_dict({"preset": "micro", "tokens": 184320, "data": str(store), "seq_len": 64,
                       "batch": 8, "mixture": {d: 1 / 3 for d in domains}, "out": str(teacher),
                       "run_id": "teacher", "save_every": 100})
    from datalaws.data.store import add_syntheticity, domain_stats
    from datalaws.model.score import document_nll, load_model

    if any(r.get("syntheticity") is None for r in domain_stats(store)):
        model = load_model(teacher)
        for domain in domains:
            s = add_syntheticity(store, domain, lambda docs: document_nll(model, docs),
                                 teacher=str(teacher), max_docs=300)
            print(f"  {domain}: syntheticity {s:.4g}")

    from datalaws.model.tasks import builtin_tasks

    if not task_dir.exists():  # next-line multiple choice per domain, from the corpus
        for name, items in builtin_tasks(corpus, n=100).items():
            atomic_write_text(task_dir / f"{name}.jsonl",
                              "".join(json.dumps(it) + "\n" for it in items))
    tasks = sorted(str(p) for p in task_dir.glob("*.jsonl"))

    print("== 2/4 sweep: tiny models on the local executor", flush=True)
    # 3 sizes x 2 budgets x 3 mixtures = 18 runs: three distinct N are the least a
    # size-ordered backtest can cut; each run is seconds of training after compilation
    presets = '["tiny", "micro", "mini"]'
    tokens = "[40960, 122880]" if fast else "[61440, 184320]"
    spec_path = out / "sweep.toml"
    atomic_write_text(spec_path, SPEC.format(out=out, presets=presets, tokens=tokens,
                                             tasks=json.dumps(tasks)))
    runs = expand(load_spec(spec_path))
    run_local(runs, parallel=2, compile_cache=out / "jax_cache")

    print("== 3/4 collect", flush=True)
    df = read_records(out / "runs")
    df = df[df.status == "done"]
    table = out / "runs.csv"
    atomic_write_text(table, df.to_csv(index=False))
    print(f"{len(df)} finished runs -> {table}")

    print("== 4/4 fit + report", flush=True)
    from datalaws.fit import FitConfig, fit, save_fit
    from datalaws.fit.report import write_report

    # 18 runs cannot identify a Student-t's degrees of freedom: a Gaussian on log loss.
    # Three model sizes leave a narrow E-A-alpha ridge; small NUTS steps (target_accept
    # 0.99) cross it without divergences at the same cost here.
    cfg = FitConfig(chains=4, warmup=500, draws=1000, likelihood="normal", target_accept=0.99)
    result = fit(df, "chinchilla", config=cfg)
    save_fit(result, out / "fit_chinchilla")
    fits = [out / "fit_chinchilla"]
    mix = fit(df, "mixing", config=cfg)
    save_fit(mix, out / "fit_mixing")
    fits.append(out / "fit_mixing")
    fitted = [result, mix]
    if df.syntheticity.notna().all():  # runs trained after the store got its teacher scores
        quality = fit(df, "quality", config=cfg)
        save_fit(quality, out / "fit_quality")
        fits.append(out / "fit_quality")
        fitted.append(quality)
        g, d = quality.summary["params"]["gamma"], quality.summary["params"]["delta"]
        print(f"quality law: gamma (diversity) {g['q50']:.2f} [{g['q05']:.2f}, {g['q95']:.2f}],"
              f" delta (syntheticity) {d['q50']:.2f} [{d['q05']:.2f}, {d['q95']:.2f}]")
    for r in fitted:
        diag = r.summary["diagnostics"]
        print(f"{r.law.name} diagnostics: " + ("pass" if diag["ok"] else
                                               "FAIL: " + "; ".join(diag["failures"])))
    from datalaws.fit.mixture import best_mixture

    n_big, d_big = float(df.params.max()) * 4, float(df.tokens.max()) * 4
    best = best_mixture(mix, params=n_big, tokens=d_big,
                        default={d: 1 / 3 for d in domains})
    print(f"best mixture for {n_big:.3g} params x {d_big:.3g} tokens: "
          + ", ".join(f"{k}={v:.2f}" for k, v in best["mixture"].items())
          + f" (P(beats uniform) = {best['p_beats_default']:.2f})")
    from datalaws.fit.plan import plan

    budget = float(df.flops.max()) * 10
    p = plan(result, budget, objective="q90")
    atomic_write_text(out / "fit_chinchilla" / "plan.json",
                      json.dumps(p.to_dict(), indent=1, default=str))
    print(f"risk-averse (q90) plan for {budget:.3g} FLOPs: {p.continuous['params']:.3g} params, "
          f"{p.continuous['tokens']:.3g} tokens; P(beats point-fit plan) = "
          f"{p.p_beats_default:.2f}")
    report = write_report(fits, df, out / "report.html")
    print(f"\ndone in {time.perf_counter() - t0:.0f} s")
    print(f"  token store: {store}\n  runs table:  {table}\n  fit:         "
          f"{out / 'fit_chinchilla'}\n  report:      {report}")
