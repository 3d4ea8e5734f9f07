"""Sampling from a trained model with a KV cache: temperature and nucleus (top-p).

``generate(model, prompts_BP, max_new)`` runs the prompt through the model once (prefill),
then one token per step under ``jax.lax.scan``, each step reading and extending a per-layer
cache of keys and values (``Transformer.decode``), so a step costs O(context), not
O(context^2). The whole loop is one jitted call per (batch, prompt length, max_new) shape.
data/ uses it to synthesize domains; the same checkpoint scores syntheticity as a teacher.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from datalaws.model.transformer import Transformer

__all__ = ["generate", "sample_logits", "ModelSampler", "teacher_sampler"]


def sample_logits(logits_BV: jax.Array, rng: jax.Array, *, temperature: float = 1.0,
                  top_p: float = 1.0) -> jax.Array:
    """One token per row: greedy at temperature 0, else softmax(logits / temperature)
    restricted to the smallest set of tokens whose probability reaches ``top_p``."""
    if temperature == 0:
        return jnp.argmax(logits_BV, axis=-1)
    logits_BV = logits_BV / temperature
    if top_p < 1:
        sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
        probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
        # a token is in the nucleus if the mass strictly before it is below top_p
        keep_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV < top_p
        cutoff_B1 = jnp.min(jnp.where(keep_BV, sorted_BV, jnp.inf), axis=-1, keepdims=True)
        logits_BV = jnp.where(logits_BV >= cutoff_B1, logits_BV, -jnp.inf)
    return jax.random.categorical(rng, logits_BV, axis=-1)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new", "temperature", "top_p",
                                             "vocab_limit", "eod"))
def _generate(graphdef, state, prompts_BP, rng, *, max_new, temperature, top_p, vocab_limit,
              eod):
    model = nnx.merge(graphdef, state)
    B, P = prompts_BP.shape
    caches = model.init_cache(B, P + max_new)
    logits_BTV, caches = model.decode(prompts_BP, jnp.int32(0), caches)

    def step(carry, i):
        logits_BV, caches, done_B, rng = carry
        rng, key = jax.random.split(rng)
        if vocab_limit is not None:  # ids the tokenizer cannot decode are never sampled
            logits_BV = jnp.where(jnp.arange(logits_BV.shape[-1]) < vocab_limit, logits_BV,
                                  -jnp.inf)
        tok_B = sample_logits(logits_BV, key, temperature=temperature, top_p=top_p)
        if eod is not None:  # a finished row keeps emitting end-of-document
            tok_B = jnp.where(done_B, eod, tok_B)
            done_B = done_B | (tok_B == eod)
        logits_B1V, caches = model.decode(tok_B[:, None].astype(prompts_BP.dtype), P + i,
                                          caches)
        return (logits_B1V[:, 0], caches, done_B, rng), tok_B

    init = (logits_BTV[:, -1], caches, jnp.zeros(B, bool), rng)
    _, toks_NB = jax.lax.scan(step, init, jnp.arange(max_new))
    return toks_NB.T


def generate(model: Transformer, prompts_BP: np.ndarray | jax.Array, max_new: int, *,
             rng: jax.Array | int = 0, temperature: float = 1.0, top_p: float = 1.0,
             eod: int | None = None, vocab_limit: int | None = None) -> np.ndarray:
    """``max_new`` sampled tokens [B, max_new] continuing each prompt row (equal lengths).

    Rows that emit ``eod`` are padded with it afterwards. ``vocab_limit`` keeps sampling to
    ids below it (a model may have a larger vocabulary than its tokenizer).
    """
    prompts_BP = jnp.asarray(prompts_BP, jnp.int32)
    if prompts_BP.ndim != 2 or prompts_BP.shape[1] < 1:
        raise ValueError(f"prompts must be [batch, length >= 1]; got {prompts_BP.shape}")
    if max_new < 1:
        raise ValueError(f"max_new={max_new} must be >= 1")
    if prompts_BP.shape[1] + max_new > model.c.seq_len:
        raise ValueError(f"prompt length {prompts_BP.shape[1]} + max_new {max_new} exceeds "
                         f"the model's context {model.c.seq_len}")
    if not 0 < top_p <= 1 or temperature < 0:
        raise ValueError(f"need 0 < top_p <= 1 and temperature >= 0; got {top_p}, "
                         f"{temperature}")
    rng = jax.random.key(rng) if isinstance(rng, int) else rng
    graphdef, state = nnx.split(model)
    return np.asarray(_generate(graphdef, state, prompts_BP, rng, max_new=max_new,
                                temperature=float(temperature), top_p=float(top_p),
                                vocab_limit=vocab_limit, eod=eod))


class ModelSampler:
    """A trained model as ``datalaws.data.curate.Sampler``: what synthesis calls."""

    def __init__(self, model: Transformer):
        self.model, self.vocab, self.seq_len = model, model.c.vocab, model.c.seq_len

    def __call__(self, prompts_BP: np.ndarray, max_new: int, *, rng: int, eod: int,
                 temperature: float, top_p: float, vocab_limit: int) -> np.ndarray:
        return generate(self.model, prompts_BP, max_new, rng=rng, eod=eod,
                        temperature=temperature, top_p=top_p, vocab_limit=vocab_limit)


def teacher_sampler(run_dir: str) -> ModelSampler:
    """The latest checkpoint of a training run, ready to synthesize with."""
    from datalaws.model.score import load_model

    return ModelSampler(load_model(run_dir))
