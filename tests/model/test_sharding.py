"""Sharding on 8 fake CPU devices: the rules table, meshes, tensor-parallel numerics, the
compiled step's partitioning (same SPMD partitioner as TPU/GPU), process-0-only writes."""

import dataclasses
import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from datalaws.data.loader import markov_stream
from datalaws.hardware import peak_for_device, peak_of
from datalaws.model.evaluation import Validator
from datalaws.model.preflight import preflight
from datalaws.model.sharding import (
    RULES,
    batch_spec,
    fit_spec,
    logical_spec,
    make_mesh,
    named_shardings,
    parse_mesh,
)
from datalaws.model.train import TrainConfig, init_state, make_train_step
from datalaws.model.transformer import ModelConfig, Transformer, attention_impl

STREAM = markov_stream(200_000, 64, seed=1)
MODEL = ModelConfig(vocab=64, d_model=32, n_layers=2, n_heads=4, d_ff=64, seq_len=32,
                    dtype="float32")


def test_rules_cover_every_parameter_and_split_whole_heads():
    names = dict(RULES)
    c = ModelConfig.preset("350m", vocab=32768)
    mesh = make_mesh("data=1,fsdp=4,tensor=2")
    with jax.set_mesh(mesh), nnx.use_eager_sharding(False):
        abstract = nnx.state(nnx.eval_shape(lambda: Transformer(c, rngs=nnx.Rngs(0))))
    for path, v in nnx.to_flat_state(abstract):
        logical = v.get_metadata()["out_sharding"]
        assert len(logical) == v.shape.__len__() and set(logical) <= set(names), path
    sh = named_shardings(abstract, mesh)
    block = sh["blocks"]  # stacked: a leading (scanned, unsplit) layer axis
    # per-head fused layouts: the tensor axis lands on heads / MLP width, never on the
    # q/k/v (gate/up) index, so a shard holds q, k and v of whole heads
    assert block["qkv"]["kernel"].get_value().spec == P(None, "fsdp", None, "tensor", None)
    assert block["out"]["kernel"].get_value().spec == P(None, "tensor", None, "fsdp")
    assert block["gate_up"]["kernel"].get_value().spec == P(None, "fsdp", None, "tensor")
    assert block["down"]["kernel"].get_value().spec == P(None, "tensor", "fsdp")
    assert sh["embed"]["embedding"].get_value().spec == P("tensor", "fsdp")
    assert logical_spec(("batch", "sequence")) == P(("data", "fsdp"), None)


def test_mesh_defaults_to_every_device_and_parses_the_cli_form():
    assert dict(make_mesh(None).shape) == {"data": 1, "fsdp": 8, "tensor": 1}
    assert parse_mesh("data=2,fsdp=-1,tensor=2") == (2, -1, 2)
    assert parse_mesh({"tensor": 2}) == (1, 1, 2) and parse_mesh([1, -1, 1]) == (1, -1, 1)
    assert dict(make_mesh("tensor=2,fsdp=-1").shape) == {"data": 1, "fsdp": 4, "tensor": 2}
    for bad, msg in (("fsdp=x", "not an integer"), ("pipe=2", "name=size"),
                     ("data=-1,fsdp=-1", "one of them -1")):
        with pytest.raises(ValueError, match=msg):
            parse_mesh(bad)
    with pytest.raises(ValueError, match="batch=6 does not split over data x fsdp = 4"):
        batch_spec(make_mesh("fsdp=4"), 6)
    # a small dimension keeps what divides it and is replicated over the rest
    assert fit_spec((6, 8), P(("data", "fsdp"), "tensor"), {"data": 2, "fsdp": 4,
                                                             "tensor": 8}) == P("data", "tensor")


def _three_steps(mesh_shape):
    c = TrainConfig(model=MODEL, tokens=10**6, batch=16, mesh=mesh_shape, lr=1e-2)
    mesh = make_mesh(c.mesh)
    graphdef, state, sh = init_state(c, mesh)
    step = make_train_step(graphdef, sh, mesh, 1)
    idx = np.random.default_rng(0).integers(0, len(STREAM) - 33, 16)
    win = np.stack([STREAM[i:i + 33] for i in idx])
    batch = {"inputs": jnp.asarray(win[:, :-1]), "targets": jnp.asarray(win[:, 1:])}
    out = []
    for _ in range(3):
        state, m = step(state, batch)
        out.append(float(m["loss"]))
    return np.array(out)


def test_tensor_parallel_equals_unsharded():
    ref = _three_steps((1, 1, 1))
    np.testing.assert_allclose(_three_steps((1, 2, 4)), ref, rtol=2e-5)


