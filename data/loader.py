"""Grain loaders: packed sequences from token streams, mixtures, a unique-token budget, epochs.

A domain is one long token stream in which documents are separated by an end-of-document
token (``eod``). ``PackedSequences`` cuts it into windows of ``seq_len + 1`` tokens (packing:
no padding, documents cross window edges) and marks where documents start, so positions
restart at each document. The pipeline is a grain chain:

    source -> slice(unique budget) -> repeat(epochs) -> shuffle(seed) -> mix(weights) -> batch
           -> [multiprocess prefetch (workers)]

It is deterministic for a seed and its iterator state checkpoints (``get_state`` /
``set_state``; model/ saves it with Orbax).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import grain
import numpy as np

__all__ = ["PackedSequences", "LoaderConfig", "make_loader", "markov_stream"]


class PackedSequences(grain.sources.RandomAccessDataSource if hasattr(
        grain.sources, "RandomAccessDataSource") else object):
    """Random access to windows ``[inputs (T), targets (T), positions (T)]`` of a stream."""

    def __init__(self, tokens: Sequence[int] | np.ndarray, seq_len: int, eod: int):
        if seq_len <= 0:
            raise ValueError(f"seq_len={seq_len} must be > 0")
        self.tokens, self.seq_len, self.eod = tokens, seq_len, eod
        self._n = (len(tokens) - 1) // seq_len
        if self._n <= 0:
            raise ValueError(f"a stream of {len(tokens)} tokens holds no window of "
                             f"{seq_len + 1}")

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        t = self.seq_len
        w = self.tokens[i * t: i * t + t + 1]
        if hasattr(w, "read"):  # a TensorStore view: random access into the zarr store
            w = w.read().result()
        w = np.asarray(w, dtype=np.int32)
        inputs = w[:-1]
        # positions restart after every end-of-document token (document boundaries)
        starts = np.concatenate([[True], inputs[:-1] == self.eod])
        idx = np.arange(t)
        last_start = np.maximum.accumulate(np.where(starts, idx, 0))
        positions = (idx - last_start).astype(np.int32)
        return {"inputs": inputs, "targets": w[1:], "positions": positions}

    def __repr__(self) -> str:
        return f"PackedSequences(windows={self._n}, seq_len={self.seq_len})"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoaderConfig:
    """How to serve a run's training data."""

    seq_len: int  # tokens per sequence
    batch: int  # sequences per batch (per process)
    mixture: Mapping[str, float]  # domain -> proportion, sums to 1
    seed: int = 0
    unique_tokens: int | None = None  # cap on distinct tokens per run (None: all)
    epochs: int | None = None  # passes over the unique data (None: repeat forever)
    workers: int = 0  # grain multiprocess prefetch workers (0: threads in this process)

    def __post_init__(self):
        total = sum(self.mixture.values())
        if not self.mixture or abs(total - 1) > 1e-6 or min(self.mixture.values()) < 0:
            raise ValueError(f"LoaderConfig.mixture={dict(self.mixture)} must be non-negative "
                             "proportions summing to 1")
        if self.workers < 0:
            raise ValueError(f"LoaderConfig.workers={self.workers} must be >= 0")
        if self.batch <= 0 or self.seq_len <= 0:
            raise ValueError(f"LoaderConfig: batch={self.batch}, seq_len={self.seq_len} must "
                             "be > 0")


def make_loader(streams: Mapping[str, Sequence[int] | np.ndarray], config: LoaderConfig, *,
                eod: int, process_index: int = 0, process_count: int = 1
                ) -> grain.IterDataset:
    """A batched grain ``IterDataset`` over the mixture; ``iter()`` it to get batches.

    With a unique-token budget U, each domain contributes its share ``U * r`` of distinct
    windows, repeated ``epochs`` times: every window is seen exactly ``epochs`` times.
    Processes take disjoint interleaved slices of every domain.
    """
    missing = set(config.mixture) - set(streams)
    if missing:
        raise ValueError(f"mixture names domain(s) {sorted(missing)} that the data lacks; "
                         f"available: {sorted(streams)}")
    datasets, weights = [], []
    for i, (domain, r) in enumerate(sorted(config.mixture.items())):
        if r == 0:
            continue
        ds = grain.MapDataset.source(PackedSequences(streams[domain], config.seq_len, eod))
        if config.unique_tokens is not None:
            windows = int(config.unique_tokens * r) // config.seq_len
            if windows < 1 or windows > len(ds):
                raise ValueError(f"domain {domain!r}: a unique budget of "
                                 f"{config.unique_tokens * r:.0f} tokens needs {windows} windows;"
                                 f" it has {len(ds)}")
            ds = ds[:windows]
        ds = ds[process_index::process_count]
        ds = ds.shuffle(seed=config.seed + 1000 * i).repeat(config.epochs)
        datasets.append(ds)
        weights.append(r)
    mixed = grain.MapDataset.mix(datasets, weights) if len(datasets) > 1 else datasets[0]
    out = mixed.batch(config.batch, drop_remainder=True).to_iter_dataset()
    if config.workers:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain reads absl flags; we are not an absl app
            flags.FLAGS.mark_as_parsed()
        # workers take interleaved slices and are read round-robin: same order as 0 workers
        out = out.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.workers))
    return out


def markov_stream(n_tokens: int, vocab: int, *, eod: int = 0, seed: int = 0,
                  doc_len: int = 200) -> np.ndarray:
    """A learnable synthetic stream (sparse first-order Markov chain) for tests and benches."""
    rng = np.random.default_rng(seed)
    nxt = rng.integers(1, vocab, size=(vocab, 4))  # each token has 4 likely successors
    out = np.empty(n_tokens, dtype=np.int32)
    t = 1
    choice = rng.integers(0, 4, n_tokens)
    for i in range(n_tokens):
        if i % doc_len == doc_len - 1:
            t = eod
        else:
            t = nxt[t, choice[i]]
        out[i] = t
    return out
