"""Corpora -> tokenized domains with measured quality, in a TensorStore (zarr) token store.

Layout of a store directory::

    tokenizer.json                 HF tokenizers byte-level BPE (the store knows its tokenizer)
    <domain>/tokens.zarr           uint16 (or uint32 for big vocabularies) token stream;
                                   documents end with the end-of-document token
    <domain>/doc_offsets.zarr      int64 [docs + 1] start of each document in the stream
    <domain>/diversity.zarr        float32 [docs] gzip compressed/raw bytes per document
    <domain>/doc_bytes.zarr        int64 [docs] UTF-8 bytes per document
    <domain>/syntheticity.zarr     float32 [docs] 1 / teacher perplexity (after `data quality`)
    <domain>/meta.json             counts, tokenizer hash, domain quality, the validation
                                   split; written last, atomically: a domain without it is
                                   incomplete

**Validation split** (``validation_split``): a document is held out for validation when the
SHA-1 of its token ids falls in the lowest ``VALID_FRACTION`` of the hash range (at least one
document when a domain has two or more). The rule depends only on a document's content, so a
document is validation data in every domain it appears in (a pool or a selection copies
documents with their ids), and ``prepare_domain`` writes the held-out documents last: the
split is the stream's tail from ``start`` on, identified by its size and a content hash.

The embedded default corpus (``embedded_corpus``) is real text every machine with this
Python has: the standard library's source (``code``), its docstrings (``docstrings``) and the
interactive help topics of ``pydoc_data`` (``docs``, the language reference's prose).
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import shutil
import sysconfig
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import tensorstore as ts

from datalaws.io import building_dir, dumps_json
from datalaws.records import atomic_write_text

__all__ = ["EOD", "embedded_corpus", "domain_diversity", "read_documents", "train_tokenizer",
           "prepare_domain", "open_domain", "open_tokens", "domain_stats", "diversity",
           "StoreError", "add_syntheticity", "validation_split", "store_validation",
           "VALID_FRACTION"]

EOD = "<|endoftext|>"
VALID_FRACTION = 0.05  # share of each domain's documents held out for validation


class StoreError(ValueError):
    """Bad input or an incomplete store; the message names the file or domain."""


def diversity(text: str | bytes) -> float:
    """gzip compressed bytes / raw bytes (higher: more diverse; Chang et al. 2024)."""
    raw = text.encode() if isinstance(text, str) else text
    if not raw:
        raise StoreError("diversity of an empty document is undefined")
    return len(gzip.compress(raw, compresslevel=9)) / len(raw)


def domain_diversity(texts: Iterable[str], *, max_bytes: int = 16 << 20) -> float:
    """gzip ratio of a domain's documents joined (the first ``max_bytes``): the dataset-level
    ratio of Chang et al. It also sees repetition across documents, and is not dominated by
    gzip's fixed header on short documents as a mean of per-document ratios would be."""
    parts, n = [], 0
    for t in texts:
        b = t.encode()
        parts.append(b)
        n += len(b) + 1
        if n >= max_bytes:
            break
    return diversity(b"\n".join(parts)[:max_bytes])


def embedded_corpus(max_docs: int | None = None) -> dict[str, list[str]]:
    """Three real-text domains from this Python's standard library (no download)."""
    import pydoc_data.topics as topics

    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py"))[: max_docs or None]
    code, docstrings = [], []
    for f in files:
        src = f.read_text(encoding="utf-8", errors="replace")
        code.append(src)
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Module,
                                 ast.AsyncFunctionDef)):
                d = ast.get_docstring(node)
                if d and len(d) > 80:
                    docstrings.append(d)
    docs = [t for t in topics.topics.values() if len(t) > 200]
    # split long help topics into paragraphs-sized documents
    docs = [p for t in docs for p in t.split("\n\n\n") if len(p) > 200]
    return {"code": code, "docstrings": docstrings[: (max_docs or 10**9) * 10], "docs": docs}


