"""Progress fits the terminal: one redrawn line on a TTY, a line per 10% in a log."""

import io

from datalaws.progress import Progress


def test_log_gets_a_line_per_tenth_and_the_last():
    out = io.StringIO()
    with Progress(1000, "sweep", stream=out, tty=False, every_s=1e9) as p:
        for i in range(1001):
            p.update(i, "running")
        p.update(1000, "running")  # repeated final updates print once
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in out.getvalue()
    assert lines[0].startswith("sweep: 100/1000 (10%)") and lines[-1].startswith(
        "sweep: 1000/1000 (100%)")


def test_terminal_redraws_one_line_cut_to_its_width():
    out = io.StringIO()
    p = Progress(10, "train", stream=out, tty=True)
    for i in range(11):
        p.update(i, "x" * 500)
    assert "\n" not in out.getvalue() and out.getvalue().count("\r") == 11
    assert all(len(seg) <= 400 for seg in out.getvalue().split("\r"))
    p.close("done")
    assert out.getvalue().endswith("\ndone\n")


def test_disabled_prints_nothing():
    out = io.StringIO()
    with Progress(5, "x", stream=out, enabled=False) as p:
        p.update(5)
    assert out.getvalue() == ""
