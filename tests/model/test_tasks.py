"""Multiple-choice scoring: layouts load, a model that knows the answer gets it right."""

import json

import numpy as np
import pytest
from flax import nnx

from datalaws.model.tasks import LEVELS, builtin_tasks, chance, evaluate_tasks, load_task
from datalaws.model.train import make_mesh
from datalaws.model.transformer import ModelConfig, Transformer


def test_layouts(tmp_path):
    f = tmp_path / "t.jsonl"
    rows = [{"context": "a", "choices": ["b", "c"], "label": 1},
            {"ctx": "x", "endings": ["1", "2", "3", "4"], "label": "2"},
            {"question": "q?", "choices": {"text": ["u", "v"], "label": ["A", "B"]},
             "answerKey": "B"},
            {"goal": "g", "sol1": "s", "sol2": "t", "label": 0}]
    f.write_text("\n".join(json.dumps(r) for r in rows))
    items = load_task(f)
    assert [it["label"] for it in items] == [1, 2, 1, 0]
    assert items[1]["choices"][0] == " 1" and chance(items) == pytest.approx((0.5 * 3 + 0.25) / 4)
    f.write_text('{"prompt": "x"}')
    with pytest.raises(ValueError, match="t.jsonl:1: not a known"):
        load_task(f)


def test_scoring_follows_the_model_and_normalises_by_bytes():
    import jax

    with jax.set_mesh(make_mesh((1, 1, 1))):
        model = Transformer(ModelConfig.preset("tiny", vocab=16, seq_len=16, dtype="float32"),
                            rngs=nnx.Rngs(0))
    # a model whose output layer always prefers token 3: choices made of 3s score highest
    w = np.zeros(model.unembed.kernel.shape, np.float32)
    w[:, 3] = 50.0
    model.unembed.kernel[...] = w

    def encode(s):
        return [int(ch) for ch in s]

    items = [{"context": "12", "choices": ["45", "33", "12"], "label": 1},
             {"context": "1", "choices": ["3", "44"], "label": 0}]
    out = evaluate_tasks(model, {"t": items}, encode)
    assert out["t"] == 1.0 and out["t_norm"] == 1.0


def _markov_corpus(seed=0):
    """Two domains of documents from sparse Markov chains over one alphabet (the next letter
    follows from the last one; the unigram frequencies alone say nothing about it)."""
    rng = np.random.default_rng(seed)
    alphabet = np.array(list("abcdefghijklmnop"))
    corpus, nexts = {}, {}
    for domain in ("left", "right"):
        succ = {a: rng.choice(len(alphabet), 2, replace=False) for a in range(len(alphabet))}
        docs = []
        for _ in range(8):
            x = [int(rng.integers(len(alphabet)))]
            for _ in range(199):
                x.append(int(rng.choice(succ[x[-1]])))
            docs.append("".join(alphabet[x]))
        corpus[domain], nexts[domain] = docs, succ
    return corpus, nexts


def _chars(s):
    return [ord(ch) for ch in s]


def _text(ids):
    return "".join(map(chr, ids))


def test_builtin_tasks_are_graded_continuations_of_equal_length():
    corpus, _ = _markov_corpus()
    tasks = builtin_tasks(corpus, _chars, _text, n=40)
    assert list(tasks) == [name for name, _, _ in LEVELS]
    for name, span, source in LEVELS:
        items = tasks[name]
        assert len(items) == 40 and chance(items) == 0.25
        for it in items:
            true = it["choices"][it["label"]]
            assert {len(c) for c in it["choices"]} == {span} and len(set(it["choices"])) == 4
            home = [d for d, docs in corpus.items() if any(it["context"] + true in x for x in docs)]
            assert home, "the answer continues its context in some document"
            docs = [x for x in corpus[home[0]] if it["context"] + true in x]
            others = [x for d in corpus if d != home[0] for x in corpus[d]]
            where = {"same": docs, "doc": corpus[home[0]], "domain": others}[source]
            assert all(any(c in x for x in where) for c in it["choices"] if c != true)
    # one domain: no cross-domain task, the others are still made
    assert "next1_xdomain" not in builtin_tasks({"left": corpus["left"]}, _chars, _text, n=5)


def test_only_the_context_tells_the_answer():
    """A scorer that ignores the context (unigram frequencies) sits at chance on the
    same-domain levels; one that reads the last letter (the chain's bigram) is far above."""
    corpus, nexts = _markov_corpus(1)
    tasks = builtin_tasks(corpus, _chars, _text, n=400, seed=1)
    text = "".join(x for docs in corpus.values() for x in docs)
    logf = {ch: np.log(text.count(ch) / len(text)) for ch in set(text)}
    for name in ("next4_xdoc", "next8_samedoc"):
        unigram = bigram = 0
        for it in tasks[name]:
            u = [sum(logf[ch] for ch in c) for c in it["choices"]]
            unigram += int(np.argmax(u) == it["label"])
            prev = it["context"][-1]
            domain = next(d for d, docs in corpus.items()
                          if any(it["context"] + it["choices"][it["label"]] in x for x in docs))
            ok = [ord(c[0]) - ord("a") in nexts[domain][ord(prev) - ord("a")]
                  for c in it["choices"]]
            bigram += int(ok[it["label"]] and sum(ok) == 1)
        n = len(tasks[name])
        assert abs(unigram / n - 0.25) < 0.07, (name, unigram / n)  # binomial 3.2 sd at n=400
        assert bigram / n > 0.5, (name, bigram / n)