def read_documents(paths: Iterable[str | Path], *, field: str = "text") -> Iterator[str]:
    """Documents from text files, directories of them, JSONL or Parquet (``field`` column)."""
    for p in map(Path, paths):
        if not p.exists():
            raise StoreError(f"{p}: no such file or directory")
        if p.is_dir():
            yield from read_documents(sorted(x for x in p.rglob("*") if x.is_file()),
                                      field=field)
            continue
        if p.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pq.read_table(p)
            if field not in table.column_names:
                raise StoreError(f"{p}: no column {field!r}; columns: {table.column_names}")
            col = table.column(field)
            if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
                raise StoreError(f"{p}: column {field!r} is {col.type}, not text")
            yield from (t for t in col.to_pylist() if t)
            continue
        raw = p.read_bytes()
        if b"\x00" in raw[:8192]:
            raise StoreError(f"{p}: looks binary (NUL bytes); not a text corpus")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise StoreError(f"{p}: not UTF-8 (byte {e.start}); re-encode it") from None
        if p.suffix == ".jsonl":
            for i, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise StoreError(f"{p}:{i}: invalid JSON ({e.msg})") from None
                if not isinstance(obj, dict) or field not in obj:
                    raise StoreError(f"{p}:{i}: no field {field!r}")
                if not isinstance(obj[field], str):
                    raise StoreError(f"{p}:{i}: field {field!r} is a "
                                     f"{type(obj[field]).__name__}, not a string")
                yield obj[field]
        else:
            yield text


def _interruptible(fn: Callable, *args):
    """Run a long Rust call (tokenizer training, batch encoding) in a worker thread so the
    main thread keeps handling Ctrl-C / SIGTERM: the Rust code never returns to Python while
    it runs, so a signal would otherwise wait for it to finish."""
    import threading

    out: dict = {}

    def work():
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # handed to the caller
            out["error"] = e

    t = threading.Thread(target=work, daemon=True)  # abandoned, not awaited, on interrupt
    t.start()
    while t.is_alive():
        t.join(0.1)
    if "error" in out:
        raise out["error"]
    return out["value"]


