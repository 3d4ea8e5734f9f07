"""A decoder-only transformer in Flax NNX: RMSNorm, rotary positions, SwiGLU, no biases.

Parameters are fp32; the forward pass computes in ``config.dtype`` (bf16 by default).
Every weight and every block-boundary activation carries logical axis names (batch, sequence,
embed, heads, head_dim, mlp, vocab, fused); ``datalaws.model.sharding.RULES`` maps them onto
the mesh. Fused projections keep a per-head layout (qkv kernel [D, 3, H, K], gate/up
[D, 2, F]) so that tensor parallelism splits whole heads and the q/k/v split is local.
Array names carry their shapes: B batch, T sequence, D model width, H heads, K head dim,
F MLP width, V vocabulary, S which of q/k/v (or gate/up).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from datalaws.model.sharding import RULES, constrain

__all__ = ["ModelConfig", "Transformer", "PRESETS", "count_params", "attention_impl"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape of the model. Presets: ``ModelConfig.preset("125m", vocab=32000)``."""

    vocab: int = 32768  # vocabulary size
    d_model: int = 768  # residual width D
    n_layers: int = 12  # transformer blocks
    n_heads: int = 12  # attention heads H (head dim K = D / H)
    d_ff: int = 2048  # SwiGLU hidden width F
    seq_len: int = 1024  # maximum context T
    tied: bool = False  # share the embedding with the output projection
    dtype: str = "bfloat16"  # compute dtype; params stay float32
    rope_base: float = 10000.0
    # recompute in the backward pass: False (save all), True / "full" (the block's input
    # only), "dots" (save matmul outputs, recompute attention and elementwise ops)
    remat: bool | str = False
    attention: str = "auto"  # "auto" (cudnn on GPU for bf16/fp16, else xla), "cudnn", "xla"
    scan_layers: bool = True  # one compiled block scanned over the stacked layers

    PRESET_SHAPES: ClassVar[dict[str, tuple[int, int, int]]] = {
        # name: (d_model, n_layers, n_heads); d_ff = 8/3 d_model rounded to 64
        "tiny": (32, 2, 2),
        "micro": (64, 2, 4),
        "mini": (128, 3, 4),
        "25m": (384, 8, 6),
        "50m": (512, 8, 8),
        "85m": (640, 10, 10),
        "125m": (768, 12, 12),
        "350m": (1024, 24, 16),
        "760m": (1536, 24, 16),
        "1.5b": (2048, 28, 16),
    }

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"ModelConfig.d_model={self.d_model} is not divisible by "
                             f"n_heads={self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(f"ModelConfig: head dim {self.d_model // self.n_heads} must be "
                             "even for rotary positions")
        for f in ("vocab", "d_model", "n_layers", "n_heads", "d_ff", "seq_len"):
            if getattr(self, f) <= 0:
                raise ValueError(f"ModelConfig.{f}={getattr(self, f)} must be > 0")
        if self.attention not in ("auto", "cudnn", "xla"):
            raise ValueError(f"ModelConfig.attention={self.attention!r}; use auto|cudnn|xla")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"ModelConfig.remat={self.remat!r}; use one of "
                             f"{sorted(map(str, REMAT_POLICIES))}")
        if self.attention == "cudnn" and self.dtype not in CUDNN_DTYPES:
            raise ValueError(f"ModelConfig: attention='cudnn' needs dtype bfloat16 or float16, "
                             f"not {self.dtype!r} (cuDNN fused attention rejects it)")

    @classmethod
    def preset(cls, name: str, **overrides) -> ModelConfig:
        if name not in cls.PRESET_SHAPES:
            raise ValueError(f"unknown preset {name!r}; choose from {list(cls.PRESET_SHAPES)}")
        d, layers, heads = cls.PRESET_SHAPES[name]
        base = dict(d_model=d, n_layers=layers, n_heads=heads, d_ff=_ff(d))
        return cls(**(base | overrides))

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def _ff(d: int) -> int:
    return max(64, int(round(8 * d / 3 / 64)) * 64)


PRESETS = tuple(ModelConfig.PRESET_SHAPES)


