"""Validation on the store's fixed validation set: every domain, a declared composition.

Every run of a store is scored on the same windows of the same held-out documents
(``datalaws.data.store.validation_split``), whatever its training mixture, so runs with
different mixtures share one target. ``Validator`` reads those windows once: the first
``eval_windows`` windows of each domain's split for the final losses, and the first
``curve_windows`` of them (a fixed subset) for the validation curve every ``eval_every``
steps. A run's overall ``loss`` is the composition-weighted sum of its domain losses,
``sum_d w_d * loss_d``, with one composition declared for the whole sweep (``eval_mix``);
the default weights each base domain by its share of the store's tokens.

On a mesh (several devices, or several hosts) the windows are scored like a training batch:
global arrays split over data x fsdp, each process placing the shards of its own devices, and
a replicated total every process reads, so periodic and final validation run multi-host.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from datalaws.data.loader import PackedSequences
from datalaws.model.sharding import batch_spec

__all__ = ["Validator", "composite_loss", "token_nll"]


def token_nll(model, batch: Mapping[str, jax.Array]) -> jax.Array:
    """Next-token negative log-likelihood [B, T] under document masking: positions and
    segment ids from the batch when it has them."""
    logits_BTV = model(batch["inputs"], batch.get("positions"), batch.get("segments"))
    return optax.softmax_cross_entropy_with_integer_labels(logits_BTV, batch["targets"])


def composite_loss(losses: Mapping[str, float], composition: Mapping[str, float]
                   ) -> float | None:
    """``sum_d w_d loss_d`` over the composition (None when a weighted domain is missing)."""
    if not composition or any(w > 0 and d not in losses for d, w in composition.items()):
        return None
    return float(sum(w * losses[d] for d, w in composition.items() if w > 0))


class Validator:
    """Fixed validation windows per domain and a jitted scorer for them."""

    def __init__(self, valid: Mapping[str, object], *, seq_len: int, eod: int,
                 eval_windows: int, curve_windows: int, batch: int):
        self.batch = batch
        self.final, self.curve = {}, {}
        for domain, stream in sorted(valid.items()):
            if stream.shape[0] < seq_len + 1:
                raise ValueError(f"domain {domain!r}: its validation split has "
                                 f"{stream.shape[0]} tokens, fewer than one window of "
                                 f"{seq_len + 1}; use a shorter seq_len or more documents")
            src = PackedSequences(stream, seq_len, eod)
            n = min(len(src), eval_windows)
            windows = src.read(np.arange(n))
            self.final[domain] = windows
            self.curve[domain] = {k: v[:min(n, curve_windows)] for k, v in windows.items()}
        self._score = None

    def _scorer(self, graphdef, mesh):
        if self._score is None:
            def score(state, batch, weight_B):
                model = nnx.merge(graphdef, state)[0]
                return jnp.sum(token_nll(model, batch).sum(-1) * weight_B)

            if mesh is None:  # a state on one device: plain jit, numpy rows go there
                self._score = jax.jit(score)
            else:  # traced under the mesh, like the train step: activations pinned
                def traced(state, batch, weight_B):
                    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
                        return score(state, batch, weight_B)

                # a replicated total: every process can read it
                self._score = jax.jit(traced, out_shardings=NamedSharding(mesh, P()))
        return self._score

    def _place(self, mesh, rows: dict, weight: np.ndarray):
        """The padded windows as global arrays split like a training batch (batch over
        data x fsdp). Every process holds the same windows, so each builds the shards of its
        own devices (``make_array_from_callback``): it works for one process or many."""
        if mesh is None:
            return rows, weight
        spec = batch_spec(mesh, self.batch)

        def put(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
            return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

        return ({k: put(v, NamedSharding(mesh, spec)) for k, v in rows.items()},
                put(weight, NamedSharding(mesh, P(spec[0]))))

    def losses(self, graphdef, state, *, curve: bool = False) -> dict[str, float]:
        """Mean next-token loss (nats/token) per domain on the final or the curve windows."""
        mesh = _mesh_of(state)
        score = self._scorer(graphdef, mesh)
        out = {}
        for domain, w in (self.curve if curve else self.final).items():
            n, T = w["inputs"].shape
            total = 0.0
            for i in range(0, n, self.batch):
                rows = {k: v[i:i + self.batch] for k, v in w.items()}
                k = rows["inputs"].shape[0]
                pad = self.batch - k  # a fixed batch shape: one compilation, padded rows weigh 0
                rows = {key: np.pad(v, ((0, pad), (0, 0))) for key, v in rows.items()}
                weight = np.r_[np.ones(k), np.zeros(pad)].astype(np.float32)
                total += float(score(state, *self._place(mesh, rows, weight)))
            out[domain] = total / (n * T)
        return out


def _mesh_of(state) -> jax.sharding.Mesh | None:
    """The mesh the (train) state lives on; None for arrays on one device or numpy."""
    leaves = jax.tree.leaves(state)
    sharding = getattr(leaves[0], "sharding", None) if leaves else None
    mesh = getattr(sharding, "mesh", None)
    return mesh if isinstance(mesh, jax.sharding.Mesh) and mesh.size > 1 else None