def train_tokenizer(docs: Iterable[str], vocab: int, out: Path):
    """Train a byte-level BPE (HF tokenizers) and save it as ``out`` (tokenizer.json)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[EOD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    _interruptible(tok.train_from_iterator, docs, trainer)
    atomic_write_text(out, tok.to_str())
    return tok


def _tokenizer_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _write_array(path: Path, arr: np.ndarray) -> None:
    spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(path)}}
    t = ts.open(spec, create=True, delete_existing=True, dtype=ts.dtype(arr.dtype.name),
                shape=arr.shape, chunk_layout=ts.ChunkLayout(chunk_shape=[min(
                    max(1, arr.shape[0]), 1 << 20)])).result()
    t.write(arr).result()


def prepare_domain(store: str | Path, domain: str, docs: Iterable[str], *,
                   progress: bool = True, provenance: dict | None = None) -> dict:
    """Dedup, tokenize and write one domain; its ``meta.json`` is written last (atomic).

    A rerun skips a domain whose meta.json exists (the store is complete for it).
    ``provenance`` is merged into meta.json (how a derived domain was made).
    """
    from tokenizers import Tokenizer

    store = Path(store)
    ddir = store / domain
    if (ddir / "meta.json").exists():
        return json.loads((ddir / "meta.json").read_text())
    tok_path = store / "tokenizer.json"
    if not tok_path.exists():
        raise StoreError(f"{tok_path}: store has no tokenizer; train or copy one first")
    tok = Tokenizer.from_file(str(tok_path))
    seen, unique, n_in = set(), [], 0
    for d in docs:
        n_in += 1
        h = hashlib.sha1(d.encode()).digest()
        if d.strip() and h not in seen:  # exact-duplicate removal
            seen.add(h)
            unique.append(d)
    if not unique:
        raise StoreError(f"domain {domain!r}: the corpus is empty")
    t0 = time.perf_counter()
    eod = tok.token_to_id(EOD)
    ids = [e.ids + [eod] for e in _interruptible(tok.encode_batch, unique)]
    held = _held_out([np.asarray(x, np.uint32) for x in ids])
    # validation last, in the order of its documents' hashes: the split's content (and hash)
    # does not depend on the order the corpus came in
    valid = sorted(np.flatnonzero(held), key=lambda i: _doc_hash(np.asarray(ids[i])))
    order = np.concatenate([np.flatnonzero(~held), np.asarray(valid, int)])
    unique, ids = [unique[i] for i in order], [ids[i] for i in order]
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    dtype = np.uint16 if tok.get_vocab_size() <= 65535 else np.uint32
    tokens = np.fromiter((t for x in ids for t in x), dtype=dtype, count=int(lengths.sum()))
    div = np.array([diversity(d) for d in unique], dtype=np.float32)
    doc_bytes = np.array([len(d.encode()) for d in unique], dtype=np.int64)
    mb = doc_bytes.sum() / 1e6
    dt = time.perf_counter() - t0
    _clear_incomplete(ddir)
    # built under a temporary name and renamed when complete: a failure or Ctrl-C leaves
    # nothing that a later prepare would take for this domain
    with building_dir(ddir) as tmp:
        meta = _write_domain(tmp, domain, unique, tokens, lengths, div, doc_bytes, held,
                             n_in, tok_path, eod, dtype, provenance)
    if progress:
        print(f"prepared {domain}: {len(unique)} docs, {tokens.size:,} tokens, "
              f"{mb:.1f} MB at {mb / max(dt, 1e-9):.1f} MB/s, diversity {meta['diversity']:.3f}",
              flush=True)
    return meta


_DOMAIN_FILES = {"tokens.zarr", "doc_offsets.zarr", "diversity.zarr", "doc_bytes.zarr",
                 "syntheticity.zarr", "meta.json"}


def _clear_incomplete(ddir: Path) -> None:
    """Remove a domain folder left without meta.json by an older, non-atomic prepare."""
    if not ddir.exists():
        return
    names = {p.name for p in ddir.iterdir()}
    if not ddir.is_dir() or names - _DOMAIN_FILES:
        raise StoreError(f"{ddir}: exists and is not a domain of this store; choose another "
                         "--domain name")
    shutil.rmtree(ddir)


def _write_domain(ddir, domain, unique, tokens, lengths, div, doc_bytes, held, n_in, tok_path,
                  eod, dtype, provenance) -> dict:
    _write_array(ddir / "tokens.zarr", tokens)
    _write_array(ddir / "doc_offsets.zarr", np.concatenate([[0], np.cumsum(lengths)]))
    _write_array(ddir / "diversity.zarr", div)
    _write_array(ddir / "doc_bytes.zarr", doc_bytes)
    meta = {"domain": domain, "docs": len(unique), "tokens": int(tokens.size),
            "bytes": int(doc_bytes.sum()), "duplicates_removed": n_in - len(unique),
            "tokenizer_hash": _tokenizer_hash(tok_path), "eod": eod, "dtype": dtype.__name__,
            "diversity": domain_diversity(unique),
            "validation": _split_info(tokens, lengths, int(held.sum())),
            **(provenance or {}), "complete": True}
    atomic_write_text(ddir / "meta.json", dumps_json(meta, indent=1))
    return meta


def open_domain(store: str | Path, domain: str) -> tuple[ts.TensorStore, dict]:
    """(token stream, meta) of a complete domain; an incomplete one is a clear error."""
    ddir = Path(store) / domain
    if not (ddir / "meta.json").exists():
        raise StoreError(f"{ddir}: domain is missing or incomplete (no meta.json); rerun "
                         "`datalaws data prepare`")
    meta = json.loads((ddir / "meta.json").read_text())
    return open_tokens(ddir / "tokens.zarr"), meta


def open_tokens(path: Path) -> ts.TensorStore:
    """A token array for random window reads. A complete array never changes: decoded chunks
    are cached and not re-validated, so each chunk is decoded once."""
    return ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(path)},
                    "context": {"cache_pool": {"total_bytes_limit": 256 << 20}},
                    "recheck_cached_data": False}).result()


def _read_array(path: Path) -> np.ndarray:
    spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(path)}}
    return np.asarray(ts.open(spec).result().read().result())


def add_syntheticity(store: str | Path, domain: str, nll_fn: Callable, *, teacher: str,
                     max_docs: int = 2000, seed: int = 0) -> float:
    """Score a domain's documents with a teacher; write per-doc and domain syntheticity.

    ``nll_fn(list of token arrays) -> (summed NLL [docs], tokens [docs])``. Syntheticity is
    1 / teacher perplexity: per document ``exp(-nll / tokens)``; for the domain, the
    token-weighted ``exp(-sum nll / sum tokens)``. Up to ``max_docs`` documents are scored
    (a seeded sample; unscored documents get NaN). meta.json is rewritten atomically.
    """
    tokens, meta = open_domain(store, domain)
    ddir = Path(store) / domain
    offsets = _read_array(ddir / "doc_offsets.zarr")
    n = len(offsets) - 1
    pick = np.sort(np.random.default_rng(seed).choice(n, min(n, max_docs), replace=False))
    stream = np.asarray(tokens.read().result())
    docs = [stream[offsets[i]:offsets[i + 1]] for i in pick]
    nll, count = nll_fn(docs)
    per_doc = np.full(n, np.nan, dtype=np.float32)
    ok = count > 0
    per_doc[pick[ok]] = np.exp(-nll[ok] / count[ok])
    _write_array(ddir / "syntheticity.zarr", per_doc)
    meta = meta | {"syntheticity": float(np.exp(-nll[ok].sum() / count[ok].sum())),
                   "syntheticity_teacher": teacher, "syntheticity_docs": int(ok.sum())}
    atomic_write_text(ddir / "meta.json", dumps_json(meta, indent=1))
    return meta["syntheticity"]


def domain_stats(store: str | Path) -> list[dict]:
    """One row per domain: complete or not, docs, tokens, diversity, syntheticity."""
    if not Path(store).is_dir():
        raise StoreError(f"{store}: no such token store (make one with `datalaws data prepare`)")
    rows = []
    for d in sorted(p for p in Path(store).iterdir() if p.is_dir()):
        m = d / "meta.json"
        if m.exists():
            rows.append(json.loads(m.read_text()))
        else:
            rows.append({"domain": d.name, "complete": False})
    return rows


def _doc_hash(ids: np.ndarray) -> int:
    return int.from_bytes(hashlib.sha1(np.asarray(ids, "<u4").tobytes()).digest()[:8], "big")


def _held_out(docs: list[np.ndarray]) -> np.ndarray:
    """Which documents (token ids incl. their end token) the validation rule holds out."""
    h = np.array([_doc_hash(d) for d in docs], dtype=np.float64) / 2.0**64
    held = h < VALID_FRACTION
    if len(docs) >= 2 and not held.any():  # a small domain still gets one held-out document
        held[int(np.argmin(h))] = True
    if len(docs) >= 2 and held.all():
        held[int(np.argmax(h))] = False
    return held


def _split_info(tokens: np.ndarray, lengths: np.ndarray, n_valid: int, rule: str = "hash"
                ) -> dict:
    """Size and content hash of a tail split of ``n_valid`` documents."""
    start = int(lengths[: len(lengths) - n_valid].sum())
    tail = np.asarray(tokens[start:], "<u4")
    return {"rule": rule, "fraction": VALID_FRACTION, "docs": int(n_valid), "start": start,
            "tokens": int(tail.size), "hash": hashlib.sha256(tail.tobytes()).hexdigest()[:16]}


_DERIVED = ("pool_of", "selected_from", "synthesized_from")  # meta keys of made domains


def validation_split(store: str | Path, domain: str) -> dict:
    """The validation split of a domain: ``{start, tokens, docs, hash, rule, fraction}``;
    tokens ``[start:]`` of the stream are validation, ``[:start]`` training.

    Domains prepared by this version carry it in meta.json. For others (older stores,
    domains copied from another) it is computed once and cached in ``validation.json``: the
    hash rule when its documents already form the tail, else (an older store) the last
    documents, as many as the rule would hold out (``rule: "tail"``)."""
    tokens, meta = open_domain(store, domain)
    if "validation" in meta:
        return meta["validation"]
    ddir = Path(store) / domain
    cache = ddir / "validation.json"
    if cache.exists():
        return json.loads(cache.read_text())
    offsets = _read_array(ddir / "doc_offsets.zarr")
    stream = np.asarray(tokens.read().result())
    held = _held_out([stream[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)])
    k = int(held.sum())
    rule = "hash" if held[len(held) - k:].all() else "tail"
    info = _split_info(stream, np.diff(offsets), k, rule)
    atomic_write_text(cache, json.dumps(info, indent=1))
    return info


def store_validation(store: str | Path) -> dict:
    """The store's fixed validation set: every complete domain's split, one content hash of
    them all, and the default evaluation composition (``default_eval``: each domain not
    derived from another, weighted by its share of those domains' tokens)."""
    domains, base = {}, {}
    for row in domain_stats(store):
        if not row.get("complete"):
            continue
        d = row["domain"]
        domains[d] = validation_split(store, d)
        if not any(k in row for k in _DERIVED):
            base[d] = row["tokens"]
    if not domains:
        raise StoreError(f"{store}: no complete domain; run `datalaws data prepare`")
    key = json.dumps({d: [v["hash"], v["tokens"]] for d, v in sorted(domains.items())})
    total = sum(base.values()) or 1
    return {"hash": hashlib.sha256(key.encode()).hexdigest()[:16], "domains": domains,
            "default_eval": {d: n / total for d, n in sorted(base.items())}}
