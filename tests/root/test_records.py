import json
import subprocess
import sys
import time

import pytest

from datalaws import RecordError, RunRecord, load_record, read_records, write_record
from datalaws.cli import main


def _record(i: int, **kw) -> RunRecord:
    base = dict(run_id=f"run{i:03d}", status="done", params=1000 * (i + 1), tokens=10**6,
                mixture={"web": 0.25, "code": 0.75}, eval_losses={"web": 3.0}, loss=3.1,
                accuracy={"copa": 0.6}, config={"payload": "x" * 20000})
    base.update(kw)
    return RunRecord(**base)


def test_roundtrip_and_columns(tmp_path):
    write_record(_record(0), tmp_path)
    write_record(_record(1, mixture={"web": 1.0}), tmp_path)
    df = read_records(tmp_path)
    assert list(df.run_id) == ["run000", "run001"]
    assert {"params", "tokens", "mix.web", "mix.code", "loss.web", "acc.copa"} <= set(df.columns)
    assert df.loc[1, "mix.code"] == 0.0  # absent domain is proportion 0
    assert load_record(tmp_path / "run000.record.json") == _record(0)


def test_schema_validation():
    with pytest.raises(RecordError, match="status"):
        _record(0, status="finished")
    with pytest.raises(RecordError, match="sums to"):
        _record(0, mixture={"a": 0.5, "b": 0.6})
    with pytest.raises(RecordError, match="schema_version"):
        RunRecord.from_dict({"run_id": "x", "status": "done", "schema_version": 99})


@pytest.mark.parametrize("run_id", ["../up", "a/b", ".hidden"])
def test_a_record_never_lands_outside_its_folder(tmp_path, run_id):
    (tmp_path / "runs").mkdir()
    with pytest.raises(RecordError, match="plain file name"):
        write_record(_record(0, run_id=run_id), tmp_path / "runs")
    assert [p.name for p in tmp_path.rglob("*")] == ["runs"]


WRITER = """
import sys
from datalaws import RunRecord, write_record
i, d = int(sys.argv[1]), sys.argv[2]
for k in range(20):  # rewrite the same record many times to race the reader
    write_record(RunRecord(run_id=f"run{i:03d}", status="done", params=k,
                           config={"payload": "x" * 50000}), d)
"""


def test_64_concurrent_writers_and_a_reader(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(i), str(tmp_path)])
             for i in range(64)]
    seen_bad = []
    while any(p.poll() is None for p in procs):
        for f in tmp_path.glob("*.record.json"):
            try:
                json.loads(f.read_text())
            except json.JSONDecodeError:
                seen_bad.append(f)
            except FileNotFoundError:
                pass
        time.sleep(0.005)
    assert all(p.returncode == 0 for p in procs)
    assert not seen_bad, f"partial records were visible: {seen_bad[:3]}"
    df = read_records(tmp_path, strict=True)
    assert len(df) == 64 and (df.params == 19).all()
    assert not list(tmp_path.glob(".*")), "temporary files left behind"


