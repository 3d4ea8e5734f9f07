"""Run metrics: TensorBoard events read back equal metrics.jsonl, profiles for the asked steps
only, process 0 alone writes, data-wait warnings, bad flags named in one line."""

import gzip
import json
import shutil

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from datalaws import load_record
from datalaws.cli import main
from datalaws.data.loader import markov_stream
from datalaws.model.metrics import TIME_PARTS, ProfileWindow, RunLogger, parse_profile_steps
from datalaws.model.tasks import evaluate_tasks
from datalaws.model.train import EXIT_REQUEUE, TrainConfig, train
from datalaws.model.transformer import ModelConfig

STREAM = markov_stream(100_000, 64, seed=0)
TINY = ModelConfig.preset("tiny", vocab=64, seq_len=32)
# a real multiple-choice task over the Markov tokens: acc/<task> comes from evaluate_tasks
ITEMS = [{"context": "123", "choices": ["45", "67", "89"], "label": i % 3} for i in range(6)]


def _cfg(steps, **kw):
    return TrainConfig(**(dict(model=TINY, tokens=32 * 8 * steps, batch=8, lr=1e-2, run_id="r",
                               save_every=4, log_every=3, eval_every=6, eval_windows=8,
                               curve_windows=8, mesh=(1, 1, 1)) | kw))


def _events(run_dir) -> EventAccumulator:
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    return ea


def _jsonl(run_dir) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]


def test_event_files_hold_the_losses_of_metrics_jsonl_across_a_resume(tmp_path):
    run = tmp_path / "run"
    # first session logs steps 3, 6, 9 and checkpoints at 4, 8 and 11; deleting checkpoint 11
    # is a kill after step 11: the resume restarts at 8, so step 9 is logged twice on disk
    valid = {"train": STREAM[-5000:]}
    assert train(_cfg(16), {"train": STREAM}, run, eod=0, progress=False, valid=valid,
                 stop_after=11) == EXIT_REQUEUE
    shutil.rmtree(run / "checkpoints" / "11")

    def eval_fn(model):
        return evaluate_tasks(model, {"mc": ITEMS}, lambda s: [int(ch) for ch in s])

    assert train(_cfg(16), {"train": STREAM}, run, eod=0, progress=False,
                 valid=valid, eval_fn=eval_fn) == 0
    rows, ea = _jsonl(run), _events(run)
    assert [r["step"] for r in rows] == list(range(1, 17))
    logged = [r for r in rows if "step_time_s" in r]  # the logging interval's rows
    assert [r["step"] for r in logged] == [3, 6, 12, 15, 16]  # 9 compiles
    for tag, key in [("train/loss", "loss"), ("train/grad_norm", "grad_norm"),
                     ("train/lr", "lr"), ("perf/step_time_s", "step_time_s"),
                     ("perf/tokens_per_s", "tokens_per_s")]:
        events = ea.Scalars(tag)  # the first session's step 9 (past checkpoint 8) is purged
        assert [e.step for e in events] == [r["step"] for r in logged], tag
        np.testing.assert_array_equal([e.value for e in events],
                                      np.float32([r[key] for r in logged]))
    # the time split: parts of the step time, each a share in [0, 1]
    for part in TIME_PARTS:
        assert all(0 <= e.value <= 1 for e in ea.Scalars(f"time/{part}_frac"))
    assert all(sum(r[f"{p}_s"] for p in TIME_PARTS) <= r["step_time_s"] * (1 + 1e-9)
               for r in logged)
    assert any(r["eval_s"] > 0 for r in logged) and any(r["ckpt_s"] > 0 for r in logged)
    # validation: curve points where the rows have them, the final evaluation at the end
    curve = [r for r in rows if "eval" in r]
    assert [r["step"] for r in curve] == [6, 12, 16]
    for tag, get in [("valid/loss/train", lambda r: r["eval"]["train"]),
                     ("valid/loss", lambda r: r["eval_loss"])]:
        events = ea.Scalars(tag)
        assert [e.step for e in events] == [6, 12, 16]
        np.testing.assert_array_equal([e.value for e in events], np.float32([get(r)
                                                                              for r in curve]))
    rec = load_record(run / "r.record.json")
    assert [(e.step, e.value) for e in ea.Scalars("final/loss/train")] == [
        (16, np.float32(rec.eval_losses["train"]))]
    assert ea.Scalars("final/loss")[0].value == np.float32(rec.loss)
    assert ea.Scalars("acc/mc")[0].value == np.float32(rec.accuracy["mc"])
    assert not (run / "plugins").exists()  # no profile unless asked


