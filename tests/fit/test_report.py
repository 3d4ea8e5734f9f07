"""The report opens with the decision, renders in a real headless browser without sideways
scrolling at 1280 and 800 px, and its decision card says what plan.json says."""

import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from datalaws.cli import main
from datalaws.fit import FitConfig, fit
from datalaws.fit.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    N = np.exp(rng.uniform(np.log(1e7), np.log(3e9), 40))
    D = 20 * N * np.exp(rng.uniform(-1, 1, 40))
    L = 1.8 + 0.4 * (N / 1e8) ** -0.33 + 0.35 * (D / 2e9) ** -0.3
    L = L * np.exp(0.01 * rng.standard_normal(40))
    df = pd.DataFrame({"params": N, "tokens": D, "loss": L})
    df.to_csv(tmp / "runs.csv", index=False)
    # the report is under test, not the sampler: two short chains are enough
    cfg = FitConfig(chains=2, warmup=200, draws=200, progress=False)
    # one law with the backtest section, one without (its backtest would show nothing new)
    for law, discrepancy in (("chinchilla", "backtest"), ("overtrain", "none")):
        fit(df, law, config=cfg, holdout="params > 2e9", discrepancy=discrepancy).save(tmp / law)
    assert main(["plan", str(tmp / "chinchilla"), "--budget", "1e21", "--objective",
                 "q90", "--out", str(tmp / "plans" / "q90.json")]) == 0
    # --out gets a copy; the fit folder keeps the plan the decision card reads
    assert (tmp / "plans" / "q90.json").read_text() == (tmp / "chinchilla" / "plan.json"
                                                        ).read_text()
    return write_report([tmp / "chinchilla", tmp / "overtrain"], df, tmp / "report.html")


def test_report_opens_with_the_decision_then_collapsed_detail(report):
    page = report.read_text()
    card = page.index("class='card'")
    for section in ("Law: chinchilla", "Law: overtrain", "Parameters and priors",
                    "Diagnostics", "Fitted curves", "Residuals", "discrepancy backtest",
                    "Held-out runs", "Trace and rank plots", "Law comparison (PSIS-LOO)",
                    "Data", "Compute plan candidates"):
        assert section in page, section
        assert page.index(section) > card, section  # the answer comes first
    for words in ("Recommended", "Predicted loss", "Extrapolation distance",
                  "Backtest coverage at that distance", "Against the runner-up", "Warnings"):
        assert words in page[card:card + 20000], words
    assert "<summary>Trace and rank plots</summary>" in page  # collapsed
    assert "http://" not in page and "https://" not in page  # nothing fetched to view it
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) >= 8
    figs = report.parent / "report_figures"
    for fig in ("chinchilla_curves", "chinchilla_backtest", "chinchilla_trace",
                "overtrain_rank"):
        assert (figs / f"{fig}.png").exists() and (figs / f"{fig}.svg").exists(), fig
        assert f'href="report_figures/{fig}.svg"' in page


def _plan_value(plan: dict, key: str) -> float:
    v = plan
    for part in key.split("."):
        v = v[part]
    return float(v)


def test_decision_card_numbers_equal_plan_json(report):
    plan = json.loads((report.parent / "chinchilla" / "plan.json").read_text())
    card = report.read_text().split("class='card'")[1].split("</section>")[0]
    nums = re.findall(r'data-key="([^"]+)" data-value="([^"]+)"', card)
    keys = {k for k, _ in nums}
    assert {"chosen.params", "chosen.tokens", "chosen.loss_q50", "chosen.loss_q05",
            "chosen.loss_q95", "chosen.loss_q25", "chosen.loss_q75", "trust.distance",
            "p_beats_runner_up"} <= keys
    for key, value in nums:
        assert float(value) == pytest.approx(_plan_value(plan, key), rel=1e-12), key
    assert plan["why"] and plan["p_beats_runner_up_words"] in card


def _chromium_probe(report, tmp_path, width: int) -> dict:
    """Load the page at ``width`` px; a script puts what it measured into the title."""
    probe = report.parent / f"probe_{width}.html"
    probe.write_text(report.read_text().replace("</body>", """<script>
      window.addEventListener('load', () => {
        const imgs = [...document.images];
        const nums = [...document.querySelectorAll('.card .num')].map(
          e => [e.dataset.key, e.dataset.value]);
        document.title = 'PROBE' + JSON.stringify({
          scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
          ok: imgs.filter(i => i.naturalWidth > 0).length, total: imgs.length,
          cardTop: document.querySelector('.card').getBoundingClientRect().top,
          nums: nums}) + 'PROBE'; });
    </script></body>"""))
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / f'p{width}'}",
                          f"--window-size={width},900", "--virtual-time-budget=10000",
                          "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=180).stdout
    m = re.search(r"PROBE(.*)PROBE", dom)
    assert m, dom[:500]
    import html

    return json.loads(html.unescape(m.group(1)))


@pytest.mark.browser
@pytest.mark.parametrize("width", [1280, 800])
def test_report_in_headless_chromium_fits_the_window(report, tmp_path, width):
    if CHROMIUM is None:
        pytest.skip("chromium not installed (.ci/run installs Debian's chromium)")
    got = _chromium_probe(report, tmp_path, width)
    assert got["scrollWidth"] <= got["innerWidth"], got  # no sideways scrolling
    assert got["total"] >= 3 and got["ok"] == got["total"]  # every image decoded
    assert got["cardTop"] < 400  # the decision card is on the first screen
    plan = json.loads((report.parent / "chinchilla" / "plan.json").read_text())
    assert len(got["nums"]) >= 9
    for key, value in got["nums"]:
        assert float(value) == pytest.approx(_plan_value(plan, key), rel=1e-12), key
