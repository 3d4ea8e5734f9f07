"""Grain loaders: packed sequences from token streams, mixtures, a unique-token budget, epochs.

A domain is one long token stream in which documents are separated by an end-of-document
token (``eod``). ``PackedSequences`` cuts it into windows of ``seq_len + 1`` tokens (packing:
no padding, documents cross window edges) and marks where documents start: ``positions``
restart at each document and ``segments`` number the documents of a row, so the model's
attention never crosses a document boundary (the token after an ``eod`` starts a new
document). The pipeline is a grain chain:

    window ids -> slice(unique budget) -> shuffle(seed) -> repeat(epochs) -> mix(weights)
               -> batch -> read tokens (one gather per batch) -> [multiprocess prefetch]

It is deterministic for a seed and its iterator state checkpoints (``get_state`` /
``set_state``; model/ saves it with Orbax).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import grain
import numpy as np

__all__ = ["PackedSequences", "LoaderConfig", "make_loader", "markov_stream"]


KEYS = ("inputs", "targets", "positions", "segments")


def _positions(inputs: np.ndarray, eod: int) -> tuple[np.ndarray, np.ndarray]:
    """(position of each token within its document, document number within the row); both
    restart after every ``eod`` (rows)."""
    starts = np.concatenate([np.ones_like(inputs[:, :1], bool), inputs[:, :-1] == eod], axis=1)
    idx = np.arange(inputs.shape[1])
    last_start = np.maximum.accumulate(np.where(starts, idx, 0), axis=1)
    return (idx - last_start).astype(np.int32), (np.cumsum(starts, axis=1) - 1).astype(np.int32)


class PackedSequences:
    """Random access to windows ``[inputs, targets, positions, segments]`` (T each) of a
    stream."""

    def __init__(self, tokens: np.ndarray | Sequence[int], seq_len: int, eod: int):
        if seq_len <= 0:
            raise ValueError(f"seq_len={seq_len} must be > 0")
        if not hasattr(tokens, "shape"):  # a plain sequence of ids
            tokens = np.asarray(tokens)
        self.tokens, self.seq_len, self.eod = tokens, seq_len, eod
        self._n = (tokens.shape[0] - 1) // seq_len  # numpy, memmap or TensorStore
        if self._n <= 0:
            raise ValueError(f"a stream of {tokens.shape[0]} tokens holds no window of "
                             f"{seq_len + 1}")

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.read(np.array([i])).items()}

    def read(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        """The given windows as ``[len(windows), T]`` arrays, read in one gather."""
        t = self.seq_len
        if hasattr(self.tokens, "read"):  # a TensorStore view: concurrent window reads
            futures = [self.tokens[i * t: i * t + t + 1].read() for i in windows]
            w = np.stack([f.result() for f in futures]).astype(np.int32)
        else:  # numpy array or memmap: one fancy-index gather
            w = np.asarray(self.tokens[windows[:, None] * t + np.arange(t + 1)], dtype=np.int32)
        inputs = w[:, :-1]
        positions, segments = _positions(inputs, self.eod)
        return {"inputs": inputs, "targets": w[:, 1:], "positions": positions,
                "segments": segments}

    def __repr__(self) -> str:
        return f"PackedSequences(windows={self._n}, seq_len={self.seq_len})"


class _ReadBatch(grain.transforms.Map):
    """(domain ids, window ids) of a batch -> the batch's arrays, one gather per domain.

    grain shuffles, mixes, repeats and batches cheap window *indices*; the tokens are read
    here, once per batch, because grain's per-element overhead (~100 us) would otherwise
    dominate the reading of a window.
    """

    def __init__(self, sources: Sequence[PackedSequences]):
        self.sources = sources

    def map(self, element: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
        domain, window = element
        t = self.sources[0].seq_len
        out = {k: np.empty((len(window), t), np.int32) for k in KEYS}
        for d in np.unique(domain):
            rows = domain == d
            for k, v in self.sources[d].read(window[rows]).items():
                out[k][rows] = v
        return out


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


def make_loader(streams: Mapping[str, np.ndarray], config: LoaderConfig, *,
                eod: int, process_index: int = 0, process_count: int = 1
                ) -> grain.IterDataset:
    """A batched grain ``IterDataset`` over the mixture; ``iter()`` it to get batches.

    With a unique-token budget U, each domain contributes its share ``U * r`` of distinct
    windows, repeated ``epochs`` times: every window is seen exactly ``epochs`` times.
    Processes take disjoint interleaved slices of every domain. A stream is a numpy array,
    a memmap, or a TensorStore view (read window by window, concurrently).
    """
    missing = set(config.mixture) - set(streams)
    if missing:
        raise ValueError(f"mixture names domain(s) {sorted(missing)} that the data lacks; "
                         f"available: {sorted(streams)}")
    datasets, weights, sources = [], [], []
    for domain, r in sorted(config.mixture.items()):
        if r == 0:
            continue
        src = PackedSequences(streams[domain], config.seq_len, eod)
        windows = len(src)
        if config.unique_tokens is not None:
            windows = int(config.unique_tokens * r) // config.seq_len
            if windows < 1 or windows > len(src):
                raise ValueError(f"domain {domain!r}: a unique budget of "
                                 f"{config.unique_tokens * r:.0f} tokens needs {windows} windows;"
                                 f" it has {len(src)}")
        i = len(sources)
        ds = grain.MapDataset.range(windows)[process_index::process_count]
        ds = ds.shuffle(seed=config.seed + 1000 * i).repeat(config.epochs)
        datasets.append(ds.map(functools.partial(_tag, i)))
        weights.append(r)
        sources.append(src)
    mixed = grain.MapDataset.mix(datasets, weights) if len(datasets) > 1 else datasets[0]
    out = (mixed.batch(config.batch, drop_remainder=True).map(_ReadBatch(sources))
           .to_iter_dataset())
    if config.workers:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain reads absl flags; we are not an absl app
            flags.FLAGS.mark_as_parsed()
        # workers take interleaved slices and are read round-robin: same order as 0 workers
        out = out.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.workers))
    return out


def _tag(domain: int, window: int) -> tuple[int, int]:
    return domain, window


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
