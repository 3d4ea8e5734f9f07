"""Periodic validation overhead: a run at the default ``eval_every`` / ``curve_windows`` vs the
same run with curves off (``eval_every=0``), both timed in this process.

    python bench/eval_overhead.py [--preset micro] [--steps 300] [--domains 3] [--repeats 2]

Both runs compile, train the same steps and score the same final validation windows of every
domain; the difference is the validation-curve points. Each variant runs ``--repeats`` times
(alternating) and the fastest counts. Goal: ratio <= 1.10 at the defaults. On a machine
shared with other jobs the absolute times are inflated; the ratio is what to read.
"""

import argparse
import tempfile
import time

import numpy as np

from datalaws.data.loader import markov_stream
from datalaws.model.train import TrainConfig, train
from datalaws.model.transformer import ModelConfig


def one_run(c: TrainConfig, streams, valid) -> float:
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        assert train(c, streams, d, eod=0, valid=valid, progress=False) == 0
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="micro")
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--domains", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    vocab = 512
    streams = {f"d{i}": markov_stream(400_000, vocab, seed=i) for i in range(a.domains)}
    valid = {d: s[-40_000:] for d, s in streams.items()}
    streams = {d: s[:-40_000] for d, s in streams.items()}
    model = ModelConfig.preset(a.preset, vocab=vocab, seq_len=a.seq_len)
    on = TrainConfig(model=model, tokens=a.steps * a.batch * a.seq_len, batch=a.batch,
                     mixture={d: 1 / a.domains for d in streams}, save_every=10**6)
    off = TrainConfig(**{**on.__dict__, "eval_every": 0})
    times = {"curves on": [], "curves off": []}
    for _ in range(a.repeats):
        times["curves off"].append(one_run(off, streams, valid))
        times["curves on"].append(one_run(on, streams, valid))
    best = {k: min(v) for k, v in times.items()}
    points = a.steps // on.eval_every + (a.steps % on.eval_every > 0)
    print(f"{a.preset} seq_len {a.seq_len} batch {a.batch}, {a.steps} steps, {a.domains} "
          f"domains; defaults eval_every={on.eval_every}, curve_windows={on.curve_windows}, "
          f"eval_windows={on.eval_windows} ({points} curve points)")
    print(f"{'variant':12s} {'wall s (best)':>14s} {'all':>20s}")
    for k, v in times.items():
        print(f"{k:12s} {best[k]:14.2f} {' '.join(f'{x:.2f}' for x in v):>20s}")
    ratio = best["curves on"] / best["curves off"]
    print(f"ratio (curves on / off): {ratio:.3f}  goal <= 1.10: "
          f"{'met' if ratio <= 1.10 else 'NOT met'}")
    np.testing.assert_array_less(0, ratio)


if __name__ == "__main__":
    main()
