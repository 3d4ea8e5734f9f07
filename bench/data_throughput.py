"""Data speed, ratios against plain references timed in this run.

- loader: packed, mixed (3 domains) grain batches (0 and 2 worker processes) vs a bare numpy memmap
  reader of the same windows; goal >= 4M tokens/s (10x a 125M model on one H100). Also the
  same loader reading the zarr token store through TensorStore (how training reads a store).
- diversity scoring MB/s vs a bare ``gzip.compress`` loop over the same documents (>= 0.8x).
- tokenization MB/s of the embedded corpus (HF tokenizers batch encoding).
"""

import gzip
import tempfile
import time
from pathlib import Path

import numpy as np

from datalaws.data.loader import LoaderConfig, make_loader
from datalaws.data.store import (
    _write_array,
    diversity,
    embedded_corpus,
    open_tokens,
    train_tokenizer,
)


def main():
    T, B, N_BATCHES = 1024, 32, 300
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp())
    streams = {}
    for d in ("web", "code", "books"):
        arr = rng.integers(1, 30000, 8_000_000, dtype=np.uint16)
        arr.tofile(tmp / f"{d}.bin")
        streams[d] = np.memmap(tmp / f"{d}.bin", dtype=np.uint16, mode="r")

    rates = {}
    for workers in (0, 2):  # threads in this process; two prefetch processes
        it = iter(make_loader(streams, LoaderConfig(seq_len=T, batch=B, workers=workers, mixture={
            "web": 0.5, "code": 0.3, "books": 0.2}), eod=0))
        for _ in range(10):  # warm up (worker start-up)
            next(it)
        t0 = time.perf_counter()
        for _ in range(N_BATCHES):
            next(it)
        rates[workers] = N_BATCHES * B * T / (time.perf_counter() - t0)
        del it
    loader = max(rates.values())

    ref_stream = streams["web"]
    n_win = (len(ref_stream) - 1) // T
    t0 = time.perf_counter()
    for _ in range(N_BATCHES):
        idx = rng.integers(0, n_win, B)
        np.stack([np.asarray(ref_stream[i * T:i * T + T + 1], dtype=np.int32) for i in idx])
    memmap = N_BATCHES * B * T / (time.perf_counter() - t0)

    zarr_streams = {}
    for d, arr in streams.items():
        _write_array(tmp / f"{d}.zarr", np.asarray(arr))
        zarr_streams[d] = open_tokens(tmp / f"{d}.zarr")
    it = iter(make_loader(zarr_streams, LoaderConfig(seq_len=T, batch=B, mixture={
        "web": 0.5, "code": 0.3, "books": 0.2}), eod=0))
    for _ in range(10):
        next(it)
    t0 = time.perf_counter()
    for _ in range(N_BATCHES):
        next(it)
    zarr_rate = N_BATCHES * B * T / (time.perf_counter() - t0)
    del it

    print(f"loader {rates[0]:,.0f} tok/s (0 workers), {rates[2]:,.0f} tok/s (2 workers); "
          f"numpy memmap {memmap:,.0f} tok/s; "
          f"ratio {loader / memmap:.2f}; goal 4,000,000 tok/s: "
          f"{'met' if loader >= 4e6 else 'NOT met'}")
    print(f"loader from the zarr store (TensorStore, 0 workers) {zarr_rate:,.0f} tok/s; "
          f"ratio to in-memory {zarr_rate / rates[0]:.2f}")

    corpus = embedded_corpus()
    docs = [d for v in corpus.values() for d in v]
    mb = sum(len(d.encode()) for d in docs) / 1e6
    ours = bare = 0.0
    for _ in range(3):  # interleaved, best of three: the machine is noisy
        t0 = time.perf_counter()
        for d in docs:
            diversity(d)
        ours = max(ours, mb / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for d in docs:
            len(gzip.compress(d.encode(), 9))
        bare = max(bare, mb / (time.perf_counter() - t0))
    print(f"diversity {ours:.1f} MB/s; bare gzip loop {bare:.1f} MB/s; ratio {ours / bare:.2f}")

    tok = train_tokenizer(docs, 8192, tmp / "tokenizer.json")
    t0 = time.perf_counter()
    tok.encode_batch(docs)
    print(f"tokenization (batch encode, vocab 8192) {mb / (time.perf_counter() - t0):.1f} MB/s "
          f"on {mb:.1f} MB")


if __name__ == "__main__":  # grain workers re-import this module
    main()
