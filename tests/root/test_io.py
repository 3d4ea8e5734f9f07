"""datalaws.io: modes under the umask, JSON without NaN, torn JSON lines, output checks."""

import json
import os
import stat

import numpy as np
import pandas as pd
import pytest

from datalaws import RunRecord, load_record, write_record
from datalaws.cli import main
from datalaws.io import (
    OutputError,
    atomic_write_text,
    building_dir,
    check_output_dir,
    check_output_file,
    dumps_json,
    loads_json,
    read_jsonl,
)


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_files_and_folders_get_the_umask_modes_not_0600(tmp_path, umask):
    f = atomic_write_text(tmp_path / "a" / "x.json", "{}")
    assert _mode(f) == 0o666 & ~umask  # 0644 under the usual 022, never mkstemp's 0600
    with building_dir(tmp_path / "store") as d:
        (d / "f").write_text("x")
    assert _mode(tmp_path / "store") == 0o777 & ~umask
    rec = write_record(RunRecord(run_id="r", status="done", params=1, tokens=1, loss=2.0),
                       tmp_path / "runs")
    assert _mode(rec) == 0o666 & ~umask
    assert main(["collect", str(tmp_path / "runs"), "--out", str(tmp_path / "t.parquet")]) == 0
    assert _mode(tmp_path / "t.parquet") == 0o666 & ~umask


def test_failed_build_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with building_dir(tmp_path / "store") as d:
            (d / "half").write_text("x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def _strict(text):
    def no(c):
        raise ValueError(f"invalid JSON constant {c}")
    return json.loads(text, parse_constant=no)


def test_json_never_holds_nan_and_reads_back(tmp_path):
    d = {"loss": float("nan"), "q": [1.0, float("inf"), np.float32(-np.inf)], "n": np.int64(3)}
    text = dumps_json(d)
    obj = _strict(text)  # valid JSON: no NaN / Infinity tokens
    assert obj["loss"] is None and obj["_nonfinite"] == {"/loss": "nan", "/q/1": "inf",
                                                         "/q/2": "-inf"}
    back = loads_json(text)
    assert np.isnan(back["loss"]) and back["q"][1:] == [np.inf, -np.inf] and back["n"] == 3
    assert "_nonfinite" not in back
    rec = write_record(RunRecord(run_id="r", status="diverged", loss=None,
                                 eval_losses={"web": float("nan")}), tmp_path)
    _strict(rec.read_text())
    assert np.isnan(load_record(rec).eval_losses["web"])


def test_jsonl_torn_last_line_is_dropped_corrupt_middle_is_an_error(tmp_path):
    f = tmp_path / "m.jsonl"
    f.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert read_jsonl(f) == [{"step": 1}, {"step": 2}]
    f.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"m.jsonl:2"):
        read_jsonl(f)


def test_output_checks(tmp_path):
    (tmp_path / "t.csv").write_text("x")
    with pytest.raises(OutputError, match="--force"):
        check_output_file(tmp_path / "t.csv")
    assert check_output_file(tmp_path / "t.csv", force=True)
    with pytest.raises(OutputError, match=".csv or .parquet"):
        check_output_file(tmp_path / "t.xlsx", suffixes=(".csv", ".parquet"))
    with pytest.raises(OutputError, match="is a file"):
        check_output_file(tmp_path / "t.csv" / "x.csv")
    with pytest.raises(OutputError, match="is a file"):
        check_output_dir(tmp_path / "t.csv")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    with pytest.raises(OutputError, match="not empty"):
        check_output_dir(tmp_path / "d")


def test_predict_writes_the_format_its_extension_names(tmp_path):
    from datalaws.io import write_table

    df = pd.DataFrame({"a": [1.0, 2.0]})
    write_table(df, tmp_path / "x.parquet")
    assert pd.read_parquet(tmp_path / "x.parquet").equals(df)  # parquet, not CSV text
    write_table(df, tmp_path / "x.csv")
    assert pd.read_csv(tmp_path / "x.csv").equals(df)