def _traced_steps(run_dir) -> set[int]:
    traces = list((run_dir / "plugins" / "profile").glob("*/perfetto_trace.json.gz"))
    assert len(traces) == 1 and list(traces[0].parent.glob("*.xplane.pb"))
    events = json.loads(gzip.open(traces[0]).read())["traceEvents"]
    return {int(e["args"]["step_num"]) for e in events if e.get("name") == "train"}


def test_profile_trace_covers_exactly_the_requested_steps(tmp_path):
    assert train(_cfg(7), {"train": STREAM}, tmp_path, eod=0, progress=False,
                 profile_steps=parse_profile_steps("3:5")) == 0
    assert _traced_steps(tmp_path) == {3, 4, 5}


def test_only_process_zero_writes(tmp_path, monkeypatch):
    def run_logger(run_dir):
        log = RunLogger(run_dir, run_id="r", steps=6, tokens_per_step=128, flops_per_token=1.0,
                        peak_flops=1e12, log_every=2, progress=False)
        with log, ProfileWindow(run_dir, (2, 3)) as prof:
            for step in range(1, 7):
                with prof.step(step), log.timed("step"):
                    float(jax.numpy.ones(3).sum())
                log.step(step, loss=1.0 / step, grad_norm=1.0, lr=1e-3)
        log.eval(6, {"d": 0.5})
        log.close()

    run_logger(tmp_path / "p0")
    assert {p.name.split(".")[0] for p in (tmp_path / "p0").iterdir()} == {
        "metrics", "events", "plugins"}
    monkeypatch.setattr(jax, "process_index", lambda *a, **k: 1)
    run_logger(tmp_path / "p1")
    assert not (tmp_path / "p1").exists() or not any((tmp_path / "p1").iterdir())


class _Clock:
    """A clock the test advances: the time split and the warning follow from known times."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_time_split_and_data_wait_warning(tmp_path, capsys):
    def run(data_s, name):
        clock = _Clock()
        log = RunLogger(tmp_path / name, run_id="r", steps=7, tokens_per_step=100,
                        flops_per_token=1.0, peak_flops=1e6, log_every=2, clock=clock)
        rows = []
        for step in range(1, 8):
            with log.timed("data"):
                clock.t += data_s
            with log.timed("step"):
                clock.t += 0.010
            if step == 4:
                with log.timed("ckpt"):
                    clock.t += 0.005
            clock.t += 0.001  # the loop's own bookkeeping: in step time, in no part
            rows.append(log.step(step, loss=1.0, grad_norm=1.0, lr=1.0))
        log.close()
        return [r for r in rows if "step_time_s" in r], capsys.readouterr()

    rows, out = run(0.0001, "fast")  # 1% of a step waiting for data: no warning
    assert [r["step"] for r in rows] == [2, 4, 6, 7]  # step 1 compiles: not timed
    assert rows[0]["step_time_s"] == pytest.approx(0.0111) and rows[0]["ckpt_s"] == 0
    assert rows[1]["ckpt_s"] == pytest.approx(0.0025)  # 5 ms over the interval's 2 steps
    assert rows[2]["tokens_per_s"] == pytest.approx(500 / (5 * 0.0111 + 0.005))
    assert "warning" not in out.err and "(data 1% step 90% eval 0% ckpt 0%)" in out.out
    rows, out = run(0.030, "slow")  # three quarters of each step waits for data
    assert out.err.count("warning:") == 1 and "waiting for data took 73%" in out.err
    assert "in 4 of 4 logging intervals" in out.err
    assert rows[0]["data_s"] == pytest.approx(0.030)


@pytest.mark.parametrize("flag", ["5", "6:2", "x:y"])
def test_bad_profile_steps_is_one_line(flag, tmp_path, capsys):
    code = main(["train", "--preset", "tiny", "--tokens", "1e4", "--data", str(tmp_path),
                 "--mixture", "a=1", "--out", str(tmp_path / "o"), "--profile-steps", flag])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "profile_steps" in err
    assert not (tmp_path / "o").exists()
