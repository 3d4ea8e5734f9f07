"""The train step compiled, without the hardware, for a TPU v5e slice and an 8xH100 host
(XLA's deviceless compiler, ../shared/AOT.md): the 350M preset with tensor parallelism 2 is
partitioned, splits the batch in compute, does ~no redundant FLOPs and needs no all-to-all
or collective-permute; `sweep plan --topology` refuses a sweep whose step does not fit.

The compilers live in .venv-tpu / .venv-gpu (`make aot`, run by `make test`)."""

import importlib.util
import textwrap
from pathlib import Path

import pytest

from datalaws.model.preflight import (
    COST_MODEL_FLAGS,
    REPO,
    fits,
    format_report,
    run_preflight,
)

T = 2048


def _compiler(platform: str) -> None:
    module = "libtpu" if platform == "tpu" else "jax_cuda12_plugin"
    if not (REPO / f".venv-{platform}" / "bin" / "python").exists() and \
            importlib.util.find_spec(module) is None:
        pytest.skip(f"no {platform.upper()} compiler: `make aot` creates .venv-{platform}")


def _check_350m(r: dict, batch: int, split: int) -> None:
    p = r["partitioning"]
    assert p["params"]["shards"] > 0.9 * r["devices"]  # all but the norm scales split
    assert p["optimizer"]["shards"] > 0.9 * r["devices"]
    assert p["batch"]["shards"] == split
    assert r["score_batches"] == [batch // split], format_report(r)
    assert r["flops_ratio"] <= 1.3, format_report(r)
    coll = r["collectives"]
    assert coll["all-to-all"]["count"] == 0 and coll["collective-permute"]["count"] == 0, \
        format_report(r)
    assert fits(r), format_report(r)


@pytest.fixture(scope="module")
def v5e_sweep(tmp_path_factory):
    """A sweep of two shapes on v5e:2x2: one that fits, one that cannot (512 sequences of
    2048 tokens on 4 chips of 16 GiB)."""
    _compiler("tpu")
    from datalaws.launch.sweep import expand, load_spec, preflight_runs

    spec = tmp_path_factory.mktemp("sweep") / "s.toml"
    spec.write_text(textwrap.dedent(f"""
        [defaults]
        data = "store"
        seq_len = {T}
        mesh = "data=1,fsdp=2,tensor=2"
        remat = "dots"
        [grid]
        preset = ["350m"]
        tokens = [1e9]
        mixture = ["web=1"]
        batch = [8, 512]
    """))
    return spec, preflight_runs(expand(load_spec(spec)), "v5e:2x2")


def test_350m_on_v5e_2x2_with_tensor_parallelism(v5e_sweep):
    _, results = v5e_sweep
    r = next(r for r in results if r["batch"] == 8)
    assert r["devices"] == 4 and r["mesh"] == {"data": 1, "fsdp": 2, "tensor": 2}
    assert r["device_kind"] == "TPU v5 lite" and r["attention"] == "xla"
    assert r["libtpu_flags"] == COST_MODEL_FLAGS  # whole matmuls for the cost model
    _check_350m(r, batch=8, split=2)


def test_sweep_plan_refuses_a_sweep_that_does_not_fit(v5e_sweep, capsys):
    from datalaws.cli import main

    spec, results = v5e_sweep
    big = next(r for r in results if r["batch"] == 512)
    assert not fits(big) and big["memory"]["peak"] > 16 * 2**30
    # the CLI reuses this process's compiles (same shapes), prints both tables and refuses
    code = main(["sweep", "plan", str(spec), "--topology", "v5e:2x2"])
    out = capsys.readouterr()
    assert code == 1 and "refused: 350m batch 512x2048" in out.err
    assert "DOES NOT FIT" in out.out and ": fits" in out.out


def test_350m_on_8xh100_with_tensor_parallelism():
    _compiler("gpu")
    r = run_preflight("h100x8", "350m", batch=16, seq_len=T, mesh="data=1,fsdp=4,tensor=2",
                      remat="dots")
    assert r["devices"] == 8 and r["device_kind"] == "NVIDIA H100 80GB HBM3"
    assert r["attention"] == "cudnn"  # bf16 on GPU: cuDNN's fused attention lowers
    _check_350m(r, batch=16, split=4)


_RING = """
import jax, jax.numpy as jnp, numpy as np
from jax.experimental import topologies
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from datalaws.model.hlo_stats import hlo_stats
devices = topologies.get_topology_desc(platform="tpu", topology_name="v5p:2x2x4").devices
mesh = Mesh(np.array(devices), ("fsdp",))
B, T, D, F = 16 * len(devices), 2048, 2048, 2048
x = jax.ShapeDtypeStruct((B, T, D), jnp.bfloat16, sharding=NamedSharding(mesh, P("fsdp")))
w = jax.ShapeDtypeStruct((D, F), jnp.bfloat16, sharding=NamedSharding(mesh, P("fsdp")))
text = jax.jit(lambda x, w: x @ w).lower(x, w).compile().as_text()
print(text.count("windowed_dot_general_body"), hlo_stats(text, T)["flops"] * len(devices),
      2 * B * T * D * F)
"""


def test_collective_matmul_loops_counted_once_per_ring_step():
    """v5p:2x2x4 turns an FSDP weight gather into a bidirectional collective-matmul loop
    that does two ring steps per iteration (counter += 2): the HLO count must equal the
    matmul's 2*B*T*D*F over all chips, not twice it (preflight's 1.88 on 1.5B v5p)."""
    import os
    import subprocess

    from datalaws.model.preflight import _python_for

    _compiler("tpu")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {
        "JAX_PLATFORMS": "cpu", "TPU_WORKER_HOSTNAMES": "localhost",
        "TF_CPP_MIN_LOG_LEVEL": "3", "ALLOW_MULTIPLE_LIBTPU_LOAD": "1", "PYTHONPATH": ""}
    p = subprocess.run([_python_for("tpu"), "-c", _RING], capture_output=True, text=True,
                       env=env, cwd=REPO)
    assert p.returncode == 0, p.stderr[-2000:]
    loops, counted, exact = (float(x) for x in p.stdout.split()[-3:])
    assert loops >= 1  # the compiler did write the matmul as a ring loop
    assert counted == exact


def test_unknown_topology_is_one_clear_error():
    _compiler("tpu")
    with pytest.raises(RuntimeError, match="preflight v9z:2x2 350m failed"):
        run_preflight("v9z:2x2", "350m")


def test_target_config_ships_with_the_package():
    assert (Path(__file__).parents[2] / "model" / "targets" / "h100_sxm.txtpb").exists()
