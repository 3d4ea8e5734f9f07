"""One RunConfig: built from a dict, TOML or flags, written back equal, one line per bad
field, and the FLOPs that `sweep plan`, `train` and the run record use agree per preset."""

import json

import pytest

from datalaws import load_record
from datalaws.cli import main
from datalaws.launch.sweep import expand, load_spec, plan_runs
from datalaws.model.config import ConfigError, RunConfig
from datalaws.model.flops import flops_per_token
from datalaws.model.transformer import PRESETS, ModelConfig


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from datalaws.data.store import embedded_corpus, prepare_domain, train_tokenizer

    tmp = tmp_path_factory.mktemp("cfg")
    corpus = embedded_corpus(max_docs=4)
    store = tmp / "store"
    train_tokenizer((d for v in corpus.values() for d in v), 300, store / "tokenizer.json")
    for d in ("code", "docs"):
        prepare_domain(store, d, corpus[d], progress=False)
    return store


def _flat(store, tmp_path, **kw):
    return {"preset": "tiny", "tokens": 32 * 8 * 6, "data": str(store), "seq_len": 32,
            "batch": 8, "mixture": "code=0.7,docs=0.3", "out": str(tmp_path / "run"),
            "run_id": "r", "save_every": 3, "eval_every": 3, "curve_windows": 2,
            "eval_windows": 2} | kw


def test_round_trip_through_dict_toml_and_flags(store, tmp_path):
    c = RunConfig.from_dict(_flat(store, tmp_path, schedule="wsd", mesh="fsdp=-1",
                                  profile_steps="2:3", eval_mix={"code": 1, "docs": 3},
                                  tasks=["a.jsonl"], unique_tokens=1000))
    assert c.model.vocab == 300 and c.model.seq_len == 32 and c.train.mesh == (1, -1, 1)
    assert c.train.eval_mix == {"code": 0.25, "docs": 0.75}
    d = c.to_dict()
    assert RunConfig.from_dict(d) == c
    assert RunConfig.from_dict(json.loads(json.dumps(d))) == c  # as the record stores it
    toml = tmp_path / "run.toml"  # tables, as a person would write them; flags win
    toml.write_text(f'preset = "mini"\ntokens = 1536\nrun_id = "r"\n[model]\nseq_len = 32\n'
                    f'[optimizer]\nbatch = 8\nlr = 0.01\n[data]\nstore = "{store}"\n'
                    f'mixture = {{code = 0.7, docs = 0.3}}\n[checkpoint]\n'
                    f'out = "{tmp_path / "run"}"\n')
    t = RunConfig.from_toml(toml, preset="tiny", lr=None)
    assert t.preset == "tiny" and t.train.lr == 0.01 and t.train.mixture == c.train.mixture
    assert RunConfig.from_dict(t.to_dict()) == t


def test_bad_fields_one_line_each(store, tmp_path):
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict(_flat(store, tmp_path, preset="huge", lr=-1, batch=2.5,
                                  warmup_frac=2, lrr=1, vocab=999, mixture="code=-1"))
    lines = str(e.value).splitlines()
    for field in ("preset = 'huge'", "lr = -1", "batch = 2.5", "warmup_frac = 2",
                  "lrr: unknown setting (did you mean lr?)", "vocab = 999", "mixture"):
        assert sum(line.startswith(field) for line in lines) == 1, (field, lines)
    assert len(lines) == 7
    with pytest.raises(ConfigError, match="^data = .*: not a token store"):
        RunConfig.from_dict(_flat(tmp_path, tmp_path))
    with pytest.raises(ConfigError, match="^tokens: missing$"):
        RunConfig.from_dict({k: v for k, v in _flat(store, tmp_path).items() if k != "tokens"})


def test_train_cli_refuses_a_bad_field_in_one_line(store, tmp_path, capsys):
    code = main(["train", "--preset", "tiny", "--tokens", "1e4", "--data", str(store),
                 "--mixture", "code=1", "--out", str(tmp_path / "run"), "--lr", "-3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "lr = -3.0: must be a positive number" in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("preset", PRESETS)
def test_plan_train_and_record_agree_on_flops(preset, store, tmp_path):
    spec = tmp_path / "sweep.toml"
    spec.write_text(f'out = "{tmp_path / "runs"}"\n[defaults]\ndata = "{store}"\n'
                    f'seq_len = 32\nbatch = 8\nmixture = "code=0.5,docs=0.5"\n'
                    f'[grid]\npreset = ["{preset}"]\ntokens = [3000]\n')
    (run,) = expand(load_spec(spec))
    (row,), notes = plan_runs([run])
    c = RunConfig.from_dict(run.config)  # what `datalaws train` builds for this run
    # train's count: the loop's flops_per_token of the TrainConfig's model, whole steps
    fpt = flops_per_token(c.train.model)
    assert not notes and c.model.vocab == 300 and c.model.seq_len == 32
    assert row["flops_per_token"] == fpt == c.flops_per_token
    assert row["tokens"] == c.steps * 8 * 32 == 2816 and row["flops"] == fpt * 2816
    # the old plan's defaults (seq_len 1024, vocab 32768) are not what train trains
    old = flops_per_token(ModelConfig.preset(preset, vocab=32768, seq_len=1024))
    assert old != fpt


def test_record_stores_the_config_and_its_flops(store, tmp_path):
    from datalaws.model.run import train

    c = RunConfig.from_dict(_flat(store, tmp_path, eval_every=0))
    assert train(c, progress=False) == 0
    rec = load_record(tmp_path / "run" / "r.record.json")
    assert RunConfig.from_dict(rec.config) == c
    assert rec.flops == c.flops and rec.tokens == c.trained_tokens


def test_plan_says_when_the_store_is_not_built(tmp_path, capsys):
    spec = tmp_path / "sweep.toml"
    spec.write_text(f'out = "{tmp_path / "runs"}"\n[defaults]\ndata = "{tmp_path / "none"}"\n'
                    'seq_len = 64\nmixture = "a=1"\n[grid]\npreset = ["mini"]\n'
                    'tokens = [1e5]\n')
    assert main(["sweep", "plan", str(spec)]) == 0
    err = capsys.readouterr().err
    assert "no tokenizer yet: FLOPs assume vocab 32768" in err and "set vocab" in err