def test_compiled_step_splits_batch_and_needs_no_all_to_all_with_tensor_parallelism():
    r = preflight("cpu", "micro", vocab=256, seq_len=64, batch=16, dtype="float32",
                  mesh="data=1,fsdp=4,tensor=2", remat="dots")
    p = r["partitioning"]
    assert p["params"]["shards"] > 7 and p["optimizer"]["shards"] > 7  # norms replicate
    assert p["batch"]["shards"] == 4
    assert r["score_batches"] == [16 // 4]  # attention scores hold this device's sequences
    assert r["collectives"]["all-to-all"]["count"] == 0
    assert r["collectives"]["collective-permute"]["count"] == 0
    assert 0.95 < r["flops_ratio"] < 1.3  # "dots" remat recomputes attention only


def test_grad_accumulation_flops_count_every_microbatch():
    r = preflight("cpu", "micro", vocab=256, seq_len=64, batch=32, dtype="float32",
                  mesh="data=2,fsdp=4,tensor=1", remat="none", grad_accum=2)
    assert r["score_batches"] == [32 // 2 // 8] and 0.95 < r["flops_ratio"] < 1.1


def test_validation_splits_its_batch_like_training():
    """Validation windows are global arrays split over data x fsdp: each device scores its
    own rows (attention scores of batch 16 / 8 devices), and the losses equal one device's."""
    from datalaws.model.hlo_stats import hlo_stats

    c = TrainConfig(model=MODEL, tokens=32 * 16, batch=16)
    valid = {"web": markov_stream(20_000, 64, seed=2)}
    v = Validator(valid, seq_len=32, eod=0, eval_windows=20, curve_windows=4, batch=16)
    graphdef, state, _ = init_state(c, make_mesh("data=2,fsdp=4,tensor=1"))
    w = v.final["web"]
    mesh = state_mesh = jax.tree.leaves(state)[0].sharding.mesh
    rows, weight = v._place(state_mesh, {k: x[:16] for k, x in w.items()}, np.ones(16, "f4"))
    text = v._scorer(graphdef, mesh).lower(state, rows, weight).compile().as_text()
    assert hlo_stats(text, 32)["score_batches"] == [16 // 8]
    sharded = v.losses(graphdef, state)
    g1, s1, _ = init_state(c, make_mesh((1, 1, 1)))
    one = Validator(valid, seq_len=32, eod=0, eval_windows=20, curve_windows=4, batch=16)
    assert sharded["web"] == pytest.approx(one.losses(g1, s1)["web"], rel=1e-5)


WORKER = """
import json, os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
from datalaws.data.loader import markov_stream
from datalaws.model.evaluation import Validator
from datalaws.model.sharding import make_mesh
from datalaws.model.train import TrainConfig, init_state, train
from datalaws.model.transformer import ModelConfig
m = ModelConfig(vocab=64, d_model=32, n_layers=2, n_heads=4, d_ff=64, seq_len=32,
                dtype="float32")
c = TrainConfig(model=m, tokens=32 * 8 * 4, batch=8, save_every=100, run_id="r",
                eval_every=2, eval_windows=12, curve_windows=4)
valid = {"web": markov_stream(20_000, 64, seed=2)}
code = train(c, {"train": markov_stream(200_000, 64, seed=1)}, sys.argv[3], eod=0,
             valid=valid, progress=False)
# the same scoring of an initial state, on the two hosts' mesh (compared in the test)
graphdef, state, _ = init_state(c, make_mesh(None))
v = Validator(valid, seq_len=32, eod=0, eval_windows=12, curve_windows=4, batch=8)
print(json.dumps(v.losses(graphdef, state)), flush=True)
sys.exit(code)
"""


def test_two_processes_train_one_run_and_only_process_zero_writes(tmp_path):
    """A real two-host run (two processes x 2 CPU devices, gloo collectives): both train the
    same steps on one mesh and Orbax checkpoints across them; the appended files show
    a single writer (one line per step, one TensorBoard file) and one record."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, f"localhost:{port}", str(i),
                               str(tmp_path)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    # validation across hosts: global arrays built on each process, curve and final losses
    # recorded; both hosts read the same losses as one device computes
    c = TrainConfig(model=MODEL, tokens=32 * 8 * 4, batch=8, eval_windows=12, curve_windows=4)
    graphdef, state, _ = init_state(c, make_mesh((1, 1, 1)))
    valid = {"web": markov_stream(20_000, 64, seed=2)}
    one = Validator(valid, seq_len=32, eod=0, eval_windows=12, curve_windows=4,
                    batch=8).losses(graphdef, state)
    for out, _ in outs:
        assert json.loads(out.splitlines()[-1])["web"] == pytest.approx(one["web"], rel=1e-5)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(x)["step"] for x in lines]
    assert steps == [1, 2, 3, 4]
    assert len(list(tmp_path.glob("*tfevents*"))) == 1
    rec = json.loads((tmp_path / "r.record.json").read_text())
    assert rec["status"] == "done" and rec["steps"] == 4
    assert 0 < rec["eval_losses"]["web"] < np.log(64) + 1 and rec["loss"] == pytest.approx(
        rec["eval_losses"]["web"])
    assert [json.loads(x)["eval_loss"] is not None for x in lines if "eval_loss" in x] == \
        [True, True]  # curve points at steps 2 and 4
    assert "mesh data=1,fsdp=4,tensor=1" in rec["hardware"]  # all 4 devices of both hosts
    assert (tmp_path / "checkpoints" / "4" / "commit_success.txt").exists()


def test_attention_by_dtype_and_platform():
    assert attention_impl("auto", "bfloat16", "gpu") == "cudnn"
    assert attention_impl("auto", "float32", "gpu") == "xla"  # cuDNN rejects float32
    assert attention_impl("auto", "bfloat16", "tpu") == "xla"
    with pytest.raises(ValueError, match="needs bfloat16/float16"):
        attention_impl("cudnn", "float32", "gpu")
    with pytest.raises(ValueError, match="dtype bfloat16 or float16"):
        dataclasses.replace(MODEL, attention="cudnn")


def test_peaks_of_current_chips_and_unknown_ones_are_errors():
    assert peak_of("TPU v5") == 459e12 and peak_of("TPU v5 lite") == 197e12  # v5p, v5e
    assert peak_of("NVIDIA H100 80GB HBM3") == 989e12 and peak_of("NVIDIA L40S") == 362e12
    assert peak_of("NVIDIA B200") == 2250e12 and peak_of("NVIDIA A10G") == 70e12
    assert peak_for_device("cpu", "cpu") == 1e12
    with pytest.raises(ValueError, match="unknown tpu device kind 'TPU v9'"):
        peak_for_device("TPU v9", "tpu")
