"""The SLURM executor against a real single-node SLURM (../shared/slurm/start.sh)."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from datalaws.launch.slurm import (
    ALIVE,
    SlurmProfile,
    queued_runs,
    sbatch_script,
    submit,
    task_states,
)
from datalaws.launch.sweep import Run, run_state, status

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="session")
def slurm():
    if shutil.which("sbatch") is None:
        pytest.skip("sbatch not found: SLURM is not installed (.ci/run starts it)")
    start = Path(__file__).resolve().parents[3] / "shared" / "slurm" / "start.sh"
    if start.exists() and os.geteuid() == 0:
        subprocess.run(["bash", str(start)], capture_output=True, timeout=300)
    if subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        pytest.skip("no SLURM controller answers (sinfo failed)")


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    from datalaws.data.store import embedded_corpus, prepare_domain, train_tokenizer

    s = tmp_path_factory.mktemp("store")
    corpus = embedded_corpus(max_docs=4)
    train_tokenizer((d for v in corpus.values() for d in v), 300, s / "tokenizer.json")
    for d in ("code", "docs"):
        prepare_domain(s, d, corpus[d], progress=False)
    return s


def _runs(tmp_path, store, n, steps=30, **extra):
    base = {"data": str(store), "preset": "tiny", "seq_len": 64, "batch": 8,
            "tokens": 64 * 8 * steps, "save_every": 5, "mixture": {"code": 0.5, "docs": 0.5}}
    runs = []
    for i in range(n):
        cfg = base | {"seed": i, "run_id": f"r{i}", "out": str(tmp_path / "runs" / f"r{i}")} | extra
        runs.append(Run(cfg["run_id"], cfg))
    return runs


def _wait(tmp_path, timeout=900):
    t0 = time.time()
    while queued_runs(tmp_path):
        assert time.time() - t0 < timeout, "array tasks did not finish"
        time.sleep(0.5)


def test_script_text():
    s = sbatch_script(SlurmProfile(partition="gpu", throttle=3, gpus_per_task=8, nodes=2,
                                   time="04:00:00"), Path("/x/t.json"), 10, Path("/x/log"),
                      "datalaws-s")
    for line in ("#SBATCH --array=0-9%3", "#SBATCH --requeue", "#SBATCH --partition=gpu",
                 "#SBATCH --gpus-per-task=8", "#SBATCH --nodes=2", "#SBATCH --time=04:00:00"):
        assert line in s
    assert "srun " in s and '"$SLURM_ARRAY_TASK_ID"' in s


def test_array_finishes_with_records_and_failure_is_reported(slurm, store, tmp_path):
    runs = _runs(tmp_path, store, 4)
    bad = Run("bad", runs[0].config | {"run_id": "bad", "out": str(tmp_path / "runs" / "bad"),
                                       "mixture": {"nope": 1.0}})
    job = submit(runs + [bad], SlurmProfile(throttle=2), tmp_path)
    assert job is not None
    # while tasks are queued or running a second launch submits nothing new
    assert submit(runs + [bad], SlurmProfile(throttle=2), tmp_path) is None
    _wait(tmp_path)
    for r in runs:
        assert run_state(r)["state"] == "done", (tmp_path / "slurm").iterdir()
    st = run_state(bad)
    assert st["state"] == "failed" and st["exit_code"] == 1
    logs = "".join(p.read_text() for p in (tmp_path / "slurm").glob("*.out"))
    assert "mixture names domain(s) ['nope']" in logs  # one line naming the bad domain
    # finished runs are skipped; the failed one only comes back when asked
    assert submit(runs + [bad], SlurmProfile(), tmp_path) is None
    assert submit(runs + [bad], SlurmProfile(), tmp_path, retry_failed=True) is not None
    _wait(tmp_path)


def test_scancel_then_relaunch_resumes(slurm, store, tmp_path):
    (run,) = _runs(tmp_path, store, 1, steps=2000)
    job = submit([run], SlurmProfile(), tmp_path)
    ck = run.out / "checkpoints"
    t0 = time.time()
    while not (ck.exists() and any(p.name.isdigit() for p in ck.iterdir())):
        assert time.time() - t0 < 300, "no checkpoint appeared"
        time.sleep(0.3)
    subprocess.run(["scancel", str(job)], check=True)
    _wait(tmp_path)
    saved = json.loads((run.out / "preempted.json").read_text())["step"]
    assert run_state(run)["state"] == "partial" and saved > 0
    job2 = submit([run], SlurmProfile(), tmp_path)
    assert job2 is not None and job2 != job
    time.sleep(1)
    log2 = tmp_path / "slurm" / f"{job2}_0.out"
    t0 = time.time()
    while not (log2.exists() and "step" in log2.read_text()):
        assert time.time() - t0 < 300
        time.sleep(0.3)
    subprocess.run(["scancel", str(job2)], check=True)
    _wait(tmp_path)
    assert f"resuming at step {saved}" in log2.read_text()


@pytest.fixture
def short_min_job_age(slurm):
    """The cluster forgets finished jobs after 2 s (MinJobAge), as a busy production cluster
    does after its own MinJobAge; restored afterwards."""
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).resolve()
    text = conf.read_text()
    if "MinJobAge=" not in text or not os.access(conf, os.W_OK):
        pytest.skip(f"{conf}: cannot lower MinJobAge here")
    conf.write_text("\n".join("MinJobAge=2" if ln.startswith("MinJobAge=") else ln
                              for ln in text.splitlines()) + "\n")
    subprocess.run(["scontrol", "reconfigure"], check=True)
    try:
        yield
    finally:
        conf.write_text(text)
        subprocess.run(["scontrol", "reconfigure"], check=True)


def test_purged_jobs_still_report_the_right_status(short_min_job_age, store, tmp_path):
    (good,) = _runs(tmp_path, store, 1, steps=10)
    bad = Run("bad", good.config | {"run_id": "bad", "out": str(tmp_path / "runs" / "bad"),
                                    "mixture": {"nope": 1.0}})
    job = submit([good, bad], SlurmProfile(throttle=2), tmp_path)
    _wait(tmp_path)
    t0 = time.time()  # wait until the controller has purged the job: squeue -j now fails
    while subprocess.run(["squeue", "-h", "-j", str(job)], capture_output=True).returncode == 0:
        assert time.time() - t0 < 180, "SLURM did not purge the finished job"
        time.sleep(1)
    # the old `squeue -j` lookup raised here; now states come from sacct / completion log
    assert queued_runs(tmp_path) == {}
    states = task_states(tmp_path)
    assert states["r0"]["state"] == "COMPLETED" and states["bad"]["state"] == "FAILED"
    assert not set(s["state"] for s in states.values()) & set(ALIVE)
    rows = {r["run_id"]: r["state"] for r in status([good, bad], queued_runs(tmp_path))}
    assert rows == {"r0": "done", "bad": "failed"}
    assert submit([good, bad], SlurmProfile(), tmp_path) is None  # relaunch: nothing to do
