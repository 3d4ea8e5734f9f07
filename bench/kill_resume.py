"""SIGKILL a training run at 20 random moments, resume each time, compare the loss curve.

A tiny model trains for STEPS steps, saving every 2 steps (asynchronous Orbax checkpoints),
so random kills land mid-step, mid-write of metrics.jsonl and mid-write of a checkpoint.
After each kill the same command is started again and resumes from the latest complete
checkpoint. When the run finishes, its metrics.jsonl loss curve must equal, bit for bit, the
curve of an uninterrupted run of the same config timed in the same session.

Prints one row per kill (the step reached, whether the last metrics line was torn, whether a
checkpoint was being written), then the comparison and the time ratio interrupted /
uninterrupted (timings are inflated by whatever else runs on the machine; the ratio is the
figure to read). Exit code 1 if the curves differ.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STEPS, SAVE, KILLS = 160, 2, 20
WORKER = f"""
import sys
from datalaws.data.loader import markov_stream
from datalaws.model.train import TrainConfig, train
from datalaws.model.transformer import ModelConfig
c = TrainConfig(model=ModelConfig.preset("tiny", vocab=64, seq_len=64), tokens=64*8*{STEPS},
                batch=8, save_every={SAVE}, lr=1e-2, run_id="r", mesh=(1, 1, 1))
sys.exit(train(c, {{"train": markov_stream(200_000, 64, seed=0)}}, sys.argv[1], eod=0,
               progress=False))
"""


def start(run: Path, cache: Path) -> subprocess.Popen:
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PLATFORMS="cpu",
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               XLA_FLAGS="--xla_force_host_platform_device_count=1")
    return subprocess.Popen([sys.executable, "-c", WORKER, str(run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def lines(run: Path) -> str:
    m = run / "metrics.jsonl"
    return m.read_text() if m.exists() else ""


def losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in lines(run).splitlines() if x.strip()]


def wait_progress(run: Path, p: subprocess.Popen, have: int, timeout: float = 600) -> bool:
    """Until metrics.jsonl has more lines than ``have``; False if the run finished first."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if lines(run).count("\n") > have:
            return True
        if p.poll() is not None:
            if p.returncode != 0:
                sys.exit(f"worker failed ({p.returncode}): {p.stderr.read()[-2000:]}")
            return False
        time.sleep(0.02)
    sys.exit("no progress")


def main() -> int:
    rng = np.random.default_rng(int(sys.argv[1]) if len(sys.argv) > 1 else None)
    tmp = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    cache, run, ref = tmp / "cache", tmp / "killed", tmp / "ref"
    t0 = time.perf_counter()
    p = start(ref, cache)
    assert p.wait() == 0, p.stderr.read()
    t_ref = time.perf_counter() - t0
    print(f"{'kill':>4} {'step':>5} {'torn line':>9} {'ckpt writing':>12}")
    t0, kills = time.perf_counter(), 0
    while kills < KILLS:
        p = start(run, cache)
        if not wait_progress(run, p, lines(run).count("\n")):
            break  # finished before this kill could land
        time.sleep(rng.uniform(0.0, 1.0))
        p.kill()
        p.wait()
        kills += 1
        text = lines(run)
        ck = run / "checkpoints"
        writing = ck.exists() and any("tmp" in x.name for x in ck.iterdir())
        torn = bool(text) and not text.endswith("\n")
        print(f"{kills:4d} {text.count(chr(10)):5d} {str(torn):>9} {str(writing):>12}",
              flush=True)
    p = start(run, cache)
    assert p.wait() == 0, p.stderr.read()
    t_kill = time.perf_counter() - t0
    a, b = np.array(losses(run)), np.array(losses(ref))
    same = a.shape == b.shape and np.array_equal(a, b)
    print(f"\n{kills} SIGKILLs; loss curve of {len(a)} steps identical to the uninterrupted "
          f"run: {same}" + ("" if same or a.shape != b.shape
                            else f" (max |diff| {np.abs(a - b).max():.3g})"))
    print(f"time: uninterrupted {t_ref:.0f} s, with {kills} kills and restarts {t_kill:.0f} s "
          f"(ratio {t_kill / t_ref:.1f}x: each restart re-imports JAX and restores)")
    return 0 if same and kills == KILLS else 1


if __name__ == "__main__":
    sys.exit(main())
