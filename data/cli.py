"""`datalaws data prepare|stats`."""

from __future__ import annotations

import argparse

__all__ = ["register_cli"]


def _cmd_prepare(a: argparse.Namespace) -> int:
    from pathlib import Path

    from datalaws.data.store import prepare_domain, read_documents, train_tokenizer

    store = Path(a.out)
    store.mkdir(parents=True, exist_ok=True)
    docs = list(read_documents(a.src, field=a.field))
    if not (store / "tokenizer.json").exists():
        if a.tokenizer:
            (store / "tokenizer.json").write_bytes(Path(a.tokenizer).read_bytes())
        else:
            train_tokenizer(docs, a.vocab, store / "tokenizer.json")
    prepare_domain(store, a.domain, docs)
    return 0


def _cmd_stats(a: argparse.Namespace) -> int:
    from datalaws.data.store import domain_stats

    print(f"{'domain':14s} {'status':10s} {'docs':>7s} {'tokens':>11s} {'diversity':>9s} "
          f"{'synthetic':>9s}")
    for r in domain_stats(a.store):
        if not r.get("complete"):
            print(f"{r['domain']:14s} {'INCOMPLETE':10s}")
            continue
        syn = r.get("syntheticity")
        syn = f"{syn:9.4f}" if syn is not None else f"{'-':>9}"
        print(f"{r['domain']:14s} {'complete':10s} {r['docs']:7d} {r['tokens']:11,d} "
              f"{r['diversity']:9.3f} {syn}")
    return 0


def _cmd_quality(a: argparse.Namespace) -> int:
    from datalaws.data.store import add_syntheticity, domain_stats
    from datalaws.model.score import document_nll, load_model

    model = load_model(a.teacher)
    for row in domain_stats(a.store):
        if not row.get("complete"):
            print(f"skipping incomplete domain {row['domain']}")
            continue
        s = add_syntheticity(a.store, row["domain"],
                             lambda docs: document_nll(model, docs, progress=True),
                             teacher=str(a.teacher), max_docs=a.max_docs)
        print(f"{row['domain']}: syntheticity {s:.4g} (1/perplexity under {a.teacher})")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("data", help="prepare token stores and show their quality")
    dsub = d.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser("prepare", help="ingest text/JSONL/Parquet into a domain")
    p.add_argument("src", nargs="+")
    p.add_argument("--domain", required=True)
    p.add_argument("--out", required=True, help="store directory")
    p.add_argument("--field", default="text", help="text field of JSONL/Parquet")
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--tokenizer", help="existing tokenizer.json to use")
    p.set_defaults(func=_cmd_prepare)
    q = dsub.add_parser("quality", help="syntheticity: 1/perplexity under a teacher run")
    q.add_argument("store")
    q.add_argument("--teacher", required=True, help="a training run directory (checkpoints/)")
    q.add_argument("--max-docs", type=int, default=2000, help="documents scored per domain")
    q.set_defaults(func=_cmd_quality)
    s = dsub.add_parser("stats", help="per-domain counts and quality")
    s.add_argument("store")
    s.set_defaults(func=_cmd_stats)
