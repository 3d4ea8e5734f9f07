"""Resume safety: finished runs refuse, config changes refuse with the difference, wall_time
spans invocations, torn metrics lines and SIGKILLs at random points leave the loss curve of
an uninterrupted run, Ctrl-C saves and exits with one line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from datalaws import load_record
from datalaws.data.loader import markov_stream
from datalaws.model.resume import RunFinishedError, config_diff
from datalaws.model.train import (
    EXIT_REQUEUE,
    CheckpointError,
    TrainConfig,
    _checkpoint_manager,
    _saved_meta,
    train,
)
from datalaws.model.transformer import ModelConfig

STREAM = markov_stream(200_000, 64, seed=0)
TINY = ModelConfig.preset("tiny", vocab=64, seq_len=64)


def _cfg(**kw):
    # one device, as in the 1-device worker processes below: same numerics bit for bit
    base = dict(model=TINY, tokens=64 * 8 * 24, batch=8, save_every=6, lr=1e-2, run_id="r",
                mesh=(1, 1, 1))
    return TrainConfig(**(base | kw))


def _losses(run_dir):
    return [json.loads(x)["loss"] for x in (run_dir / "metrics.jsonl").read_text().split("\n")
            if x]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    ref = tmp_path_factory.mktemp("ref")
    assert train(_cfg(), {"train": STREAM}, ref, eod=0, progress=False) == 0
    return ref


def test_finished_run_refuses_and_keeps_its_record(reference):
    rec = reference / "r.record.json"
    before = rec.read_bytes()
    with pytest.raises(RunFinishedError, match="r.record.json"):
        train(_cfg(lr=5e-2, seed=3), {"train": STREAM}, reference, eod=0, progress=False)
    assert rec.read_bytes() == before


def test_resume_refuses_another_config_drops_a_torn_line_and_sums_wall_time(reference,
                                                                             tmp_path):
    assert train(_cfg(), {"train": STREAM}, tmp_path, eod=0, progress=False,
                 stop_after=9) == EXIT_REQUEUE
    first = _saved_meta(_checkpoint_manager(tmp_path, 2))["wall_time"]
    assert first > 0
    with pytest.raises(CheckpointError, match=r"lr: 0.01 -> 0.02"):  # before compiling
        train(_cfg(lr=2e-2), {"train": STREAM}, tmp_path, eod=0, progress=False)
    with open(tmp_path / "metrics.jsonl", "a") as f:  # as if killed in the middle of a write
        f.write('{"step": 10, "loss": 3.1')
    # settings that do not change the trajectory may change on resume
    assert train(_cfg(save_every=4), {"train": STREAM}, tmp_path, eod=0, progress=False) == 0
    np.testing.assert_array_equal(_losses(tmp_path), _losses(reference))
    assert load_record(tmp_path / "r.record.json").wall_time > first


def test_config_diff_ignores_tuple_vs_list_and_free_settings():
    a = {"mesh": (1, 1, 1), "lr": 0.1, "keep": 2, "model": {"d_model": 64}}
    assert config_diff(a, a | {"mesh": [1, 1, 1], "keep": 5}) == []
    assert config_diff(a, a | {"model": {"d_model": 32}}) == ["model.d_model: 64 -> 32"]
    assert config_diff(a, a | {"added_later": 1}) == []  # a field of a newer version
    assert config_diff(a | {"mixture": {"web": 1.0}}, a | {"mixture": {"code": 1.0}}) == [
        "mixture.code: (unset) -> 1.0", "mixture.web: 1.0 -> (unset)"]


WORKER = """
import sys
from datalaws.data.loader import markov_stream
from datalaws.model.train import TrainConfig, train
from datalaws.model.transformer import ModelConfig
c = TrainConfig(model=ModelConfig.preset("tiny", vocab=64, seq_len=64), tokens=64*8*STEPS,
                batch=8, save_every=SAVE, lr=1e-2, run_id="r", mesh=(1, 1, 1))
sys.exit(train(c, {"train": markov_stream(200_000, 64, seed=0)}, sys.argv[1], eod=0,
               progress=False))
"""


def worker(run: Path, steps: int, save_every: int, cache: Path) -> subprocess.Popen:
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               XLA_FLAGS="--xla_force_host_platform_device_count=1")
    code = WORKER.replace("STEPS", str(steps)).replace("SAVE", str(save_every))
    return subprocess.Popen([sys.executable, "-c", code, str(run)], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=env)


def _wait_for_step(run: Path, proc: subprocess.Popen, step: int, timeout: float = 300) -> None:
    t0 = time.time()
    m = run / "metrics.jsonl"
    while time.time() - t0 < timeout:
        if m.exists() and m.read_text().count("\n") >= step:
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached")


def test_sigint_saves_and_exits_with_one_line(tmp_path):
    run = tmp_path / "run"
    p = worker(run, steps=400, save_every=1000, cache=tmp_path / "cache")
    _wait_for_step(run, p, 3)
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=120) == 130
    err = p.stderr.read()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "interrupted by SIGINT" in err.strip().splitlines()[-1]
    step = json.loads((run / "preempted.json").read_text())["step"]
    assert (run / "checkpoints" / str(step)).exists() and step < 400


def test_sigkill_at_random_points_then_resume_matches(reference, tmp_path):
    """A kill at a random moment (mid-step, mid-write of metrics or of a checkpoint: the run
    saves every 2 steps); 20 kills in a row are bench/kill_resume.py."""
    run, rng = tmp_path / "killed", np.random.default_rng()
    for _ in range(1):
        p = worker(run, steps=24, save_every=2, cache=tmp_path / "cache")
        done = len(_losses(run)) if (run / "metrics.jsonl").exists() else 0
        _wait_for_step(run, p, min(done + 1, 23))
        time.sleep(rng.uniform(0.0, 0.5))
        p.kill()
        p.wait()
    c = _cfg(save_every=2)
    assert train(c, {"train": STREAM}, run, eod=0, progress=False) == 0
    np.testing.assert_array_equal(_losses(run), _losses(reference))


def test_sweep_interrupt_stops_its_runs_with_checkpoints(tmp_path):
    from datalaws.data.store import embedded_corpus, prepare_domain, train_tokenizer
    from datalaws.launch.sweep import expand, load_spec, run_state

    store = tmp_path / "store"
    docs = embedded_corpus(max_docs=3)["code"]
    train_tokenizer(docs, 300, store / "tokenizer.json")
    prepare_domain(store, "code", docs, progress=False)
    spec = tmp_path / "s.toml"
    spec.write_text(f'[defaults]\ndata = "{store}"\nmixture = "code=1"\nseq_len = 64\n'
                    'batch = 8\nsave_every = 2\n[grid]\npreset = ["tiny"]\ntokens = [1e6]\n')
    (run,) = expand(load_spec(spec))
    p = subprocess.Popen([sys.executable, "-m", "datalaws.cli", "sweep", "run", str(spec),
                          "--parallel", "1"], stderr=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, text=True)
    t0 = time.time()
    while not ((run.out / "checkpoints").exists()
               and any(x.name.isdigit() for x in (run.out / "checkpoints").iterdir())):
        assert p.poll() is None and time.time() - t0 < 600, p.stderr.read()
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=300) == 130
    last = p.stderr.read().strip().splitlines()[-1]
    assert last.startswith("interrupted (SIGTERM): datalaws sweep run"), last
    assert (run.out / "preempted.json").exists() and not (run.out / "failed.json").exists()
    assert run_state(run)["state"] == "partial"  # a relaunch resumes it