def test_collect_skips_truncated_file(tmp_path, capsys):
    for i in range(3):
        write_record(_record(i), tmp_path)
    bad = tmp_path / "run001.record.json"
    bad.write_text(bad.read_text()[:100])
    out = tmp_path / "table.csv"
    assert main(["collect", str(tmp_path), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "run001.record.json" in err and "truncated" in err
    import pandas as pd

    assert list(pd.read_csv(out).run_id) == ["run000", "run002"]
    assert main(["collect", str(tmp_path), "--out", str(tmp_path / "t.parquet"),
                 "--strict"]) == 1


def test_collect_parquet(tmp_path):
    write_record(_record(0), tmp_path / "a")
    out = tmp_path / "t.parquet"
    assert main(["collect", str(tmp_path), "--out", str(out)]) == 0
    import pandas as pd

    assert pd.read_parquet(out).loc[0, "mix.code"] == 0.75


def test_collect_missing_dir(tmp_path, capsys):
    assert main(["collect", str(tmp_path / "nope"), "--out", str(tmp_path / "t.csv")]) == 1
    assert "no such directory" in capsys.readouterr().err


def test_cli_help_lists_commands():
    r = subprocess.run([sys.executable, "-m", "datalaws.cli", "--help"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "collect" in r.stdout and "env" in r.stdout


def test_env_lists_devices(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "jax" in out and "numpyro" in out and "devices" in out


@pytest.fixture(scope="module")
def store_runs(tmp_path_factory):
    """Two tiny runs with different mixtures on one three-domain store."""
    from datalaws.data.store import embedded_corpus, prepare_domain, train_tokenizer
    from datalaws.model.cli import run_from_dict

    tmp = tmp_path_factory.mktemp("eval")
    corpus = embedded_corpus(max_docs=4)
    corpus["docstrings"] = corpus["docstrings"][:60]
    store = tmp / "store"
    train_tokenizer((d for v in corpus.values() for d in v), 300, store / "tokenizer.json")
    for d in ("code", "docs", "docstrings"):
        prepare_domain(store, d, corpus[d], progress=False)
    for name, mix in (("a", {"code": 0.8, "docs": 0.2}), ("b", {"docs": 1.0})):
        assert run_from_dict({"data": str(store), "preset": "tiny", "seq_len": 32, "batch": 8,
                              "tokens": 32 * 8 * 12, "mixture": mix, "run_id": name,
                              "out": str(tmp / "runs" / name), "eval_every": 4,
                              "eval_windows": 8, "curve_windows": 4, "save_every": 100}) == 0
    return store, tmp / "runs"


def test_runs_share_validation_set_and_composition(store_runs):
    from datalaws.data.store import store_validation

    store, runs = store_runs
    a, b = (load_record(runs / n / f"{n}.record.json") for n in ("a", "b"))
    # every domain of the store, whatever the mixture (b never trains on code)
    assert set(a.eval_losses) == set(b.eval_losses) == {"code", "docs", "docstrings"}
    assert a.validation == b.validation and a.validation["hash"] == store_validation(store)[
        "hash"]
    # the default composition: each domain's share of the store's tokens, the same for both
    sizes = {d: json.loads((store / d / "meta.json").read_text())["tokens"]
             for d in a.eval_losses}
    for r in (a, b):
        assert r.eval_mix == pytest.approx({d: n / sum(sizes.values()) for d, n in sizes.items()})
        assert r.loss == pytest.approx(sum(r.eval_mix[d] * r.eval_losses[d] for d in sizes))
        assert r.schedule["name"] == "cosine" and r.chance  # built-in tasks, with chance
        assert set(r.accuracy) == set(r.chance) and all(v == 0.25 for v in r.chance.values())
    df = read_records(runs)
    assert {"loss.code", "loss.docs", "loss.docstrings", "chance.next1_xdomain"} <= set(
        df.columns) and df.valid_hash.nunique() == 1


def test_collect_curves_and_refuses_mixed_validation(store_runs, tmp_path, capsys):
    import shutil

    import pandas as pd

    _, runs = store_runs
    out, curves = tmp_path / "runs.csv", tmp_path / "curves.csv"
    assert main(["collect", str(runs), "--out", str(out), "--curves", str(curves)]) == 0
    c = pd.read_csv(curves)
    assert list(c[c.run_id == "a"].step) == [4, 8, 12]  # one row per (run, eval step)
    assert {"tokens", "train_loss", "loss", "loss.code", "mix.code", "params"} <= set(c.columns)
    row = c.iloc[0]
    rec = load_record(runs / "a" / "a.record.json")
    assert row.loss == pytest.approx(sum(w * row[f"loss.{d}"] for d, w in rec.eval_mix.items()))
    # a run evaluated on another validation set: refused unless told
    other = tmp_path / "mixed"
    shutil.copytree(runs, other)
    path = other / "b" / "b.record.json"
    d = json.loads(path.read_text())
    d["validation"]["hash"] = "0" * 16
    path.write_text(json.dumps(d))
    assert main(["collect", str(other), "--out", str(tmp_path / "m.csv")]) == 1
    assert "2 different validation sets" in capsys.readouterr().err
    assert main(["collect", str(other), "--out", str(tmp_path / "m.csv"),
                 "--mixed-validation"]) == 0
