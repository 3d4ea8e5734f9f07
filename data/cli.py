"""`datalaws data prepare|stats|quality|pools|select|synthesize`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["register_cli"]


def _cmd_prepare(a: argparse.Namespace) -> int:
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from datalaws.data.store import (
        StoreError,
        prepare_domain,
        read_documents,
        train_tokenizer,
    )

    store = Path(a.out)
    _check_prepare(a, store)
    docs = list(read_documents(a.src, field=a.field))  # every file read and checked first
    if a.force and (store / a.domain / "meta.json").exists():
        _replace_domain(store, a.domain, docs)
        return 0
    if (store / "tokenizer.json").exists():
        prepare_domain(store, a.domain, docs)
        return 0
    # A new store's tokenizer and first domain are built in a temporary folder and moved in
    # only when both are complete: a failure never leaves a tokenizer trained on nothing.
    new_store = not store.exists()
    store.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".prepare.", suffix=".partial", dir=store))
    try:
        if a.tokenizer:
            (tmp / "tokenizer.json").write_bytes(Path(a.tokenizer).read_bytes())
        else:
            train_tokenizer(docs, a.vocab, tmp / "tokenizer.json")
        prepare_domain(tmp, a.domain, docs)
        try:
            os.link(tmp / "tokenizer.json", store / "tokenizer.json")  # fails if one appeared
        except FileExistsError:
            raise StoreError(f"{store}/tokenizer.json appeared while preparing (another "
                             "prepare?); rerun") from None
        os.rename(tmp / a.domain, store / a.domain)
    except BaseException:
        if new_store:
            shutil.rmtree(store, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _check_prepare(a: argparse.Namespace, store) -> None:
    """Refuse before reading or tokenizing: a file in place of the store, a finished domain
    without --force, a missing --tokenizer, a tokenizer other than the store's."""
    from pathlib import Path

    from datalaws.data.store import StoreError

    if store.exists() and not store.is_dir():
        raise StoreError(f"--out {store}: is a file, not a store folder")
    if not a.domain or a.domain.startswith(".") or "/" in a.domain:
        raise StoreError(f"--domain {a.domain!r}: use a plain name (letters, digits, _ -)")
    if (store / a.domain / "meta.json").exists() and not a.force:
        raise StoreError(f"{store / a.domain}: domain already prepared; pass --force to "
                         "rebuild it")
    if a.vocab < 300:
        raise StoreError(f"--vocab {a.vocab}: a byte-level BPE needs at least 257 ids (256 "
                         "bytes + end of document); use >= 300")
    if a.tokenizer:
        tok = Path(a.tokenizer)
        if not tok.is_file():
            raise StoreError(f"--tokenizer {tok}: no such file")
        have = store / "tokenizer.json"
        if have.exists() and have.read_bytes() != tok.read_bytes():
            raise StoreError(f"--tokenizer {tok}: differs from the store's {have}; a store "
                             "has one tokenizer")


