"""Generation: the KV-cached loop equals recomputing the whole context; top-p and
temperature sample from the distribution they claim."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from datalaws.model.generate import generate, sample_logits
from datalaws.model.train import make_mesh
from datalaws.model.transformer import ModelConfig, Transformer


@pytest.fixture(scope="module")
def model():
    c = ModelConfig.preset("tiny", vocab=50, seq_len=40, dtype="float32")
    with jax.set_mesh(make_mesh((1, 1, 1))):
        m = Transformer(c, rngs=nnx.Rngs(3))
    # larger weights than init so the argmax path is not flat
    nnx.update(m, jax.tree.map(lambda x: x * 8, nnx.state(m, nnx.Param)))
    return m


def test_cached_greedy_equals_full_recompute(model):
    prompts = np.random.default_rng(0).integers(0, 50, (3, 7))
    fast = generate(model, prompts, 20, temperature=0)
    forward = nnx.jit(lambda m, x: m(x))
    seq = np.zeros((3, 27), np.int32)  # causal: positions after t do not affect logits at t
    seq[:, :7] = prompts
    for t in range(7, 27):  # no cache: rerun the whole prefix each step
        seq[:, t] = np.argmax(np.asarray(forward(model, jnp.asarray(seq)))[:, t - 1], -1)
    np.testing.assert_array_equal(fast, seq[:, 7:])
    assert len(np.unique(fast)) > 3  # the model does not emit a constant


def test_cached_logits_equal_forward_pass(model):
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 50, (2, 12)))
    full = model(tokens)
    caches = model.init_cache(2, 12)
    pre, caches = model.decode(tokens[:, :5], jnp.int32(0), caches)
    steps = [pre]
    for t in range(5, 12):
        logits, caches = model.decode(tokens[:, t:t + 1], jnp.int32(t), caches)
        steps.append(logits)
    # float32 roundoff of two summation orders, on logits up to ~23 (weights x 8)
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=5e-4)


def test_top_p_samples_only_the_nucleus_in_proportion():
    probs = np.array([0.5, 0.25, 0.15, 0.06, 0.04])
    logits = jnp.log(jnp.asarray(np.tile(probs, (20000, 1))))
    toks = np.asarray(sample_logits(logits, jax.random.key(0), top_p=0.8))
    # nucleus for 0.8: {0.5, 0.25, 0.15} (mass before the third is 0.75 < 0.8)
    freq = np.bincount(toks, minlength=5) / len(toks)
    assert freq[3] == 0 and freq[4] == 0
    np.testing.assert_allclose(freq[:3], probs[:3] / probs[:3].sum(), atol=0.015)
    full = np.bincount(np.asarray(sample_logits(logits, jax.random.key(1))), minlength=5)
    np.testing.assert_allclose(full / len(toks), probs, atol=0.015)
    # temperature 0.5 squares the odds
    hot = np.bincount(np.asarray(sample_logits(logits, jax.random.key(2), temperature=0.5)),
                      minlength=5) / len(toks)
    np.testing.assert_allclose(hot, probs**2 / (probs**2).sum(), atol=0.015)


def test_eod_stops_a_row_and_vocab_limit_holds(model):
    prompts = np.random.default_rng(2).integers(0, 50, (8, 4))
    out = generate(model, prompts, 30, rng=5, eod=0, vocab_limit=10)
    assert out.max() < 10
    for row in out:
        hit = np.flatnonzero(row == 0)
        if hit.size:
            assert (row[hit[0]:] == 0).all()


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="exceeds the model's context"):
        generate(model, np.zeros((1, 30), int), 20)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, np.zeros((1, 3), int), 2, top_p=0)
