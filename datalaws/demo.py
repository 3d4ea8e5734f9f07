"""`datalaws demo`: the pipeline end to end on the embedded corpus, reusing what is done.

1. prepare three domains of the embedded corpus (stdlib code, docstrings, help topics) into
   a token store (each with its fixed validation split), score their syntheticity under a
   briefly trained teacher, and make domains of other measured quality: two diversity pools
   of the docstrings and a domain of text the teacher synthesized;
2. run a sweep of tiny models on the local executor: sizes x token budgets x three mixtures
   of the base domains, plus runs with a pool or a synthetic share in place of a domain.
   Every run is scored on every domain of the store's validation set, its ``loss`` on one
   declared evaluation composition (the base domains' token shares), logs a validation
   curve, and records accuracy on the store's built-in continuation tasks (three graded
   difficulties, chance 1/4; see model/tasks.py);
3. collect the run records and the validation curves;
4. fit the Chinchilla law with a loss -> accuracy link, the per-domain mixing law on
   ``loss.<domain>`` (best mixture for the declared composition), the quality-aware law
   across the pools, and the nested step x size x mixture model on the curves; plan compute,
   predict accuracy at the plan, and write the HTML report with a summary of all of it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

__all__ = ["run_demo"]

BASE = ("code", "docs", "docstrings")
MIXTURES = ["code=0.6,docs=0.2,docstrings=0.2", "code=0.2,docs=0.4,docstrings=0.4",
            "code=0.34,docs=0.33,docstrings=0.33"]
# the same shares with one domain replaced by text of other measured quality
QUALITY = ["code=0.34,docs=0.33,docstrings_p1=0.33", "code=0.34,docs=0.33,docstrings_p2=0.33",
           "code=0.34,docs_syn=0.33,docstrings=0.33"]
PRESETS = ["tiny", "micro", "mini"]

SPEC = """\
out = "{out}/runs"
eval_mix = {eval_mix}
[defaults]
data = "{out}/store"
seq_len = 64
batch = 8
lr = 0.003
save_every = 1000
eval_every = {eval_every}
curve_windows = 8
[grid]
preset = {presets}
tokens = {tokens}
mixture = {mixtures}
seed = [0]
"""


def _quality_runs(tokens: int) -> str:
    return "".join(f'\n[[runs]]\npreset = "{p}"\ntokens = {tokens}\nmixture = "{m}"\nseed = 0\n'
                   for p in PRESETS for m in QUALITY)


def _store(out: Path) -> Path:
    from datalaws.data.store import embedded_corpus, prepare_domain, train_tokenizer

    store = out / "store"
    store.mkdir(parents=True, exist_ok=True)
    if not all((store / d / "meta.json").exists() for d in BASE):  # else: reuse the store
        corpus = embedded_corpus()
        if not (store / "tokenizer.json").exists():
            train_tokenizer((d for v in corpus.values() for d in v), 1024,
                            store / "tokenizer.json")
        for domain in BASE:
            prepare_domain(store, domain, corpus[domain])
    return store


def _quality_domains(out: Path, store: Path) -> None:
    """Teacher, syntheticity of every domain, diversity pools and a synthetic domain."""
    from datalaws.data.curate import make_pools, synthesize
    from datalaws.data.store import add_syntheticity, domain_stats
    from datalaws.model.cli import run_from_dict
    from datalaws.model.generate import ModelSampler
    from datalaws.model.score import document_nll, load_model

    teacher = out / "teacher"
    if not (teacher / "teacher.record.json").exists():
        run_from_dict({"preset": "micro", "tokens": 184320, "data": str(store), "seq_len": 64,
                       "batch": 8, "mixture": {d: 1 / 3 for d in BASE}, "out": str(teacher),
                       "run_id": "teacher", "save_every": 1000, "eval_every": 0})
    model = None
    if not (store / "docs_syn" / "meta.json").exists():
        model = load_model(teacher)
        synthesize(store, "docs", ModelSampler(model), "docs_syn", tokens=30_000, seed=0,
                   model_name=str(teacher), progress=False)
    todo = [row["domain"] for row in domain_stats(store) if row.get("complete")
            and row.get("syntheticity") is None and "pool_of" not in row]
    if todo:
        model = model or load_model(teacher)
        for domain in todo:
            add_syntheticity(store, domain, lambda docs: document_nll(model, docs),
                             teacher=str(teacher), max_docs=300)
    if not (store / "docstrings_p1" / "meta.json").exists():  # pools keep per-doc scores
        make_pools(store, "docstrings", by="diversity", quantiles=[0.5])
    for row in domain_stats(store):
        if row.get("complete"):
            print(f"  {row['domain']:14s} {row['tokens']:>9,} tokens  diversity "
                  f"{row['diversity']:.3f}  syntheticity {row.get('syntheticity', 0):.4f}")


def _sweep(out: Path, store: Path, fast: bool) -> dict[str, float]:
    from datalaws.data.store import store_validation
    from datalaws.launch.sweep import expand, load_spec, run_local
    from datalaws.records import atomic_write_text

    # 3 sizes x 2 budgets x 3 mixtures: three distinct N are the least a backtest
    # along N can cut; plus 3 sizes x 3 quality variants at the larger budget
    tokens = [40960, 122880] if fast else [61440, 184320]
    eval_every = tokens[0] // (8 * 64) // 3  # >= 3 validation points in the shortest run
    validation = store_validation(store)
    eval_mix = {d: round(w, 4) for d, w in validation["default_eval"].items()}
    print("  evaluation: every run on all "
          f"{len(validation['domains'])} domains of validation set {validation['hash']}; "
          "loss = " + " + ".join(f"{w:.3f} {d}" for d, w in eval_mix.items()))
    spec_path = out / "sweep.toml"
    atomic_write_text(spec_path, SPEC.format(
        out=out, presets=json.dumps(PRESETS), tokens=json.dumps(tokens),
        mixtures=json.dumps(MIXTURES), eval_every=eval_every,
        eval_mix=json.dumps(",".join(f"{d}={w}" for d, w in eval_mix.items())))
        + _quality_runs(tokens[1]))
    run_local(expand(load_spec(spec_path)), parallel=2, compile_cache=out / "jax_cache")
    return eval_mix


def _collect(out: Path):
    from datalaws.records import atomic_write_text, read_curves, read_records

    df = read_records(out / "runs")
    df = df[df.status == "done"].drop(columns=[c for c in df.columns if c.endswith("_norm")])
    curves = read_curves(out / "runs")
    atomic_write_text(out / "runs.csv", df.to_csv(index=False))
    atomic_write_text(out / "curves.csv", curves.to_csv(index=False))
    per_run = curves.groupby("run_id").size()
    print(f"{len(df)} finished runs -> {out / 'runs.csv'}; validation curves: {len(curves)} "
          f"points, {per_run.min()}-{per_run.max()} per run -> {out / 'curves.csv'}")
    return df, curves


def _base(df):
    """Runs on the three base domains only, without the other domains' columns."""
    other = [c for c in df.columns if c.startswith(("mix.", "loss."))
             and c.split(".", 1)[1] not in BASE]
    keep = (df[[c for c in other if c.startswith("mix.")]] == 0).all(axis=1)
    return df[keep].drop(columns=other).reset_index(drop=True)


def run_demo(out: Path, *, fast: bool = False) -> None:
    t0 = time.perf_counter()
    out = out.absolute()
    print("== 1/4 data: embedded corpus -> token store; quality: teacher, pools, synthetic",
          flush=True)
    store = _store(out)
    _quality_domains(out, store)
    print("== 2/4 sweep: tiny models on the local executor", flush=True)
    eval_mix = _sweep(out, store, fast)
    print("== 3/4 collect", flush=True)
    df, curves = _collect(out)
    print("== 4/4 fit + report", flush=True)
    from datalaws.demo_fits import fit_all

    report = fit_all(out, df, _base(df), _base(curves), eval_mix)
    print(f"\ndone in {time.perf_counter() - t0:.0f} s")
    print(f"  token store: {store}\n  runs table:  {out / 'runs.csv'}\n  curves:      "
          f"{out / 'curves.csv'}\n  report:      {report}")
