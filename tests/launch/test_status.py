"""`datalaws status SPEC --curves` shows every run's validation curve so far (text or PNG);
`datalaws tensorboard SPEC` prints a command that opens TensorBoard over the sweep's runs."""

import json
import shlex
import subprocess

import pytest

from datalaws.cli import main
from datalaws.data.loader import markov_stream
from datalaws.launch.sweep import expand, load_spec
from datalaws.model.train import TrainConfig, train
from datalaws.model.transformer import ModelConfig

SPEC = """
out = "{out}"
[defaults]
data = "store"
seq_len = 32
batch = 8
mixture = "train=1"
[grid]
preset = ["tiny"]
tokens = [1536, 2048]
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A sweep of two runs: the first trained for real (6 steps, a validation point every 3),
    the second not started."""
    tmp = tmp_path_factory.mktemp("sweep")
    spec = tmp / "sweep.toml"
    spec.write_text(SPEC.format(out=tmp / "runs"))
    run = expand(load_spec(spec))[0]
    stream = markov_stream(60_000, 64, seed=0)
    c = TrainConfig(model=ModelConfig.preset("tiny", vocab=64, seq_len=32), batch=8,
                    tokens=run.config["tokens"], run_id=run.run_id, eval_every=3,
                    eval_windows=8, curve_windows=8, log_every=2, mesh=(1, 1, 1))
    assert train(c, {"train": stream}, run.out, eod=0, valid={"train": stream[-4000:]},
                 progress=False) == 0
    return spec, run


def test_status_curves_prints_every_validation_point(sweep, capsys):
    spec, run = sweep
    assert main(["status", str(spec), "--curves"]) == 0
    out = capsys.readouterr().out
    points = [json.loads(x) for x in (run.out / "metrics.jsonl").read_text().splitlines()
              if "eval" in json.loads(x)]
    assert [p["step"] for p in points] == [3, 6]
    line = next(ln for ln in out.splitlines() if ln.startswith(run.run_id) and "e+0" in ln)
    for p in points:  # tokens seen: step x batch x seq_len
        assert f"{p['step'] * 256:.2g}: {p['eval_loss']:.4f}" in line
    assert "done" in line and "pending: 1" in out


def test_status_curves_plots_a_png(sweep, tmp_path, capsys):
    spec, _ = sweep
    png = tmp_path / "curves.png"
    assert main(["status", str(spec), "--curves", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "validation curves of 1 runs" in capsys.readouterr().out


def test_tensorboard_command_opens_the_sweeps_event_files(sweep, capsys):
    spec, run = sweep
    assert main(["tensorboard", str(spec)]) == 0
    out, err = capsys.readouterr()
    cmd = shlex.split(out.strip())
    assert cmd[-2:] == ["--logdir", str(run.out.parent.absolute())]
    assert "1 of 2 runs have TensorBoard event files" in err
    # the printed command's --inspect mode reads the event files without serving them
    inspect = subprocess.run(cmd + ["--inspect"], capture_output=True, text=True, timeout=300)
    assert inspect.returncode == 0
    assert run.run_id in inspect.stdout and "train/loss" in inspect.stdout
