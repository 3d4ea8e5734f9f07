"""Training: loss goes down, sharded == unsharded, exact resume, SIGTERM, divergence, counts."""

import dataclasses
import json
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from datalaws import load_record
from datalaws.data.loader import markov_stream
from datalaws.model.train import (
    EXIT_REQUEUE,
    CheckpointError,
    TrainConfig,
    init_state,
    make_mesh,
    make_train_step,
    train,
)
from datalaws.model.transformer import PRESETS, ModelConfig, Transformer, count_params

STREAM = markov_stream(300_000, 64, seed=0)
TINY = ModelConfig.preset("tiny", vocab=64, seq_len=64)


def _cfg(**kw):
    base = dict(model=TINY, tokens=64 * 8 * 40, batch=8, save_every=10, lr=1e-2, run_id="r")
    return TrainConfig(**(base | kw))


def _losses(run_dir):
    return [json.loads(x)["loss"] for x in (run_dir / "metrics.jsonl").read_text().split("\n")
            if x]


def test_loss_goes_down_and_record_written(tmp_path):
    assert train(_cfg(), {"train": STREAM}, tmp_path, eod=0, valid={"train": STREAM[-30000:]},
                 progress=False) == 0
    losses = _losses(tmp_path)
    assert len(losses) == 40 and np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    rec = load_record(tmp_path / "r.record.json")
    assert rec.status == "done" and rec.steps == 40 and rec.loss < losses[0]
    assert rec.params == count_params(TINY)[0] and rec.flops > 0


@pytest.mark.parametrize("name", PRESETS)
def test_param_counts_match_formula(name):
    for tied in (False, True):
        c = ModelConfig.preset(name, vocab=1000, tied=tied)
        with jax.set_mesh(make_mesh((1, 1, 1))):
            model = nnx.eval_shape(lambda c=c: Transformer(c, rngs=nnx.Rngs(0)))
        n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
        assert n == count_params(c)[0]
    if name not in ("tiny", "micro", "mini"):
        total = count_params(ModelConfig.preset(name, vocab=50304))[0]
        assert 15e6 < total < 2e9


def _one_step_loss(mesh_shape, grad_accum=1, batch_size=16):
    c = _cfg(mesh=mesh_shape, grad_accum=grad_accum, batch=batch_size,
             model=dataclasses.replace(TINY, dtype="float32"))
    mesh = make_mesh(c.mesh)
    graphdef, state, sh = init_state(c, mesh)
    step = make_train_step(graphdef, sh, mesh, c.grad_accum)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(STREAM) - 65, batch_size)
    win = np.stack([STREAM[i:i + 65] for i in idx])
    batch = {"inputs": jnp.asarray(win[:, :-1]), "targets": jnp.asarray(win[:, 1:]),
             "positions": jnp.zeros((batch_size, 64), jnp.int32)}
    out = []
    for _ in range(3):
        state, m = step(state, batch)
        out.append(float(m["loss"]))
    return np.array(out)


def test_sharded_equals_unsharded():
    assert jax.device_count() == 8
    ref = _one_step_loss((1, 1, 1))
    sharded = _one_step_loss((2, 2, 2))
    np.testing.assert_allclose(sharded, ref, rtol=2e-5)


def test_grad_accumulation_matches_large_batch():
    np.testing.assert_allclose(_one_step_loss((1, 1, 1), grad_accum=4), _one_step_loss((1, 1, 1)),
                               rtol=2e-5)


