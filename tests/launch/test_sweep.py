"""Sweeps expand to stable ids, plan fast, and relaunch without redoing finished runs."""

import time

from datalaws.cli import main
from datalaws.launch.sweep import expand, load_spec, run_local, run_state
from datalaws.records import RunRecord, write_record

SPEC = """
out = "{out}"
[defaults]
data = "store"
seq_len = 64
[grid]
preset = {presets}
tokens = [1e5, 2e5, 4e5, 8e5, 1.6e6]
mixture = ["a=0.5,b=0.5", "a=0.2,b=0.8"]
seed = [0, 1]
"""


def _spec(tmp_path, presets='["tiny", "micro"]'):
    p = tmp_path / "sweep.toml"
    p.write_text(SPEC.format(out=tmp_path / "runs", presets=presets))
    return p


def test_ids_are_stable_and_distinct(tmp_path):
    a = expand(load_spec(_spec(tmp_path)))
    b = expand(load_spec(_spec(tmp_path)))
    assert [r.run_id for r in a] == [r.run_id for r in b]
    assert len({r.run_id for r in a}) == len(a) == 40
    assert a[0].config["mixture"] == {"a": 0.5, "b": 0.5}


def test_200_runs_expand_plan_and_status_fast(tmp_path, capsys):
    spec = _spec(tmp_path, '["tiny", "micro", "mini", "25m", "50m", "85m", "125m", "350m", '
                           '"760m", "1.5b"]')
    t0 = time.perf_counter()
    assert main(["sweep", "plan", str(spec)]) == 0
    assert main(["status", str(spec)]) == 0
    elapsed = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert "200 runs" in out and "pending: 200" in out
    print(f"200-run plan + status: {elapsed:.2f} s")


def test_relaunch_skips_finished_and_failed(tmp_path):
    runs = expand(load_spec(_spec(tmp_path)))[:3]
    write_record(RunRecord(run_id=runs[0].run_id, status="done"), runs[0].out)
    write_record(RunRecord(run_id=runs[1].run_id, status="diverged"), runs[1].out)
    assert run_state(runs[0])["state"] == "done"
    # the third run fails (its data store does not exist) and is marked failed
    codes = run_local(runs, parallel=1, progress=False)
    assert list(codes) == [runs[2].run_id] and codes[runs[2].run_id] != 0
    assert run_state(runs[2])["state"] == "failed"
    assert "not a token store" in (runs[2].out / "train.log").read_text()  # checked first
    assert run_local(runs, parallel=1, progress=False) == {}  # nothing resubmitted
    assert list(run_local(runs, parallel=1, progress=False, retry_failed=True)) == [
        runs[2].run_id]


def test_tpu_commands_as_text(tmp_path):
    from datalaws.launch.tpu import TpuProfile, write_tpu_script

    runs = expand(load_spec(_spec(tmp_path)))[:3]
    write_record(RunRecord(run_id=runs[0].run_id, status="done"), runs[0].out)
    script = write_tpu_script(runs, TpuProfile(name="v5p-64", zone="us-east5-a",
                                               project="lab"), tmp_path)
    text = script.read_text().splitlines()
    lines = [ln for ln in text if ln.startswith("gcloud") and "launch.task" in ln]
    assert len(lines) == 2  # the finished run is left out
    tasks = tmp_path / "tpu" / "tasks.json"  # copied to every worker before the first task
    copy = [ln for ln in text if " scp " in ln]
    assert copy == [f"gcloud compute tpus tpu-vm scp {tasks} v5p-64:{tasks} --zone=us-east5-a "
                    "--worker=all --project=lab"]
    assert text.index(copy[0]) < text.index(lines[0])
    for i, ln in enumerate(lines):
        assert ln.startswith("gcloud compute tpus tpu-vm ssh v5p-64 --zone=us-east5-a "
                             "--worker=all --project=lab --command=")
        assert f"datalaws.launch.task {tmp_path / 'tpu' / 'tasks.json'} {i}" in ln
        assert "DATALAWS_MULTIHOST=1" in ln