def count_params(c: ModelConfig) -> tuple[int, int]:
    """Analytic (total, non-embedding) parameter counts."""
    per_block = 4 * c.d_model**2 + 3 * c.d_model * c.d_ff + 2 * c.d_model
    nonembed = c.n_layers * per_block + c.d_model  # + final norm
    embed = c.vocab * c.d_model * (1 if c.tied else 2)
    return nonembed + embed, nonembed


CUDNN_DTYPES = ("bfloat16", "float16")
# False/True kept for configs written before the named policies
REMAT_POLICIES = {False: None, "none": None, True: "full", "full": "full", "dots": "dots"}


def attention_impl(requested: str, dtype: str = "bfloat16", platform: str | None = None) -> str:
    """The attention kernel for a dtype on a platform ('gpu', 'tpu', 'cpu'; default: JAX's).

    'auto' takes cuDNN's fused attention on GPU for bf16/fp16 (it rejects float32) and XLA's
    otherwise; a forced 'cudnn' off GPU or in float32 is an error."""
    platform = platform or jax.default_backend()
    platform = "gpu" if platform in ("cuda", "rocm") else platform
    if requested == "auto":
        return "cudnn" if platform == "gpu" and dtype in CUDNN_DTYPES else "xla"
    if requested == "cudnn" and platform != "gpu":
        raise ValueError(f"attention='cudnn' needs a GPU; this platform is {platform!r}")
    if requested == "cudnn" and dtype not in CUDNN_DTYPES:
        raise ValueError(f"attention='cudnn' needs bfloat16/float16, not {dtype!r}")
    return requested


def _init(names: tuple, scale: float = 1.0):
    return nnx.with_partitioning(nnx.initializers.normal(0.02 * scale), names,
                                 sharding_rules=RULES)


def _norm(d: int, dt, rngs: nnx.Rngs) -> nnx.RMSNorm:
    return nnx.RMSNorm(d, dtype=dt, rngs=rngs, scale_init=nnx.with_partitioning(
        nnx.initializers.ones, ("norm",), sharding_rules=RULES))


