"""The sharding design in one place: logical axis names and the rules that map them to the mesh.

Every parameter and every activation the train step constrains is named with logical axes
(MaxText / levanter style); ``RULES`` maps each name onto the mesh axes ``data``, ``fsdp``
and ``tensor``. Reading the table top to bottom is reading the parallelism plan:

- the batch is split over data x fsdp, in compute as well as on input (every chip holds
  global_batch / (data * fsdp) sequences of every activation, attention scores included);
- weights are stored split over fsdp along their model-width (``embed``) dimension and
  gathered just before use (ZeRO-3 / FSDP); the optimizer state follows the weights;
- tensor parallelism splits whole attention heads, the MLP width and the vocabulary. Fused
  projections keep a separate axis for "which of q/k/v" (``fused``), so a tensor shard of the
  qkv kernel holds q, k and v of its own heads and the split needs no communication;
- activations between blocks (the residual stream) are replicated along their width and only
  batch-split (``activation_embed`` -> None); the sequence axis is not split (``sequence`` ->
  None): at the presets' contexts (<= 2048) context parallelism does not pay.

A mesh axis that does not divide a dimension is dropped for that array (it is replicated
along that axis instead), so the tiny presets run on any mesh; see ``fit_spec``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

__all__ = ["MESH_AXES", "RULES", "logical_spec", "fit_spec", "constrain", "batch_spec",
           "named_shardings", "parse_mesh", "make_mesh", "mesh_platform", "is_primary",
           "describe_mesh"]

MESH_AXES = ("data", "fsdp", "tensor")

MeshAxes = str | tuple[str, ...] | None

# logical axis -> mesh axes. Parameters and activations share names where they share a plan.
RULES: tuple[tuple[str, MeshAxes], ...] = (
    # activations
    ("batch", ("data", "fsdp")),  # sequences: split over every data-parallel replica
    ("sequence", None),  # positions within a sequence
    ("activation_embed", None),  # residual-stream width: replicated, batch-split only
    # parameters (and the activations that carry the same dimension)
    ("embed", "fsdp"),  # model width D of a weight: FSDP storage split
    ("heads", "tensor"),  # attention heads H: tensor parallelism over whole heads
    ("head_dim", None),  # K: never split (rotary halves and the q.k contraction live here)
    ("fused", None),  # q/k/v or gate/up index of a fused projection
    ("mlp", "tensor"),  # SwiGLU width F
    ("vocab", "tensor"),  # vocabulary V (output projection, embedding rows, logits)
    ("norm", None),  # RMSNorm scales: small, replicated
    ("layers", None),  # the stacked blocks' leading axis (scanned, never split)
)
_RULES = dict(RULES)


def logical_spec(names: Sequence[str | None], rules: Sequence = RULES) -> PartitionSpec:
    """PartitionSpec of an array whose dimensions carry these logical names."""
    table = dict(rules)
    out = []
    for n in names:
        if n is not None and n not in table:
            raise KeyError(f"logical axis {n!r} is not in the sharding rules {list(table)}")
        out.append(None if n is None else table[n])
    return PartitionSpec(*out)


def _axes(entry: MeshAxes) -> tuple[str, ...]:
    return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def fit_spec(shape: Sequence[int], spec: PartitionSpec, mesh_shape: dict) -> PartitionSpec:
    """Drop, per dimension, trailing mesh axes whose product does not divide it.

    jit needs every sharded argument to split evenly; a tiny model on a wide mesh gets its
    small dimensions replicated rather than an error."""
    out = []
    for i, size in enumerate(shape):
        axes = list(_axes(spec[i] if i < len(spec) else None))
        while axes and size % math.prod(mesh_shape[a] for a in axes):
            axes.pop()
        out.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    return PartitionSpec(*out)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """Pin an activation's sharding to its logical axes under the current mesh.

    A no-op without a mesh (eager use, generation): the constraint only shapes the
    compiled train step, where the step is traced under ``jax.set_mesh``."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not set(MESH_AXES) <= set(mesh.axis_names):
        return x
    spec = fit_spec(x.shape, logical_spec(names), dict(mesh.shape))
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def batch_spec(mesh: jax.sharding.Mesh, batch: int) -> PartitionSpec:
    """Input batch [B, T]: B split over data x fsdp; refuses a batch that does not split."""
    split = math.prod(mesh.shape[a] for a in _axes(_RULES["batch"]))
    if batch % split:
        raise ValueError(f"batch={batch} does not split over data x fsdp = {split} devices of "
                         f"mesh {dict(mesh.shape)}; use a multiple of {split} or another "
                         "--mesh")
    return logical_spec(("batch", "sequence"))