def _replace_domain(store, domain: str, docs: list[str]) -> None:
    """--force: build the new domain aside, then swap it in; the old one stays on failure."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from datalaws.data.store import prepare_domain

    tmp = Path(tempfile.mkdtemp(prefix=".prepare.", suffix=".partial", dir=store))
    try:
        os.link(store / "tokenizer.json", tmp / "tokenizer.json")
        prepare_domain(tmp, domain, docs)
        old = tmp / ".old"
        os.rename(store / domain, old)
        os.rename(tmp / domain, store / domain)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


# The teacher of `data quality` and `data synthesize` is a training run's model. data/ never
# imports model/: datalaws.model.cli plugs its loaders in here when the CLI is built.
_TEACHER: dict[str, Callable] = {}


def use_teacher(*, scorer: Callable, sampler: Callable) -> None:
    """``scorer(run_dir) -> (vocab, score(docs) -> (nll, tokens))``; ``sampler(run_dir) ->
    datalaws.data.curate.Sampler``."""
    _TEACHER.update(scorer=scorer, sampler=sampler)


def _teacher(kind: str) -> Callable:
    from datalaws.data.store import StoreError

    if kind not in _TEACHER:
        raise StoreError("a teacher model needs datalaws.model, which is not available here")
    return _TEACHER[kind]


def _cmd_quality(a: argparse.Namespace) -> int:
    from pathlib import Path

    from tokenizers import Tokenizer

    from datalaws.data.store import StoreError, add_syntheticity, domain_stats

    tok = Path(a.store) / "tokenizer.json"
    if not tok.is_file():
        raise StoreError(f"{a.store}: not a token store (no tokenizer.json)")
    teacher_vocab, score = _teacher("scorer")(a.teacher)
    vocab = Tokenizer.from_file(str(tok)).get_vocab_size()
    if teacher_vocab != vocab:  # scores under another tokenizer are meaningless (NaN)
        raise StoreError(f"--teacher {a.teacher}: trained with a {teacher_vocab}-token "
                         f"vocabulary; {tok} has {vocab}: train the teacher on this store")
    for row in domain_stats(a.store):
        if not row.get("complete"):
            print(f"skipping incomplete domain {row['domain']}")
            continue
        s = add_syntheticity(a.store, row["domain"], score, teacher=str(a.teacher),
                             max_docs=a.max_docs)
        print(f"{row['domain']}: syntheticity {s:.4g} (1/perplexity under {a.teacher})")
    return 0


def _cmd_pools(a: argparse.Namespace) -> int:
    from datalaws.data.curate import make_pools

    flag, text = ("--quantiles", a.quantiles) if a.quantiles else ("--thresholds", a.thresholds)
    try:
        cuts = [float(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} {text!r}: give numbers separated by commas") from None
    pools = make_pools(a.store, a.domain, by=a.by, ascending=a.ascending,
                       quantiles=cuts if a.quantiles else None,
                       thresholds=cuts if a.thresholds else None)
    for m in pools:
        lo, hi = m["pool_range"]
        print(f"{m['domain']:16s} {a.by} in [{lo:.4g}, {hi:.4g}): {m['docs']} docs, "
              f"{m['tokens']:,} tokens, diversity {m['diversity']:.3f}")
    if pools[0]["unscored_docs"]:
        print(f"{pools[0]['unscored_docs']} documents without a {a.by} score were left out")
    return 0


def _cmd_select(a: argparse.Namespace) -> int:
    from datalaws.data.curate import select_like

    tokens = int(float(a.tokens))
    m = select_like(a.store, a.source, a.like, a.out, tokens=tokens, seed=a.seed)
    print(f"{a.out}: {m['docs']} documents, {m['tokens']:,} tokens of {a.source} selected "
          f"toward {a.like} (DSIR)")
    if m["tokens"] < tokens:  # the whole source: say so rather than let it pass for a sample
        print(f"warning: --tokens {a.tokens} is more than {a.source} holds; all of it was "
              "taken, so this is no selection")
    return 0


def _cmd_synthesize(a: argparse.Namespace) -> int:
    from datalaws.data.curate import synthesize

    m = synthesize(a.store, a.source, _teacher("sampler")(a.model), a.out,
                   tokens=int(float(a.tokens)),
                   prompt_tokens=a.prompt_tokens, batch=a.batch, temperature=a.temperature,
                   top_p=a.top_p, seed=a.seed, model_name=str(a.model))
    print(f"{a.out}: {m['docs']} synthetic documents, {m['tokens']:,} tokens")
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
    p.add_argument("--force", action="store_true", help="rebuild a domain already prepared")
    p.set_defaults(func=_cmd_prepare)
    q = dsub.add_parser("quality", help="syntheticity: 1/perplexity under a teacher run")
    q.add_argument("store")
    q.add_argument("--teacher", required=True, help="a training run directory (checkpoints/)")
    q.add_argument("--max-docs", type=int, default=2000, help="documents scored per domain")
    q.set_defaults(func=_cmd_quality)
    s = dsub.add_parser("stats", help="per-domain counts and quality")
    s.add_argument("store")
    s.set_defaults(func=_cmd_stats)
    o = dsub.add_parser("pools", help="split a domain into quality pools (best first)")
    o.add_argument("store")
    o.add_argument("domain")
    o.add_argument("--by", default="diversity",
                   help="per-document column: diversity, syntheticity, ...")
    cut = o.add_mutually_exclusive_group(required=True)
    cut.add_argument("--quantiles", help="e.g. 0.5,0.9 -> 3 pools")
    cut.add_argument("--thresholds", help="score cut points, e.g. 0.3,0.4")
    o.add_argument("--ascending", action="store_true", help="pool 1 = lowest scores")
    o.set_defaults(func=_cmd_pools)
    e = dsub.add_parser("select", help="DSIR importance-sampled selection toward a target")
    e.add_argument("store")
    e.add_argument("--from", dest="source", required=True, help="raw domain to select from")
    e.add_argument("--like", required=True, help="target domain")
    e.add_argument("--tokens", required=True, help="tokens to select, e.g. 1e6")
    e.add_argument("--out", required=True, help="new domain name")
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=_cmd_select)
    y = dsub.add_parser("synthesize", help="a synthetic domain sampled from a trained model")
    y.add_argument("store")
    y.add_argument("--model", required=True, help="a training run directory (checkpoints/)")
    y.add_argument("--from", dest="source", required=True, help="domain to prompt from")
    y.add_argument("--tokens", required=True, help="tokens to generate, e.g. 1e5")
    y.add_argument("--out", required=True, help="new domain name")
    y.add_argument("--prompt-tokens", type=int, default=32)
    y.add_argument("--batch", type=int, default=16)
    y.add_argument("--temperature", type=float, default=1.0)
    y.add_argument("--top-p", type=float, default=0.95)
    y.add_argument("--seed", type=int, default=0)
    y.set_defaults(func=_cmd_synthesize)
