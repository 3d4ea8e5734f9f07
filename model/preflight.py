"""`datalaws preflight`: compile the real train step for a TPU slice or GPU host that is not here.

XLA's deviceless compiler (../shared/AOT.md) builds the partitioned program a topology would
run; this module reports what matters before a sweep is queued on it: per-device memory
against HBM, whether parameters, optimizer state and batch are split, FLOPs per device
against 6·N·tokens (``flops_per_token``), collectives by kind and volume, and on TPU the
cost model's step time and the MFU it implies (compiled without collective-matmul loops,
which that cost model cannot see through; ``COST_MODEL_FLAGS``).

Topologies: any ``get_topology_desc`` TPU name (``v5e:2x2``, ``v5p:2x2x4``, ``v4:2x2x2``,
``v6e:4x4``) or ``h100xN`` (N GPUs of one host, target config ``targets/h100_sxm.txtpb``),
or ``gpu:CONFIG.txtpb:1x1x8`` for another GPU target config. The compile needs the
platform's compiler plugin (libtpu, or the CUDA plugin + cuDNN), kept out of ``.venv`` in
``.venv-tpu`` / ``.venv-gpu`` (``make aot``); ``run_preflight`` runs the compile in that
environment as a subprocess (``python -m datalaws.model.preflight``) and returns its JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["run_preflight", "preflight", "format_report", "default_batch", "TARGETS",
           "PreflightError", "fits"]

TARGETS = Path(__file__).parent / "targets"
REPO = Path(__file__).resolve().parents[1]
GiB = 1024**3
# sequences per chip the presets are checked at when no --batch is given (a realistic
# global batch of 0.1-0.5M tokens at T=2048 for the slices and hosts below). v5p, 1.5B,
# remat dots, measured: 16/chip fsdp=16 61 GiB and the best cost-model MFU of the
# variants that fit (data=2,fsdp=8 a little lower; remat full 1.26x the FLOPs; no remat
# needs 148 GiB at 8/chip)
_PER_DEVICE = {"tpu v5e": 2, "tpu v4": 4, "tpu v6e": 4, "tpu v5p": 16, "h100": 4}


# XLA's TPU cost model sees a while body once. The layer scan is scaled by FLOPs to all its
# iterations (checked: a 4-layer 1.5B-width step unrolled gives the cost model's time within
# 5% of the scaled scan); but the collective-matmul loops an FSDP weight gather becomes on
# larger slices (v5p:2x2x4) hide 3/4 of their matmuls from it and distort that scaling
# (1.5B on v5p: 37.5% MFU with them, 51-54% without). Preflight compiles with plain
# all-gathers / reduce-scatters so the cost model sees whole matmuls. Memory is then that
# program's (1.5B: v5p +0.5%, v5e -4% against the default program); a LIBTPU_INIT_ARGS
# of the caller's, even empty (``LIBTPU_INIT_ARGS= datalaws preflight ...``), replaces them.
COST_MODEL_FLAGS = ("--xla_tpu_enable_windowed_einsum_for_all_gather=false "
                    "--xla_tpu_enable_windowed_einsum_for_reduce_scatter=false")


def _platform(topology: str) -> str:
    t = topology.lower()
    return "cpu" if t == "cpu" else "gpu" if t.startswith(("h100", "gpu:")) else "tpu"


def topology_devices(topology: str) -> list:
    """The abstract devices of a described topology (needs JAX_PLATFORMS=cpu + the plugin)."""
    from jax.experimental import topologies

    t = topology.lower()
    if t == "cpu":  # this process's CPU devices: the same partitioner, checked in tests
        import jax

        return jax.devices("cpu")
    if _platform(t) == "tpu":
        return list(topologies.get_topology_desc(platform="tpu", topology_name=t).devices)
    if t.startswith("h100x"):
        config, shape = TARGETS / "h100_sxm.txtpb", f"1x1x{int(t[5:])}"
    else:
        _, config, shape = topology.split(":", 2)
    return list(topologies.get_topology_desc(platform="cuda", topology=shape,
                                             target_config=Path(config).read_text()).devices)


def default_batch(kind: str, n_devices: int) -> int:
    from datalaws.hardware import canonical

    return _PER_DEVICE.get(canonical(kind) or "", 4) * n_devices


def _options(topology: str, preset: str, **options) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    a = p.parse_args(["--topology", topology, "--preset", preset])
    for k, v in options.items():
        if v is not None:
            setattr(a, k, v)
    return a


def _remat(flag):
    """--remat as ModelConfig reads it (the CLI's none/true/false are its False/True)."""
    return {"none": False, "false": False, "true": True}.get(str(flag).lower(), flag)


def _train_config(a: argparse.Namespace, devices: list):
    from datalaws.model.sharding import parse_mesh
    from datalaws.model.train import TrainConfig
    from datalaws.model.transformer import ModelConfig

    remat = _remat(a.remat)
    model = ModelConfig.preset(a.preset, vocab=a.vocab, seq_len=a.seq_len, dtype=a.dtype,
                               attention=a.attention, remat=remat)
    batch = a.batch or default_batch(devices[0].device_kind, len(devices))
    return TrainConfig(model=model, tokens=batch * a.seq_len, batch=batch,
                       grad_accum=a.grad_accum, mesh=parse_mesh(a.mesh))


def preflight(topology: str, preset: str, **options) -> dict:
    """Compile the train step for ``topology`` and measure it, in this process (which must
    have the platform's compiler and JAX_PLATFORMS=cpu; see ``run_preflight``)."""
    a = _options(topology, preset, **options)
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding

    from datalaws.hardware import hbm_of, peak_of
    from datalaws.model.sharding import batch_spec, make_mesh, mesh_platform
    from datalaws.model.train import init_state, make_train_step
    from datalaws.model.transformer import attention_impl

    devices = topology_devices(a.topology)
    c = _train_config(a, devices)
    mesh = make_mesh(c.mesh, devices=devices)
    t0 = time.perf_counter()
    graphdef, state, shardings = init_state(c, mesh, abstract_only=True)
    step = make_train_step(graphdef, shardings, mesh, c.grad_accum)
    bs = NamedSharding(mesh, batch_spec(mesh, c.batch))
    batch = {k: jax.ShapeDtypeStruct((c.batch, c.model.seq_len), jnp.int32, sharding=bs)
             for k in ("inputs", "targets", "positions", "segments")}
    kind = devices[0].device_kind
    try:
        compiled = step.lower(state, batch).compile()
    except Exception as e:  # the TPU compiler refuses a program larger than HBM
        needed = re.search(r"required for HLO temporaries \(([\d.]+)G\)", str(e))
        if not needed:
            raise
        compiled = None
    out = {"topology": a.topology, "device_kind": kind, "devices": len(devices),
           "mesh": dict(mesh.shape), "preset": a.preset, "batch": c.batch,
           "seq_len": c.model.seq_len, "grad_accum": c.grad_accum,
           "remat": str(c.model.remat), "dtype": c.model.dtype,
           "attention": attention_impl(c.model.attention, c.model.dtype, mesh_platform(mesh)),
           "compile_s": time.perf_counter() - t0,
           "hbm_bytes": _hbm(a.topology) or hbm_of(kind), "peak_flops": peak_of(kind),
           "libtpu_flags": os.environ.get("LIBTPU_INIT_ARGS", "")}
    out |= _partitioning(state, batch)
    if compiled is None:  # out of HBM: the compiler's own figure, nothing else to measure
        temp = int(float(needed.group(1)) * GiB)
        return out | {"memory": {"arguments": 0, "outputs": 0, "temp": temp, "aliased": 0,
                                 "code": 0, "peak": temp}, "compiled": False}
    if a.dump_hlo:  # the per-device program, for reading what each chip runs
        Path(a.dump_hlo).write_text(compiled.as_text())
    return out | _memory(compiled) | _flops(compiled, c, len(devices)) | {"compiled": True}


def _hbm(topology: str) -> int | None:
    if _platform(topology) != "gpu":
        return None
    t = topology.lower()
    cfg = (TARGETS / "h100_sxm.txtpb") if t.startswith("h100") else Path(topology.split(":")[1])
    for line in cfg.read_text().splitlines():
        if line.strip().startswith("device_memory_size:"):
            return int(line.split(":")[1])
    return None


def _memory(compiled) -> dict:
    m = compiled.memory_analysis()
    arg, out = m.argument_size_in_bytes, m.output_size_in_bytes
    temp, alias = m.temp_size_in_bytes, m.alias_size_in_bytes
    return {"memory": {"arguments": arg, "outputs": out, "temp": temp, "aliased": alias,
                       "code": m.generated_code_size_in_bytes,
                       "peak": arg + temp + out - alias}}


def _partitioning(state, batch) -> dict:
    """Total bytes vs bytes on one device for the parameters, optimizer state and batch."""
    import math

    import jax

    def split(tree):
        total = per = 0
        for x in jax.tree.leaves(tree):
            total += x.dtype.itemsize * x.size
            per += x.dtype.itemsize * math.prod(x.sharding.shard_shape(x.shape))
        return {"total_bytes": total, "per_device_bytes": per,
                "shards": round(total / per, 2) if per else 0.0}

    # state = (model state: parameters + RNG counters, optimizer state)
    return {"partitioning": {"params": split(state[0]), "optimizer": split(state[1]),
                             "batch": split(batch)}}


def _flops(compiled, c, n_devices: int) -> dict:
    from datalaws.model.flops import flops_per_token
    from datalaws.model.hlo_stats import hlo_stats

    stats = hlo_stats(compiled.as_text(), c.model.seq_len)
    cost = compiled.cost_analysis() or {}
    cost = cost[0] if isinstance(cost, list) else cost
    # XLA's cost analysis counts a while body once (the grad-accumulation scan), so the
    # HLO count, which multiplies by known trip counts, is preferred when it found matmuls
    exact = stats["flops"] > 0 and not stats["trip_count_unknown"]
    per_device = stats["flops"] if exact else float(cost.get("flops", 0.0)) or stats["flops"]
    model_flops = flops_per_token(c.model) * c.batch * c.model.seq_len
    seconds = float(cost.get("optimal_seconds", 0.0) or 0.0)
    cost_flops = float(cost.get("flops", 0.0))
    scaled = seconds > 0 and exact and cost_flops and stats["flops"] > 1.01 * cost_flops
    if scaled:
        # the cost model, like its FLOP count, sees each while body once (the scanned
        # layers): scale its time by the FLOPs every iteration does (compute-bound steps)
        seconds *= stats["flops"] / cost_flops
    return {"flops_per_device": per_device, "hlo_flops_per_device": stats["flops"],
            "cost_flops_per_device": float(cost.get("flops", 0.0)),
            "model_flops": model_flops,
            "flops_ratio": per_device * n_devices / model_flops,
            "collectives": stats["collectives"], "score_batches": stats["score_batches"],
            "score_shapes": stats["score_shapes"],
            "trip_count_unknown": stats["trip_count_unknown"],
            "cost_model_seconds": seconds if seconds > 0 else None,
            "cost_model_scaled": bool(scaled),
            "cost_analysis": {k: float(v) for k, v in cost.items()
                              if isinstance(v, (int, float)) and len(k) < 32}}


def _python_for(platform: str) -> str:
    """The interpreter that has the platform's compiler: this one, else .venv-tpu/.venv-gpu."""
    import importlib.util

    module = "libtpu" if platform == "tpu" else "jax_cuda12_plugin"
    if importlib.util.find_spec(module) is not None:
        return sys.executable
    venv = REPO / f".venv-{platform}" / "bin" / "python"
    if venv.exists():
        return str(venv)
    raise ValueError(f"preflight for {platform.upper()} needs the {module} compiler, kept out of "
                     f".venv: run `make aot` (creates .venv-{platform}, see ../shared/AOT.md)")


def run_preflight(topology: str, preset: str, **options) -> dict:
    """Compile in a subprocess with the platform's compiler and return the measurements.

    ``options``: batch, seq_len, vocab, grad_accum, remat, mesh, dtype, attention (as the
    CLI flags). Results are kept for the life of the process (a sweep's shapes repeat)."""
    _check_request(topology, preset, options)
    key = json.dumps([topology, preset, sorted((k, str(v)) for k, v in options.items()
                                               if v is not None)])
    if key not in _RESULTS:
        _RESULTS[key] = _compile_elsewhere(topology, preset, **options)
    return _RESULTS[key]


_RESULTS: dict[str, dict] = {}


class PreflightError(RuntimeError):
    """The compile for a topology failed (unknown topology, a missing compiler, a bug)."""


# What --topology accepts, checked here before any compiler is looked for: a typo should
# not read as "install the TPU compiler".
_TOPOLOGY = re.compile(r"cpu|h100x[1-9]\d*|gpu:[^:]+:\d+x\d+x\d+|v\d+[a-z]*:\d+(x\d+){1,2}",
                       re.IGNORECASE)


def _check_request(topology: str, preset: str, options: dict) -> None:
    """One line naming the first bad flag (ValueError)."""
    from datalaws.model.sharding import parse_mesh
    from datalaws.model.transformer import PRESETS, REMAT_POLICIES

    if not _TOPOLOGY.fullmatch(topology):
        raise ValueError(f"--topology {topology!r}: expected e.g. v5e:2x2, v5p:2x2x4, h100x8 "
                         "or gpu:CONFIG.txtpb:1x1x8")
    if preset not in PRESETS:
        raise ValueError(f"--preset {preset!r}: unknown; presets are {', '.join(PRESETS)}")
    for k in ("batch", "seq_len", "vocab", "grad_accum"):
        if options.get(k) is not None and int(options[k]) <= 0:
            raise ValueError(f"--{k.replace('_', '-')} {options[k]}: must be positive")
    remat = options.get("remat")
    if remat is not None and _remat(remat) not in REMAT_POLICIES:
        raise ValueError(f"--remat {remat!r}: none, full or dots")
    dtype = options.get("dtype")
    if dtype is not None and dtype not in ("bfloat16", "float32", "float16"):
        raise ValueError(f"--dtype {dtype!r}: bfloat16, float32 or float16")
    parse_mesh(options.get("mesh"))  # raises its own one-line --mesh error


def _compile_elsewhere(topology: str, preset: str, **options) -> dict:
    platform = _platform(topology)
    if platform == "cpu":
        return preflight(topology, preset, **options)
    args = [_python_for(platform), "-m", "datalaws.model.preflight", "--json",
            "--topology", topology, "--preset", preset]
    for k, v in options.items():
        if v is not None:
            args += [f"--{k.replace('_', '-')}", str(v)]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    # no chip is opened: libtpu's one-process lock is not needed for a deviceless compile
    env |= {"JAX_PLATFORMS": "cpu", "TPU_WORKER_HOSTNAMES": "localhost",
            "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": "", "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}
    if platform == "tpu":  # a LIBTPU_INIT_ARGS of the caller's replaces these
        env.setdefault("LIBTPU_INIT_ARGS", COST_MODEL_FLAGS)
    p = subprocess.run(args, capture_output=True, text=True, env=env)
    if p.returncode != 0:  # the exception's last line says what went wrong
        err = [ln.strip() for ln in p.stderr.splitlines() if "Error" in ln
               and not ln.startswith(("E0000", "E1", "W0000", "I0000"))]
        raise PreflightError(f"preflight {topology} {preset} failed: "
                             f"{err[-1] if err else 'exit code ' + str(p.returncode)}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def fits(r: dict) -> bool:
    """Peak memory per device within the chip's HBM (CPU: no limit known, always True)."""
    return r["hbm_bytes"] is None or r["memory"]["peak"] <= r["hbm_bytes"]


def _collectives_line(coll: dict) -> str:
    parts = [f"{k} {v['count']:.0f}x {v['bytes'] / GiB:.2f} GiB" for k, v in coll.items()
             if v["count"]]
    return ", ".join(parts) or "none"


def format_report(r: dict) -> str:
    """The preflight table a person reads before queueing a sweep on the topology."""
    if not r.get("compiled", True):
        return (f"preflight {r['preset']} on {r['topology']} ({r['devices']} x "
                f"{r['device_kind']}), batch {r['batch']}x{r['seq_len']}, grad_accum "
                f"{r['grad_accum']}, remat {r['remat']}: DOES NOT FIT — the compiler needs "
                f"{r['memory']['peak'] / GiB:.1f} GiB of temporaries per device, HBM is "
                f"{r['hbm_bytes'] / GiB:.1f} GiB")
    m, p = r["memory"], r["partitioning"]
    mesh = ",".join(f"{k}={v}" for k, v in r["mesh"].items())
    hbm = r["hbm_bytes"]
    verdict = ("HBM unknown" if hbm is None else "fits" if fits(r) else "DOES NOT FIT")
    split = r["mesh"]["data"] * r["mesh"]["fsdp"]
    lines = [
        f"preflight {r['preset']} on {r['topology']} ({r['devices']} x {r['device_kind']}), "
        f"mesh {mesh}, batch {r['batch']}x{r['seq_len']}, grad_accum {r['grad_accum']}, "
        f"remat {r['remat']}, {r['dtype']}, attention {r['attention']}",
        f"  memory / device   {m['peak'] / GiB:6.2f} GiB of "
        f"{(hbm or 0) / GiB:.1f} GiB HBM: {verdict}  (arguments {m['arguments'] / GiB:.2f}, "
        f"temp {m['temp'] / GiB:.2f}, outputs {m['outputs'] / GiB:.2f}, aliased "
        f"{m['aliased'] / GiB:.2f})",
        "  partitioned       " + ", ".join(f"{k} 1/{v['shards']:g} per device"
                                           for k, v in p.items()),
        f"  attention scores  batch {r['score_batches']} per device (global {r['batch']} / "
        f"data x fsdp {split} / grad_accum {r['grad_accum']} = "
        f"{r['batch'] // split // r['grad_accum']}); shapes {r.get('score_shapes', [])}",
        f"  FLOPs             {r['flops_per_device']:.3g} per device x {r['devices']} / "
        f"model {r['model_flops']:.3g} (6N + attention) = ratio {r['flops_ratio']:.2f}",
        f"  collectives       {_collectives_line(r['collectives'])}",
    ]
    s = r.get("cost_model_seconds")
    if s:
        mfu = r["model_flops"] / (s * r["devices"] * r["peak_flops"])
        lines.append(f"  cost model        step {s * 1e3:.1f} ms -> MFU {100 * mfu:.1f}% "
                     f"({r['batch'] * r['seq_len'] / s:,.0f} tokens/s)"
                     + ("; XLA's estimate for one pass of each loop, scaled by FLOPs to all "
                        "iterations" if r.get("cost_model_scaled") else ""))
        if r.get("libtpu_flags"):
            lines.append(f"  compiler flags    {r['libtpu_flags']}")
    elif r.get("cost_analysis", {}).get("optimal_seconds") is not None:
        lines.append(f"  cost model        no usable step time (XLA's estimate "
                     f"{r['cost_analysis']['optimal_seconds']:.3g} s is not positive)")
    else:
        lines.append("  cost model        none on this platform (GPU: no step-time estimate)")
    lines.append(f"  compile           {r['compile_s']:.0f} s on this machine")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--topology", required=True,
                   help="v5e:2x2, v5p:2x2x4, v4:2x2x2, h100x8, gpu:CONFIG.txtpb:1x1x8")
    p.add_argument("--preset", default="1.5b")
    p.add_argument("--batch", type=int, help="global sequences per step (default: per chip)")
    p.add_argument("--seq-len", dest="seq_len", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--grad-accum", dest="grad_accum", type=int, default=1)
    p.add_argument("--remat", default="dots", help="none | full | dots (default dots)")
    p.add_argument("--mesh", help="data=1,fsdp=-1,tensor=1 (default: fsdp over all chips)")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--attention", default="auto", choices=["auto", "cudnn", "xla"])
    p.add_argument("--dump-hlo", dest="dump_hlo", help="write the optimized HLO text here")


def _cmd_preflight(a: argparse.Namespace) -> int:
    opts = {k: getattr(a, k) for k in ("batch", "seq_len", "vocab", "grad_accum", "remat",
                                       "mesh", "dtype", "attention", "dump_hlo")}
    r = run_preflight(a.topology, a.preset, **opts)
    print(json.dumps(r) if a.json else format_report(r))
    return 0 if fits(r) else 1


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preflight", help="compile the train step for a TPU/GPU topology here "
                       "and report memory, partitioning, FLOPs, collectives, MFU")
    add_arguments(p)
    p.add_argument("--json", action="store_true", help="print the measurements as JSON")
    p.set_defaults(func=_cmd_preflight)


def main(argv: list[str]) -> int:
    """Subprocess entry (in the plugin's venv, JAX_PLATFORMS=cpu): prints one JSON line."""
    p = argparse.ArgumentParser(prog="python -m datalaws.model.preflight")
    add_arguments(p)
    p.add_argument("--json", action="store_true")
    a = vars(p.parse_args(argv))
    a.pop("json")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    print(json.dumps(preflight(a.pop("topology"), a.pop("preset"), **a)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
