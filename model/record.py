"""A training run as its RunRecord: sizes, tokens, FLOPs, evaluation, schedule, hardware."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from jax.sharding import Mesh

from datalaws.model.flops import flops_per_token
from datalaws.model.sharding import describe_mesh, mesh_platform
from datalaws.model.transformer import ModelConfig, attention_impl, count_params
from datalaws.records import RunRecord

if TYPE_CHECKING:
    from datalaws.model.train import TrainConfig

__all__ = ["run_record"]


def run_record(c: TrainConfig, status: str, step: int, mesh: Mesh, *, quality: Mapping | None,
               loss: float | None, eval_losses: Mapping, eval_mix: Mapping,
               validation: Mapping | None, accuracy: Mapping, chance: Mapping | None,
               wall_time: float, error: str | None, config: Mapping,
               schedule: Mapping) -> RunRecord:
    """The RunRecord of a run stopped at ``step`` (``config``: the run's config as the record
    stores it; ``schedule``: the learning-rate schedule as the record states it)."""
    from datalaws.envinfo import describe_devices, git_sha, package_versions

    total, nonembed = count_params(c.model)
    trained = step * c.batch * c.model.seq_len
    impl = attention_impl(c.model.attention, c.model.dtype, mesh_platform(mesh))
    q = quality or {}
    return RunRecord(
        run_id=c.run_id, status=status, preset=_preset_name(c.model),
        config=dict(config),
        params=total, params_nonembed=nonembed, tokens=trained, steps=step, batch=c.batch,
        seq_len=c.model.seq_len, mixture=dict(c.mixture), pool=c.pool,
        repetitions=c.repetitions, unique_tokens=c.unique_tokens,
        diversity=q.get("diversity"), syntheticity=q.get("syntheticity"), loss=loss,
        eval_losses=eval_losses, eval_mix=eval_mix if eval_losses else {},
        validation=_validation_info(validation, c) if eval_losses else {},
        schedule=dict(schedule), accuracy=accuracy, chance=dict(chance or {}),
        flops=float(flops_per_token(c.model) * trained), wall_time=wall_time, seed=c.seed,
        hardware=f"{describe_devices()}, {describe_mesh(mesh)}, attention {impl}",
        versions=package_versions(), git_sha=git_sha(), error=error)


def _validation_info(validation: Mapping | None, c: TrainConfig) -> dict:
    """What identifies the evaluation: the store's validation hash and how it was read."""
    v = dict(validation or {})
    return {"hash": v.get("hash"), "seq_len": c.model.seq_len, "windows": c.eval_windows,
            "domains": {d: {k: x.get(k) for k in ("hash", "tokens", "docs", "rule")}
                        for d, x in v.get("domains", {}).items()}}


def _preset_name(m: ModelConfig) -> str:
    for name, shape in ModelConfig.PRESET_SHAPES.items():
        if shape == (m.d_model, m.n_layers, m.n_heads):
            return name
    return "custom"