# logical axes of the activations the step pins (see datalaws.model.sharding)
RESIDUAL = ("batch", "sequence", "activation_embed")
PER_HEAD = ("batch", "sequence", "heads", "head_dim")
# "full" saves nothing inside a block; "dots" keeps the projections' outputs (matmuls without
# batch dimensions) and recomputes attention scores, norms and activations
_POLICY = {"full": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def _rope(x_BTHK: jax.Array, positions_T: jax.Array, base: float) -> jax.Array:
    """Rotary embedding at ``positions_T``: [T] shared by the batch, or [B, T] per row."""
    k = x_BTHK.shape[-1] // 2
    freq_K = base ** (-jnp.arange(k, dtype=jnp.float32) / k)
    angle_TK = positions_T[..., None].astype(jnp.float32) * freq_K  # [(B,) T, K]
    sin, cos = jnp.sin(angle_TK)[..., None, :], jnp.cos(angle_TK)[..., None, :]
    x1, x2 = x_BTHK[..., :k].astype(jnp.float32), x_BTHK[..., k:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x_BTHK.dtype)


class Block(nnx.Module):
    def __init__(self, c: ModelConfig, *, rngs: nnx.Rngs):
        dt = jnp.dtype(c.dtype)
        out_scale = 1.0 / (2 * c.n_layers) ** 0.5  # GPT-2 style residual scaling
        D, H, K, F = c.d_model, c.n_heads, c.head_dim, c.d_ff
        self.c = c
        self.attn_norm = _norm(D, dt, rngs)
        self.qkv = nnx.Einsum("BTD,DSHK->BTSHK", (D, 3, H, K), dtype=dt, rngs=rngs,
                              kernel_init=_init(("embed", "fused", "heads", "head_dim")))
        self.out = nnx.Einsum("BTHK,HKD->BTD", (H, K, D), dtype=dt, rngs=rngs,
                              kernel_init=_init(("heads", "head_dim", "embed"), out_scale))
        self.mlp_norm = _norm(D, dt, rngs)
        self.gate_up = nnx.Einsum("BTD,DSF->BTSF", (D, 2, F), dtype=dt, rngs=rngs,
                                  kernel_init=_init(("embed", "fused", "mlp")))
        self.down = nnx.Linear(F, D, use_bias=False, dtype=dt, rngs=rngs,
                               kernel_init=_init(("mlp", "embed"), out_scale))

    def _qkv(self, x_BTD: jax.Array, positions_T: jax.Array):
        c = self.c
        qkv_BTSHK = constrain(self.qkv(self.attn_norm(x_BTD)),
                              ("batch", "sequence", "fused", "heads", "head_dim"))
        q_BTHK = _rope(qkv_BTSHK[:, :, 0], positions_T, c.rope_base)
        k_BTHK = _rope(qkv_BTSHK[:, :, 1], positions_T, c.rope_base)
        return q_BTHK, k_BTHK, qkv_BTSHK[:, :, 2]

    def _residual(self, x_BTD: jax.Array, a_BTHK: jax.Array) -> jax.Array:
        a_BTHK = constrain(a_BTHK, PER_HEAD)
        x_BTD = constrain(x_BTD + self.out(a_BTHK), RESIDUAL)
        gu_BTSF = constrain(self.gate_up(self.mlp_norm(x_BTD)),
                            ("batch", "sequence", "fused", "mlp"))
        h_BTF = jax.nn.silu(gu_BTSF[:, :, 0]) * gu_BTSF[:, :, 1]
        return constrain(x_BTD + self.down(h_BTF), RESIDUAL)

    def __call__(self, x_BTD: jax.Array, positions_T: jax.Array, impl: str,
                 segments_BT: jax.Array | None = None) -> jax.Array:
        q_BTHK, k_BTHK, v_BTHK = self._qkv(x_BTD, positions_T)
        # document masking: a query sees only keys of its own document (segment id); the
        # boolean mask is causal-and'ed by XLA and becomes an additive bias under cuDNN
        mask = (None if segments_BT is None else
                (segments_BT[:, :, None] == segments_BT[:, None, :])[:, None])
        a_BTHK = jax.nn.dot_product_attention(q_BTHK, k_BTHK, v_BTHK, mask=mask,
                                              is_causal=True, implementation=impl)
        return self._residual(x_BTD, a_BTHK)

    def decode(self, x_BTD: jax.Array, start: jax.Array, cache: tuple[jax.Array, jax.Array]):
        """Positions ``start .. start+T-1`` against a KV cache [B, S, H, K] of keys and
        values; returns (output, updated cache). Queries see cached keys at positions <=
        their own (the rest of the cache is masked), so prefill (T = prompt) and one-token
        decode steps are the same code."""
        T = x_BTD.shape[1]
        positions_T = start + jnp.arange(T)
        q_BTHK, k_BTHK, v_BTHK = self._qkv(x_BTD, positions_T)
        k_BSHK = jax.lax.dynamic_update_slice(cache[0], k_BTHK.astype(cache[0].dtype),
                                              (0, start, 0, 0))
        v_BSHK = jax.lax.dynamic_update_slice(cache[1], v_BTHK.astype(cache[1].dtype),
                                              (0, start, 0, 0))
        mask_TS = positions_T[:, None] >= jnp.arange(k_BSHK.shape[1])[None, :]
        # the XLA path: decoding is bound by reading the cache, not by attention FLOPs
        a_BTHK = jax.nn.dot_product_attention(q_BTHK, k_BSHK, v_BSHK,
                                              mask=mask_TS[None, None], implementation="xla")
        return self._residual(x_BTD, a_BTHK), (k_BSHK, v_BSHK)


class Transformer(nnx.Module):
    """``model(tokens_BT) -> logits_BTV`` (float32 logits)."""

    def __init__(self, c: ModelConfig, *, rngs: nnx.Rngs):
        self.c = c
        self.embed = nnx.Embed(c.vocab, c.d_model, dtype=jnp.dtype(c.dtype), rngs=rngs,
                               embedding_init=_init(("vocab", "embed")))
        self.blocks = _stacked_blocks(c, rngs)  # every parameter gains a leading layer axis
        self.norm = _norm(c.d_model, jnp.dtype(c.dtype), rngs)
        if not c.tied:
            self.unembed = nnx.Linear(c.d_model, c.vocab, use_bias=False,
                                      dtype=jnp.dtype(c.dtype), rngs=rngs,
                                      kernel_init=_init(("embed", "vocab")))

    def __call__(self, tokens_BT: jax.Array, positions_T: jax.Array | None = None,
                 segments_BT: jax.Array | None = None) -> jax.Array:
        """Logits; ``positions_T`` ([T] or [B, T], default 0..T-1) feed the rotary
        embedding, ``segments_BT`` (document number per token) keeps attention inside each
        document. Packed training passes both, restarting per document (data/loader.py)."""
        # init_state resolves "auto" for the mesh's platform; eager use resolves it here
        impl = (self.c.attention if self.c.attention != "auto"
                else attention_impl("auto", self.c.dtype))
        T = tokens_BT.shape[1]
        positions_T = jnp.arange(T) if positions_T is None else positions_T
        x_BTD = self._embed(tokens_BT)
        policy = REMAT_POLICIES[self.c.remat]

        # a plain lax.scan over the stacked state (not nnx.scan): the model may be a closure
        # of an outer trace (generation loops), which nnx's transforms refuse
        graphdef, stacked = nnx.split(self.blocks)

        def body(x_BTD: jax.Array, layer) -> tuple[jax.Array, None]:
            return nnx.merge(graphdef, layer)(x_BTD, positions_T, impl, segments_BT), None

        if policy is not None:
            body = jax.checkpoint(body, policy=_POLICY[policy], prevent_cse=False)
        x_BTD, _ = jax.lax.scan(body, x_BTD, stacked,
                                unroll=1 if self.c.scan_layers else self.c.n_layers)
        return self._logits(x_BTD)

    def _embed(self, tokens_BT: jax.Array) -> jax.Array:
        # the table is gathered whole (as FSDP gathers every weight) and rows are looked up
        # locally: a lookup into a sharded table trades rows with all-to-alls and permutes
        table_VD = constrain(self.embed.embedding[...].astype(self.c.dtype), (None, None))
        return constrain(jnp.take(table_VD, tokens_BT, axis=0), RESIDUAL)

    def _logits(self, x_BTD: jax.Array) -> jax.Array:
        x_BTD = self.norm(x_BTD)
        if self.c.tied:
            logits_BTV = self.embed.attend(x_BTD)
        else:
            logits_BTV = self.unembed(x_BTD)
        return constrain(logits_BTV.astype(jnp.float32), ("batch", "sequence", "vocab"))

    def init_cache(self, batch: int, length: int) -> tuple[jax.Array, jax.Array]:
        """Empty (keys, values) caches [L, B, S, H, K] for ``length`` positions."""
        c = self.c
        shape = (c.n_layers, batch, length, c.n_heads, c.head_dim)
        return jnp.zeros(shape, c.dtype), jnp.zeros(shape, c.dtype)

    def decode(self, tokens_BT: jax.Array, start: jax.Array, caches: tuple) -> tuple:
        """Logits for tokens at positions ``start ..``, reading and extending ``caches``."""

        graphdef, stacked = nnx.split(self.blocks)

        def body(x_BTD: jax.Array, layer_and_cache: tuple) -> tuple:
            layer, cache = layer_and_cache
            return nnx.merge(graphdef, layer).decode(x_BTD, start, cache)

        x_BTD, caches = jax.lax.scan(body, self.embed(tokens_BT), (stacked, caches))
        return self._logits(x_BTD), caches


def _stacked_blocks(c: ModelConfig, rngs: nnx.Rngs) -> Block:
    """n_layers blocks as one Block whose parameters are stacked [L, ...] (logical axis
    "layers"), so the forward pass scans one compiled block over them."""

    @nnx.split_rngs(splits=c.n_layers)
    @nnx.vmap(in_axes=0, out_axes=0, axis_size=c.n_layers,
              transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make(rngs: nnx.Rngs) -> Block:
        return Block(c, rngs=rngs)

    return make(rngs)
