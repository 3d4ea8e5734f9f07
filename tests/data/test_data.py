"""Loaders: exact mixtures, exact repetition, checkpointed iterators; store and ingest errors."""

import dataclasses
import gzip
import json

import numpy as np
import pytest

from datalaws.data.loader import LoaderConfig, PackedSequences, make_loader
from datalaws.data.store import (
    StoreError,
    diversity,
    domain_stats,
    open_domain,
    prepare_domain,
    read_documents,
    train_tokenizer,
)


def _streams():
    # each domain's tokens carry the domain's id in their value range, so batches are countable
    return {d: np.concatenate([np.arange(1, 200_001) % 97 + 100 * i + 1])
            for i, d in enumerate(("web", "code", "books"))}


def test_mixture_proportions_within_one_percent():
    mix = {"web": 0.5, "code": 0.3, "books": 0.2}
    it = iter(make_loader(_streams(), LoaderConfig(seq_len=64, batch=16, mixture=mix), eod=0))
    counts = dict.fromkeys(mix, 0)
    total = 0
    while total < 10**6:
        b = next(it)["inputs"]
        for row in b:
            counts[("web", "code", "books")[(int(row[0]) - 1) // 100]] += row.size
        total += b.size
    for d, r in mix.items():
        assert abs(counts[d] / total - r) < 0.01, (d, counts[d] / total)


def test_restore_mid_stream_matches_uninterrupted():
    cfg = LoaderConfig(seq_len=32, batch=4, mixture={"web": 0.7, "code": 0.3}, seed=3)
    a = iter(make_loader(_streams(), cfg, eod=0))
    for _ in range(7):
        next(a)
    state = a.get_state()
    expected = [next(a)["inputs"] for _ in range(5)]
    b = iter(make_loader(_streams(), cfg, eod=0))
    b.set_state(json.loads(json.dumps(state)) if isinstance(state, dict) else state)
    for e in expected:
        np.testing.assert_array_equal(next(b)["inputs"], e)


def test_worker_processes_give_the_same_batches_and_restore():
    cfg = LoaderConfig(seq_len=32, batch=4, mixture={"web": 0.7, "code": 0.3}, seed=3)
    single = iter(make_loader(_streams(), cfg, eod=0))
    expected = [next(single)["inputs"] for _ in range(12)]
    multi = iter(make_loader(_streams(), dataclasses.replace(cfg, workers=2), eod=0))
    for e in expected[:6]:
        np.testing.assert_array_equal(next(multi)["inputs"], e)
    state = multi.get_state()
    resumed = iter(make_loader(_streams(), dataclasses.replace(cfg, workers=2), eod=0))
    resumed.set_state(state)
    for e in expected[6:]:
        np.testing.assert_array_equal(next(resumed)["inputs"], e)


def test_repetition_sees_every_window_exactly_r_times():
    stream = np.arange(64 * 50 + 1)  # 50 distinct windows of 64
    cfg = LoaderConfig(seq_len=64, batch=5, mixture={"web": 1.0}, unique_tokens=64 * 20,
                       epochs=3)
    seen = {}
    for b in make_loader({"web": stream}, cfg, eod=-1):
        for row in b["inputs"]:
            seen[int(row[0])] = seen.get(int(row[0]), 0) + 1
    assert len(seen) == 20 and set(seen.values()) == {3}


def test_positions_restart_at_document_boundaries():
    s = np.array([5, 6, 0, 7, 8, 9, 0, 1, 2])
    item = PackedSequences(s, 8, eod=0)[0]
    assert list(item["positions"]) == [0, 1, 2, 0, 1, 2, 3, 0]


def test_tensorstore_stream_reads_the_same_windows_as_numpy():
    import tensorstore as ts

    s = np.arange(1, 1001) % 13
    windows = np.array([3, 7, 0, 98])
    from_zarr = PackedSequences(ts.array(s.astype(np.uint16)), 10, eod=0).read(windows)
    from_numpy = PackedSequences(s, 10, eod=0).read(windows)
    for k in from_numpy:
        np.testing.assert_array_equal(from_zarr[k], from_numpy[k])


def test_diversity_matches_gzip():
    text = "the cat sat on the mat " * 20
    assert diversity(text) == len(gzip.compress(text.encode(), 9)) / len(text.encode())
    assert diversity("abcdefghij" * 2) > diversity("a" * 2000)


def test_bad_inputs_name_the_file(tmp_path):
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02")
    with pytest.raises(StoreError, match="bin.txt.*binary"):
        list(read_documents([tmp_path / "bin.txt"]))
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(StoreError, match="latin.txt.*UTF-8"):
        list(read_documents([tmp_path / "latin.txt"]))
    (tmp_path / "d.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(StoreError, match="d.jsonl:1: no field 'text'"):
        list(read_documents([tmp_path / "d.jsonl"]))
    with pytest.raises(StoreError, match="no such file"):
        list(read_documents([tmp_path / "missing"]))


def test_store_roundtrip_dedup_and_incomplete(tmp_path):
    docs = ["hello world, this is a document."] * 3 + ["another document entirely."]
    train_tokenizer(docs, 300, tmp_path / "tokenizer.json")
    meta = prepare_domain(tmp_path, "web", docs, progress=False)
    assert meta["docs"] == 2 and meta["duplicates_removed"] == 2 and meta["complete"]
    tokens, m = open_domain(tmp_path, "web")
    assert tokens.shape[0] == m["tokens"] and tokens.dtype.numpy_dtype == np.uint16
    (tmp_path / "half").mkdir()  # a prepare killed before meta.json
    stats = {r["domain"]: r for r in domain_stats(tmp_path)}
    assert stats["half"]["complete"] is False and stats["web"]["complete"]
    with pytest.raises(StoreError, match="incomplete"):
        open_domain(tmp_path, "half")
    with pytest.raises(StoreError, match="empty"):
        prepare_domain(tmp_path, "none", ["", "  "], progress=False)


def test_validation_split_is_fixed_by_content_and_shared_by_pools(tmp_path):
    from datalaws.data.curate import make_pools, read_docs
    from datalaws.data.store import store_validation, validation_split

    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]
    docs = [" ".join(rng.choice(words, int(rng.integers(5, 40)))) + f" {i}" for i in range(200)]
    train_tokenizer(docs, 300, tmp_path / "tokenizer.json")
    a = prepare_domain(tmp_path, "web", docs, progress=False)["validation"]
    b = prepare_domain(tmp_path, "rev", docs[::-1], progress=False)["validation"]
    # the held-out documents depend on their content only, not on the order they came in
    assert a["hash"] == b["hash"] and a["docs"] == b["docs"] and 0 < a["docs"] < 30
    tokens, meta = open_domain(tmp_path, "web")
    assert a["start"] + a["tokens"] == meta["tokens"]  # the split is the stream's tail
    held, _, _ = read_docs(tmp_path, "web")
    valid = {tuple(d) for d in held[len(held) - a["docs"]:]}
    # a pool copies documents with their ids: its validation documents are the source's
    make_pools(tmp_path, "web", by="diversity", quantiles=[0.5])
    for pool in ("web_p1", "web_p2"):
        split = validation_split(tmp_path, pool)
        pdocs, _, _ = read_docs(tmp_path, pool)
        assert split["rule"] == "hash"
        assert {tuple(d) for d in pdocs[len(pdocs) - split["docs"]:]} == {
            tuple(d) for d in pdocs if tuple(d) in valid}
    v = store_validation(tmp_path)
    assert set(v["domains"]) == {"web", "rev", "web_p1", "web_p2"}
    assert set(v["default_eval"]) == {"web", "rev"}  # pools are not base domains
    assert store_validation(tmp_path)["hash"] == v["hash"]