def named_shardings(abstract_state, mesh: jax.sharding.Mesh):
    """NamedShardings for a state of nnx Variables annotated with logical names."""
    from flax import nnx

    specs = nnx.get_partition_spec(abstract_state)
    shape = dict(mesh.shape)

    def one(spec, leaf):
        return NamedSharding(mesh, fit_spec(leaf.shape, spec, shape))

    return jax.tree.map(one, specs, abstract_state,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def parse_mesh(text: str | Sequence[int] | dict | None) -> tuple[int, int, int] | None:
    """``"data=1,fsdp=-1,tensor=1"``, ``{"fsdp": -1}``, ``[1, -1, 1]`` -> (data, fsdp, tensor).

    Unnamed axes default to 1; None stays None (all devices, see ``train.default_mesh``)."""
    if text is None or text == "":
        return None
    if isinstance(text, str):
        pairs = {}
        for part in text.split(","):
            name, eq, val = part.partition("=")
            name = name.strip()
            if not eq or name not in MESH_AXES:
                raise ValueError(f"--mesh {text!r}: expected name=size pairs with names "
                                 f"{'/'.join(MESH_AXES)}, e.g. data=1,fsdp=-1,tensor=1")
            try:
                pairs[name] = int(val)
            except ValueError:
                raise ValueError(f"--mesh {text!r}: size of {name} is not an integer") from None
        text = pairs
    if isinstance(text, dict):
        bad = set(text) - set(MESH_AXES)
        if bad:
            raise ValueError(f"mesh {text}: unknown axes {sorted(bad)}; use {MESH_AXES}")
        text = [int(text.get(a, 1)) for a in MESH_AXES]
    shape = tuple(int(s) for s in text)
    if len(shape) != 3 or any(s == 0 or s < -1 for s in shape) or shape.count(-1) > 1:
        raise ValueError(f"mesh {shape}: three sizes (data, fsdp, tensor), each >= 1 or one "
                         "of them -1 (the remaining devices)")
    return shape


def make_mesh(shape=None, devices: Sequence | None = None) -> jax.sharding.Mesh:
    """A (data, fsdp, tensor) mesh over ``devices`` (default: every device of every process).

    ``shape`` is anything ``parse_mesh`` reads; None means fsdp over all devices. One size
    may be -1 (the remaining devices); a mesh smaller than the device list takes its first
    devices."""
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    sizes = list(parse_mesh(shape) or (1, -1, 1))
    if -1 in sizes:
        rest = math.prod(s for s in sizes if s != -1)
        if n % rest:
            raise ValueError(f"mesh={tuple(sizes)}: {n} devices do not split into {rest} x N")
        sizes[sizes.index(-1)] = n // rest
    if math.prod(sizes) > n:
        raise ValueError(f"mesh={tuple(sizes)} needs {math.prod(sizes)} devices; have {n}")
    used = devices[: math.prod(sizes)]
    auto = (jax.sharding.AxisType.Auto,) * 3  # XLA propagates the annotated shardings
    try:  # topology-aware order (ICI rings on TPU) where JAX knows the devices' coordinates
        return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=auto, devices=used)
    except (ValueError, NotImplementedError, AssertionError):
        return jax.sharding.Mesh(np.array(used).reshape(sizes), MESH_AXES, axis_types=auto)


def mesh_platform(mesh: jax.sharding.Mesh) -> str:
    """'tpu', 'gpu' or 'cpu': the platform the mesh's devices compile for."""
    p = mesh.devices.flat[0].platform
    return "gpu" if p in ("cuda", "rocm", "gpu") else p


def is_primary() -> bool:
    """Multi-host: every process trains; process 0 alone writes records, metrics, reports."""
    return jax.process_index() == 0


def describe_mesh(mesh: jax.sharding.Mesh) -> str:
    """``"mesh data=1,fsdp=8,tensor=1"``: what a record states about the parallelism."""
    return "mesh " + ",".join(f"{a}={mesh.shape[a]}" for a in MESH_AXES)
