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
    c = TrainConfig(model=ModelConfig.preset("tiny", vocab=300, seq_len=32), tokens=32 * 8 * 100,
                    batch=8, save_every=50, run_id="t", mixture={"code": 1.0})
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
    np.testing.assert_allclose(nll[0], manual, rtol=1e-3)  # bf16: jit vs eager
    assert count[0] == 29
    # code (the teacher's training data) is less surprising than prose
    code = json.loads((store / "code" / "meta.json").read_text())["syntheticity"]
    assert code > meta["syntheticity"]


def test_teacher_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoints"):
        load_model(tmp_path)


def _doc_set(store, domain):
    from datalaws.data.curate import read_docs

    return {tuple(d) for d in read_docs(store, domain)[0]}


def test_pools_split_by_quantiles_best_first(store_and_teacher, capsys):
    from datalaws.data.curate import read_docs

    store, _ = store_and_teacher
    assert main(["data", "pools", str(store), "docs", "--by", "diversity",
                 "--quantiles", "0.3,0.7"]) == 0
    assert "docs_p1" in capsys.readouterr().out
    div = [read_docs(store, f"docs_p{i}")[1]["diversity"] for i in (1, 2, 3)]
    assert div[0].min() >= div[1].max() and div[1].min() >= div[2].max()
    assert sum(map(len, div)) == len(read_docs(store, "docs")[0])
    metas = [json.loads((store / f"docs_p{i}" / "meta.json").read_text()) for i in (1, 2, 3)]
    assert metas[0]["diversity"] > metas[2]["diversity"] and metas[0]["pool_rank"] == 1
    assert _doc_set(store, "docs_p1") <= _doc_set(store, "docs")
    # pools are ordinary domains: a loader reads them
    tokens, _ = open_domain(store, "docs_p2")
    assert tokens.shape[0] == metas[1]["tokens"]


def test_pool_errors_name_the_problem(store_and_teacher):
    from datalaws.data.curate import make_pools
    from datalaws.data.store import StoreError

    store, _ = store_and_teacher
    with pytest.raises(StoreError, match="no per-document column 'perplexity'"):
        make_pools(store, "docs", by="perplexity", quantiles=[0.5])
    with pytest.raises(StoreError, match="would be empty"):
        make_pools(store, "docs", by="diversity", thresholds=[5.0], prefix="x")
    with pytest.raises(StoreError, match="missing or incomplete"):
        make_pools(store, "nope", by="diversity", quantiles=[0.5])


def test_dsir_selection_prefers_the_target(store_and_teacher):
    from datalaws.data.store import embedded_corpus

    store, _ = store_and_teacher
    corpus = embedded_corpus(max_docs=3)
    prepare_domain(store, "mixed", corpus["code"][:60] + corpus["docs"][60:120], progress=False)
    mixed = json.loads((store / "mixed" / "meta.json").read_text())
    assert main(["data", "select", str(store), "--from", "mixed", "--like", "docs",
                 "--tokens", str(mixed["tokens"] // 5), "--out", "picked"]) == 0
    picked = _doc_set(store, "picked")
    code = _doc_set(store, "code")
    # half the raw documents are code, but the selection toward prose takes almost none
    assert len(picked & code) <= 0.1 * len(picked)
    meta = json.loads((store / "picked" / "meta.json").read_text())
    assert meta["selected_like"] == "docs" and meta["tokens"] >= mixed["tokens"] // 5


def test_synthesized_domain_is_more_teacher_like(store_and_teacher, capsys):
    store, teacher = store_and_teacher
    assert main(["data", "synthesize", str(store), "--model", str(teacher), "--from", "code",
                 "--tokens", "600", "--out", "code_syn", "--prompt-tokens", "8",
                 "--temperature", "0.5", "--top-p", "0.8", "--batch", "8"]) == 0
    meta = json.loads((store / "code_syn" / "meta.json").read_text())
    assert meta["synthesized_from"] == "code" and meta["docs"] > 5 and meta["tokens"] > 300
    assert main(["data", "synthesize", str(store), "--model", str(teacher), "--from", "code",
                 "--tokens", "10", "--out", "code_syn"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["data", "quality", str(store), "--teacher", str(teacher)]) == 0
    syn = json.loads((store / "code_syn" / "meta.json").read_text())["syntheticity"]
    real = json.loads((store / "code" / "meta.json").read_text())["syntheticity"]
    assert syn > real  # the seed's premise: model samples are low-perplexity to a teacher
