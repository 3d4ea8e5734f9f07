"""Syntheticity: 1 / perplexity under a teacher checkpoint, per document and per domain."""

import json

import numpy as np
import optax
import pytest

from datalaws.cli import main
from datalaws.data.store import open_domain, prepare_domain, train_tokenizer
from datalaws.model.score import document_nll, load_model
from datalaws.model.train import CheckpointError, TrainConfig, train
from datalaws.model.transformer import ModelConfig


@pytest.fixture(scope="module")
def store_and_teacher(tmp_path_factory):
    from datalaws.data.store import embedded_corpus

    tmp = tmp_path_factory.mktemp("q")
    corpus = embedded_corpus(max_docs=3)
    store = tmp / "store"
    store.mkdir()
    train_tokenizer((d for v in corpus.values() for d in v), 300, store / "tokenizer.json")
    for d in ("code", "docs"):
        prepare_domain(store, d, corpus[d][:60], progress=False)
    stream = np.asarray(open_domain(store, "code")[0].read().result())
    c = TrainConfig(model=ModelConfig.preset("tiny", vocab=300, seq_len=32), tokens=32 * 8 * 20,
                    batch=8, save_every=10, run_id="t", mixture={"code": 1.0})
    train(c, {"code": stream}, tmp / "teacher", eod=0, progress=False)
    return store, tmp / "teacher"


def test_syntheticity_is_inverse_perplexity(store_and_teacher):
    store, teacher = store_and_teacher
    assert main(["data", "quality", str(store), "--teacher", str(teacher), "--max-docs",
                 "20"]) == 0
    meta = json.loads((store / "docs" / "meta.json").read_text())
    assert meta["syntheticity_docs"] == 20 and 0 < meta["syntheticity"] < 1
    # recompute one document by hand with the teacher's logits
    model = load_model(teacher)
    tokens = np.asarray(open_domain(store, "docs")[0].read().result())
    doc = tokens[:30]  # one window: the same context as a plain forward pass
    nll, count = document_nll(model, [doc])
    logits = np.asarray(model(doc[None, :-1]))
    manual = float(optax.softmax_cross_entropy_with_integer_labels(logits, doc[None, 1:]).sum())
    np.testing.assert_allclose(nll[0], manual, rtol=1e-4)
    assert count[0] == 29
    # code (the teacher's training data) is less surprising than prose
    code = json.loads((store / "code" / "meta.json").read_text())["syntheticity"]
    assert code > meta["syntheticity"]


def test_teacher_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoints"):
        load_model(tmp_path)
