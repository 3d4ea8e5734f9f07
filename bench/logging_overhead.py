"""What run logging adds to step time: metrics.jsonl, TensorBoard events, the time split and
the progress line (``RunLogger`` at its default interval), against the training step itself,
both timed in this run.

    python bench/logging_overhead.py                 # micro and tiny presets, log_every=10
    python bench/logging_overhead.py --presets mini --steps 60

Two measures, per preset:
- direct: the loop's logging calls alone (two ``timed`` blocks, an inactive profile window,
  ``RunLogger.step`` with real values), per step, over the measured step time. Precise.
- A/B: blocks of real training steps with and without those calls, interleaved, medians of
  per-step time. Includes the TensorBoard writer thread, but on a shared machine its noise
  is larger than the effect: read it as a check on the direct ratio, not a measurement.
Goal: logging <= 2% of step time at the default interval (log_every=10).
"""

import argparse
import contextlib
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from datalaws.model.flops import flops_per_token, peak_flops
from datalaws.model.metrics import ProfileWindow, RunLogger
from datalaws.model.train import TrainConfig, init_state, make_mesh, make_train_step
from datalaws.model.transformer import ModelConfig


def _logger(run_dir, c: TrainConfig, log_every: int) -> RunLogger:
    return RunLogger(run_dir, run_id="bench", steps=10**9, log_every=log_every,
                     tokens_per_step=c.batch * c.model.seq_len,
                     flops_per_token=flops_per_token(c.model), peak_flops=peak_flops(),
                     config={"bench": True})


def _steps(step, state, batch, n, log: RunLogger | None, prof: ProfileWindow, start: int):
    """n training steps as the loop runs them, with or without the logging calls."""
    t0 = time.perf_counter()
    for i in range(start, start + n):
        if log is None:
            state, m = step(state, batch)
            float(m["loss"])
            continue
        with prof.step(i + 1):
            with log.timed("data"):
                pass
            with log.timed("step"):
                state, m = step(state, batch)
                loss = float(m["loss"])
        log.step(i + 1, loss=loss, grad_norm=float(m["grad_norm"]), lr=1e-3)
    return state, (time.perf_counter() - t0) / n


def _direct_logging_cost(c: TrainConfig, run_dir, log_every: int, n: int = 3000) -> float:
    """Seconds per step of the loop's logging calls alone (real values, default interval)."""
    log = _logger(run_dir, c, log_every)
    prof = ProfileWindow(run_dir, None)
    rng = np.random.default_rng(0)
    losses = rng.uniform(2, 4, n).tolist()
    t0 = time.perf_counter()
    for i in range(n):
        with prof.step(i + 1):
            with log.timed("data"):
                pass
            with log.timed("step"):
                pass
        log.step(i + 1, loss=losses[i], grad_norm=0.5, lr=1e-3)
    dt = (time.perf_counter() - t0) / n
    log.close()
    return dt


def bench(preset: str, seq_len: int, batch: int, steps: int, blocks: int, log_every: int):
    c = TrainConfig(model=ModelConfig.preset(preset, vocab=4096, seq_len=seq_len),
                    tokens=batch * seq_len * 10**6, batch=batch)
    mesh = make_mesh(c.mesh)
    graphdef, state, sh = init_state(c, mesh)
    step = make_train_step(graphdef, sh, mesh, 1)
    rng = np.random.default_rng(0)
    b = {k: jnp.asarray(rng.integers(0, c.model.vocab, (batch, seq_len)), dtype=jnp.int32)
         for k in ("inputs", "targets", "positions")}
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as null, \
            contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        log = _logger(tmp + "/ab", c, log_every)
        prof = ProfileWindow(tmp, None)
        state, _ = _steps(step, state, b, 3, None, prof, 0)  # compile
        with_log, without, k = [], [], 0
        for _ in range(blocks):
            state, t = _steps(step, state, b, steps, log, prof, k)
            with_log.append(t)
            k += steps
            state, t = _steps(step, state, b, steps, None, prof, k)
            without.append(t)
        log.close()
        direct = _direct_logging_cost(c, tmp + "/direct", log_every)
    step_s = statistics.median(without)
    return {"step_ms": 1e3 * step_s, "log_us": 1e6 * direct, "direct": direct / step_s,
            "ab": statistics.median(with_log) / step_s - 1}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", nargs="+", default=["micro", "tiny"])
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20, help="steps per A/B block")
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--log-every", type=int, default=10)
    a = ap.parse_args()
    print(f"{jax.devices()[0].device_kind}, batch {a.batch} x {a.seq_len}, "
          f"log_every={a.log_every}")
    print(f"{'preset':>8} {'step ms':>9} {'logging us/step':>16} {'direct ratio':>13} "
          f"{'A/B ratio':>10}")
    for p in a.presets:
        r = bench(p, a.seq_len, a.batch, a.steps, a.blocks, a.log_every)
        print(f"{p:>8} {r['step_ms']:9.2f} {r['log_us']:16.1f} {100 * r['direct']:12.2f}% "
              f"{100 * r['ab']:+9.1f}%", flush=True)
    print("goal: direct ratio <= 2% at the default interval (A/B: noisy on a shared machine)")


if __name__ == "__main__":
    main()
