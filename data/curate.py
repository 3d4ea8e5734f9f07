"""New domains made from existing ones: quality pools, DSIR selection, model synthesis.

These are the seeds' data scenarios. Each writes an ordinary domain into the same store (same
tokenizer, same per-document quality columns, meta.json last and atomically) whose meta.json
says where it came from, so loaders, `data stats`, `data quality` and the laws treat it like
any other domain.

- ``make_pools``: split a domain into pools by thresholds or quantiles of a per-document
  score (diversity, syntheticity, or any ``<column>.zarr`` of the domain), best first, as the
  data-filtering law (Goyal et al. 2024) expects (``pool.<name>`` columns).
- ``select_like``: importance-sampled selection toward a target domain (DSIR, Xie et al.
  2023): hashed unigram+bigram features of token ids, a bag-of-n-grams model of target and
  raw data, log importance weight per document, Gumbel top-k sampling without replacement.
- ``synthesize``: a synthetic domain sampled from a trained model prompted with the first
  tokens of real documents (a ``Sampler``, e.g. model/'s KV-cached ``generate`` wrapped by
  ``ModelSampler``); the seed's synthesis scenario.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from tokenizers import Tokenizer

from datalaws.data.store import (
    StoreError,
    _read_array,
    _tokenizer_hash,
    _write_array,
    domain_diversity,
    open_domain,
    prepare_domain,
)
from datalaws.io import dumps_json
from datalaws.records import atomic_write_text

__all__ = ["make_pools", "select_like", "synthesize", "read_docs", "Sampler"]


def read_docs(store: str | Path, domain: str) -> tuple[list[np.ndarray], dict[str, np.ndarray],
                                                      dict]:
    """(documents as token arrays incl. their end-of-document token, per-document columns,
    meta) of a complete domain."""
    tokens, meta = open_domain(store, domain)
    ddir = Path(store) / domain
    stream = np.asarray(tokens.read().result())
    offsets = _read_array(ddir / "doc_offsets.zarr")
    docs = [stream[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    columns = {p.name[:-5]: _read_array(p) for p in sorted(ddir.glob("*.zarr"))
               if p.name not in ("tokens.zarr", "doc_offsets.zarr")}
    return docs, columns, meta


def _write_subset(store: Path, src: str, out: str, pick: np.ndarray, provenance: dict) -> dict:
    """Copy documents ``pick`` of ``src`` into a new domain ``out`` (no re-tokenizing)."""
    store = Path(store)
    if (store / out / "meta.json").exists():
        raise StoreError(f"{store / out}: domain already exists; choose another name")
    if len(pick) == 0:
        raise StoreError(f"domain {out!r} would be empty")
    docs, columns, meta = read_docs(store, src)
    pick = np.sort(np.asarray(pick))
    sub = [docs[i] for i in pick]
    lengths = np.array([len(d) for d in sub], np.int64)
    ddir = store / out
    ddir.mkdir(parents=True, exist_ok=True)
    _write_array(ddir / "tokens.zarr", np.concatenate(sub).astype(meta["dtype"]))
    _write_array(ddir / "doc_offsets.zarr", np.concatenate([[0], np.cumsum(lengths)]))
    for name, col in columns.items():
        _write_array(ddir / f"{name}.zarr", col[pick])
    new = {"domain": out, "docs": len(sub), "tokens": int(lengths.sum()),
           "tokenizer_hash": _tokenizer_hash(store / "tokenizer.json"), "eod": meta["eod"],
           "dtype": meta["dtype"], **provenance}
    tok = Tokenizer.from_file(str(store / "tokenizer.json"))
    order = np.random.default_rng(0).permutation(len(sub))  # an unbiased sample if capped
    new["diversity"] = domain_diversity(tok.decode(sub[i][:-1].tolist()) for i in order)
    if "syntheticity" in columns:
        s, n = columns["syntheticity"][pick], lengths - 1
        ok = np.isfinite(s) & (n > 0)
        if ok.any():  # token-weighted exp(-mean NLL) over the scored documents
            new["syntheticity"] = float(np.exp(np.sum(n[ok] * np.log(s[ok])) / n[ok].sum()))
            new["syntheticity_teacher"] = meta.get("syntheticity_teacher")
            new["syntheticity_docs"] = int(ok.sum())
    new["complete"] = True
    atomic_write_text(ddir / "meta.json", dumps_json(new, indent=1))
    return new


def make_pools(store: str | Path, domain: str, *, by: str,
               quantiles: Sequence[float] | None = None,
               thresholds: Sequence[float] | None = None, ascending: bool = False,
               prefix: str | None = None) -> list[dict]:
    """Split ``domain`` into pools ``<prefix>_p1 .. _pK`` by a per-document score.

    Cut points are ``thresholds`` or the ``quantiles`` of the score; pool 1 holds the highest
    scores (the lowest with ``ascending``). Documents without a score (NaN: e.g. not scored by
    the teacher) are left out and counted in each pool's meta.
    """
    if (quantiles is None) == (thresholds is None):
        raise ValueError("give exactly one of quantiles or thresholds")
    docs, columns, _ = read_docs(store, domain)
    if by not in columns:
        raise StoreError(f"{Path(store) / domain}: no per-document column {by!r}; have "
                         f"{sorted(columns)} (syntheticity needs `datalaws data quality`)")
    score = columns[by].astype(np.float64)
    scored = np.isfinite(score)
    if not scored.any():
        raise StoreError(f"{Path(store) / domain}: column {by!r} has no finite values")
    if quantiles is not None:
        q = np.asarray(quantiles, float)
        if np.any((q <= 0) | (q >= 1)):
            raise ValueError(f"quantiles must lie in (0, 1); got {q.tolist()}")
        edges = np.quantile(score[scored], np.sort(q))
    else:
        edges = np.sort(np.asarray(thresholds, float))
    bins = np.digitize(score, edges)  # 0 .. len(edges); higher bin = higher score
    order = range(len(edges) + 1) if ascending else range(len(edges), -1, -1)
    prefix = prefix or domain
    pools = []  # every pool is checked before any is written: a bad cut leaves no debris
    for rank, b in enumerate(order, 1):
        pick = np.flatnonzero(scored & (bins == b))
        name = f"{prefix}_p{rank}"
        if len(pick) == 0:
            raise StoreError(f"pool {rank} of {domain!r} by {by!r} would be empty; use fewer "
                             "or other cut points")
        if (Path(store) / name / "meta.json").exists():
            raise StoreError(f"{Path(store) / name}: domain already exists; choose another "
                             "prefix")
        lo = edges[b - 1] if b > 0 else -np.inf
        hi = edges[b] if b < len(edges) else np.inf
        pools.append((name, pick, {"pool_of": domain, "pool_by": by, "pool_rank": rank,
                                   "pool_range": [float(lo), float(hi)],
                                   "unscored_docs": int((~scored).sum())}))
    return [_write_subset(Path(store), domain, name, pick, prov) for name, pick, prov in pools]


def _ngram_counts(doc: np.ndarray, buckets: int) -> np.ndarray:
    d = doc.astype(np.uint64)
    uni = (d * np.uint64(2654435761)) % np.uint64(buckets)
    bi = ((d[:-1] * np.uint64(1000003) + d[1:]) * np.uint64(40503)) % np.uint64(buckets)
    return np.bincount(np.concatenate([uni, bi]).astype(np.int64), minlength=buckets)


def select_like(store: str | Path, raw: str, target: str, out: str, *, tokens: int,
                buckets: int = 10_000, seed: int = 0) -> dict:
    """DSIR: documents of ``raw`` resampled toward ``target`` until ``tokens`` are chosen."""
    if tokens <= 0:
        raise ValueError(f"tokens={tokens} must be > 0")
    raw_docs, _, _ = read_docs(store, raw)
    tgt_docs, _, _ = read_docs(store, target)
    # two passes over the raw documents, never a [docs, buckets] matrix in memory
    tgt_f = sum(_ngram_counts(d, buckets) for d in tgt_docs).astype(np.float64)
    raw_f = sum(_ngram_counts(d, buckets) for d in raw_docs).astype(np.float64)
    log_p = np.log((tgt_f + 1) / (tgt_f + 1).sum())  # add-one smoothed bag of n-grams
    log_q = np.log((raw_f + 1) / (raw_f + 1).sum())
    log_w = np.array([_ngram_counts(d, buckets) @ (log_p - log_q) for d in raw_docs])
    gumbel = np.random.default_rng(seed).gumbel(size=len(raw_docs))
    order = np.argsort(-(log_w + gumbel))  # Gumbel top-k = sampling w/o replacement ∝ w
    lengths = np.array([len(raw_docs[i]) for i in order])
    k = int(np.searchsorted(np.cumsum(lengths), tokens) + 1)
    return _write_subset(Path(store), raw, out, order[:k], {
        "selected_from": raw, "selected_like": target, "selection": "dsir",
        "selection_buckets": buckets})


class Sampler(Protocol):
    """What synthesis needs of a language model (``datalaws.model.generate.ModelSampler``
    wraps a trained run's; data/ never imports model/)."""

    vocab: int  # the model's vocabulary
    seq_len: int  # its context

    def __call__(self, prompts_BP: np.ndarray, max_new: int, *, rng: int, eod: int,
                 temperature: float, top_p: float, vocab_limit: int) -> np.ndarray:
        """[B, max_new] sampled continuations of the prompts."""
        ...


def synthesize(store: str | Path, source: str, model: Sampler, out: str, *, tokens: int,
               prompt_tokens: int = 32, max_new: int | None = None, batch: int = 16,
               temperature: float = 1.0, top_p: float = 0.95, seed: int = 0,
               model_name: str = "", progress: bool = True) -> dict:
    """A synthetic domain of at least ``tokens`` generated tokens, each document the model's
    continuation (prompt excluded) of the first ``prompt_tokens`` of a random real document."""
    store = Path(store)
    if (store / out / "meta.json").exists():
        raise StoreError(f"{store / out}: domain already exists; choose another name")
    if tokens <= 0:
        raise ValueError(f"tokens={tokens} must be > 0")
    bad = [f"{name}={value} (needs {need})" for name, value, ok, need in (
        ("temperature", temperature, temperature >= 0, ">= 0; 0 is greedy"),
        ("top_p", top_p, 0 < top_p <= 1, "(0, 1]"),
        ("prompt_tokens", prompt_tokens, prompt_tokens > 0, "> 0"),
        ("batch", batch, batch > 0, "> 0")) if not ok]
    if bad:
        raise ValueError("synthesize: " + ", ".join(bad))
    tok = Tokenizer.from_file(str(store / "tokenizer.json"))
    if model.vocab < tok.get_vocab_size():
        raise StoreError(f"model vocabulary {model.vocab} is smaller than the store's "
                         f"tokenizer ({tok.get_vocab_size()}); was it trained on this store?")
    docs, _, meta = read_docs(store, source)
    eod = meta["eod"]
    prompts = [d[:prompt_tokens] for d in docs if len(d) > prompt_tokens + 1]
    if not prompts:
        raise StoreError(f"domain {source!r} has no document longer than {prompt_tokens} "
                         "tokens to prompt with")
    max_new = max_new or model.seq_len - prompt_tokens
    rng = np.random.default_rng(seed)
    texts, made, t0, calls = [], 0, time.perf_counter(), 0
    from datalaws.progress import Progress

    bar = Progress(tokens, "synthesized", enabled=progress)
    while made < tokens:
        if calls > 10 + 10 * tokens / (batch * max_new):
            raise StoreError(f"the model keeps ending documents at once; made {made} of "
                             f"{tokens} tokens")
        rows = np.stack([prompts[i] for i in rng.integers(0, len(prompts), batch)])
        gen = model(rows, max_new, rng=int(rng.integers(2**31)), eod=eod,
                    temperature=temperature, top_p=top_p, vocab_limit=tok.get_vocab_size())
        calls += 1
        for row in gen:
            ids = row[:np.argmax(row == eod)] if (row == eod).any() else row
            if len(ids):
                texts.append(tok.decode(ids.tolist()))
                made += len(ids)
        rate = calls * batch * max_new / (time.perf_counter() - t0)
        bar.update(min(made, tokens), f"tokens, {len(texts)} docs, {rate:,.0f} tok/s sampled")
    bar.close()
    return prepare_domain(store, out, texts, progress=progress, provenance={
        "synthesized_from": source, "synthesis_model": model_name,
        "temperature": temperature, "top_p": top_p, "prompt_tokens": prompt_tokens})
