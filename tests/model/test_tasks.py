"""Multiple-choice scoring: layouts load, a model that knows the answer gets it right."""

import json

import numpy as np
import pytest
from flax import nnx

from datalaws.model.tasks import builtin_tasks, chance, evaluate_tasks, load_task
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


def test_builtin_tasks_have_four_choices_and_the_answer():
    corpus = {"code": ["\n".join(f"line number {i} of doc {d} xxxxxxxx" for i in range(10))
                       for d in range(6)]}
    tasks = builtin_tasks(corpus, n=20)
    items = tasks["nextline_code"]
    assert len(items) == 20 and chance(items) == 0.25
    for it in items:
        true = it["choices"][it["label"]]
        doc = int(true.split("doc ")[1].split()[0])
        assert f"of doc {doc}" in it["context"]
