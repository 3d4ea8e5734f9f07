"""The report renders in a real headless browser: sections, images, a non-blank page."""

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from datalaws.cli import main
from datalaws.fit import FitConfig, fit, save_fit
from datalaws.fit.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    N = np.exp(rng.uniform(np.log(1e7), np.log(3e9), 60))
    D = 20 * N * np.exp(rng.uniform(-1, 1, 60))
    L = 1.8 + 0.4 * (N / 1e8) ** -0.33 + 0.35 * (D / 2e9) ** -0.3
    L = L * np.exp(0.01 * rng.standard_normal(60))
    df = pd.DataFrame({"params": N, "tokens": D, "loss": L})
    df.to_csv(tmp / "runs.csv", index=False)
    # the report is under test, not the sampler: two short chains are enough
    cfg = FitConfig(chains=2, warmup=200, draws=200, progress=False)
    # one law with the backtest section, one without (its backtest would show nothing new)
    for law, discrepancy in (("chinchilla", "backtest"), ("overtrain", "none")):
        save_fit(fit(df, law, config=cfg, holdout="params > 2e9", discrepancy=discrepancy),
                 tmp / law)
    assert main(["plan", str(tmp / "chinchilla"), "--budget", "1e21"]) == 0
    out = write_report([tmp / "chinchilla", tmp / "overtrain"], df, tmp / "report.html")
    return out


def test_report_is_self_contained_with_every_section(report):
    page = report.read_text()
    for section in ("Data", "Law: chinchilla", "Law: overtrain", "Diagnostics",
                    "Parameters and priors", "Fitted curves", "Residuals",
                    "discrepancy backtest", "Held-out runs", "Trace and rank plots",
                    "Law comparison (PSIS-LOO)", "Compute plan"):
        assert section in page, section
    assert "http://" not in page and "https://" not in page  # nothing fetched to view it
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) >= 8
    for fig in ("chinchilla_curves", "chinchilla_backtest", "chinchilla_backtest_points"):
        assert (report.parent / "report_figures" / f"{fig}.png").exists(), fig


@pytest.mark.browser
def test_report_renders_in_headless_chromium(report, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium not installed (.ci/run installs Debian's chromium)")
    # after load, the page titles itself with how many images decoded to real pixels
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", """<script>
      window.addEventListener('load', () => { const imgs = [...document.images];
        document.title = 'rendered ' + imgs.filter(i => i.naturalWidth > 0).length + '/'
          + imgs.length + ' h2=' + document.querySelectorAll('h2').length; });
    </script></body>"""))
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    m = re.search(r"<title>rendered (\d+)/(\d+) h2=(\d+)</title>", dom)
    assert m, dom[:500]
    ok, total, h2 = map(int, m.groups())
    assert total >= 8 and ok == total and h2 >= 4
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}",
                    "--window-size=1200,2400", f"--screenshot={shot}", report.as_uri()],
                   capture_output=True, timeout=120)
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.shape[0] >= 2000 and (img[..., :3] < 0.5).mean() > 0.01  # not a blank page