def test_resume_continues_the_same_loss_sequence(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert train(_cfg(), {"train": STREAM}, full, eod=0, progress=False) == 0
    assert train(_cfg(), {"train": STREAM}, part, eod=0, progress=False,
                 stop_after=17) == EXIT_REQUEUE
    assert train(_cfg(), {"train": STREAM}, part, eod=0, progress=False) == 0
    np.testing.assert_array_equal(_losses(part), _losses(full))


WORKER = """
import sys
from datalaws.data.loader import markov_stream
from datalaws.model.train import TrainConfig, train
from datalaws.model.transformer import ModelConfig
c = TrainConfig(model=ModelConfig.preset("tiny", vocab=64, seq_len=64), tokens=64*8*200,
                batch=8, save_every=5, lr=1e-2, run_id="r")
sys.exit(train(c, {"train": markov_stream(300_000, 64, seed=0)}, sys.argv[1], eod=0))
"""


def _wait_for_checkpoint(run_dir, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        ck = run_dir / "checkpoints"
        if ck.exists() and any(p.name.isdigit() for p in ck.iterdir()):
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared")


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    run = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-c", WORKER, str(run)], stderr=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, text=True)
    _wait_for_checkpoint(run, p)
    time.sleep(np.random.default_rng().uniform(0.5, 3.0))
    p.kill()
    p.wait()
    c = TrainConfig(model=TINY, tokens=64 * 8 * 200, batch=8, save_every=5, lr=1e-2, run_id="r")
    steps_before = len(_losses(run))
    assert steps_before < 200
    assert train(c, {"train": STREAM}, run, eod=0, progress=False) == 0
    ref = tmp_path / "ref"
    assert train(c, {"train": STREAM}, ref, eod=0, progress=False) == 0
    np.testing.assert_array_equal(_losses(run), _losses(ref))


def test_sigterm_saves_and_exits_for_requeue(tmp_path):
    run = tmp_path / "term"
    p = subprocess.Popen([sys.executable, "-c", WORKER, str(run)], stderr=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, text=True)
    _wait_for_checkpoint(run, p)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=120) == EXIT_REQUEUE
    step = json.loads((run / "preempted.json").read_text())["step"]
    assert (run / "checkpoints" / str(step)).exists()
    assert not (run / "r.record.json").exists()


def test_divergence_writes_diverged_record(tmp_path):
    c = _cfg(lr=1e6, clip=1e9)
    train(c, {"train": STREAM}, tmp_path, eod=0, progress=False)
    rec = load_record(tmp_path / "r.record.json")
    assert rec.status == "diverged" and "non-finite" in rec.error


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    assert train(_cfg(), {"train": STREAM}, tmp_path, eod=0, progress=False,
                 stop_after=10) == EXIT_REQUEUE
    for f in (tmp_path / "checkpoints" / "10" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        train(_cfg(), {"train": STREAM}, tmp_path, eod=0, progress=False)


def test_checkpoint_of_another_model_is_rejected(tmp_path):
    train(_cfg(), {"train": STREAM}, tmp_path, eod=0, progress=False, stop_after=10)
    other = _cfg(model=dataclasses.replace(TINY, n_layers=3))
    with pytest.raises(CheckpointError, match="different model"):
        train(other, {"train": STREAM}, tmp_path, eod=0, progress=False)


def test_mesh_errors():
    with pytest.raises(ValueError, match="needs 16 devices"):
        make_mesh((4, 4, 1))
    assert dict(make_mesh((2, -1, 1)).shape) == {"data": 2, "fsdp": 4, "tensor": 1}


def _two_documents(prefix_a, prefix_b, doc):
    """Two rows: a different first document, then the same second document."""
    from datalaws.data.loader import _positions

    x = np.stack([np.r_[prefix_a, 0, doc], np.r_[prefix_b, 0, doc]]).astype(np.int32)
    pos, seg = _positions(x, 0)
    return jnp.asarray(x), jnp.asarray(pos), jnp.asarray(seg)


@pytest.mark.parametrize("impl", ["xla", "cudnn"])
def test_logits_do_not_see_the_previous_document(impl):
    if impl == "cudnn" and jax.default_backend() != "gpu":
        pytest.skip("the cuDNN attention path needs a GPU (this backend is "
                    f"{jax.default_backend()!r})")
    c = ModelConfig.preset("tiny", vocab=64, seq_len=32, attention=impl,
                           dtype="float32" if impl == "xla" else "bfloat16")
    with jax.set_mesh(make_mesh((1, 1, 1))):
        model = Transformer(c, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    doc = rng.integers(1, 64, 20)
    x, pos, seg = _two_documents(rng.integers(1, 64, 11), rng.integers(1, 64, 11), doc)
    logits = np.asarray(model(x, pos, seg), np.float32)
    tol = 1e-5 if impl == "xla" else 2e-2
    # the second document's logits do not change when the first one does ...
    np.testing.assert_allclose(logits[0, 12:], logits[1, 12:], atol=tol)
    # ... and equal the logits of that document alone: positions restart at it
    alone = np.asarray(model(jnp.asarray(np.r_[doc, np.zeros(12, int)][None], jnp.int32)),
                       np.float32)
    np.testing.assert_allclose(logits[0, 12:], alone[0, :20], atol=tol)
    assert np.abs(logits[0, :12] - logits[1, :12]).max() > 1e-3  # the first ones do differ


def test_wsd_schedule_warms_holds_and_decays():
    from datalaws.model.train import _schedule, schedule_info

    c = _cfg(tokens=64 * 8 * 100, schedule="wsd", warmup_frac=0.1, decay_frac=0.2)
    s = [float(_schedule(c)(i)) for i in range(100)]
    assert s[0] == 0 and s[5] == pytest.approx(c.lr / 2)  # linear warmup over 10 steps
    assert all(v == pytest.approx(c.lr) for v in s[10:80])  # stable
    assert s[90] == pytest.approx(c.lr * (1 - 0.9 * 10 / 20))  # linear decay to min_lr
    assert schedule_info(c) == {"name": "wsd", "lr": c.lr, "warmup_steps": 10,
                                "min_lr": pytest.approx(c.lr * 0.1), "steps": 100,
                                "z_loss": 0.0, "decay_steps": 20}


def test_curves_every_eval_every_and_z_loss(tmp_path):
    valid = {"train": STREAM[-20000:], "other": markov_stream(20000, 64, seed=5)}
    assert train(_cfg(tokens=64 * 8 * 12, eval_every=4, z_loss=1e-3, eval_mix={"train": 1.0}),
                 {"train": STREAM}, tmp_path, eod=0, valid=valid, progress=False) == 0
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().split("\n") if x]
    points = [r for r in rows if "eval" in r]
    assert [r["step"] for r in points] == [4, 8, 12]
    assert all(set(r["eval"]) == {"train", "other"} for r in points)
    assert points[-1]["eval"]["train"] < points[0]["eval"]["train"]  # validation improves
    rec = load_record(tmp_path / "r.record.json")
    assert rec.loss == rec.eval_losses["train"] and rec.schedule["z_loss"] == 1e-3
