"""Issue 24: the model card (a tuned run writes it; a real headless Chromium renders every section),
what the run prints and records, and the data-quality messages.

The browser check: a loopback HTTP server serves the card with a Content-Security-Policy that allows
nothing but inline styles and data: images (so anything external would be blocked and show), and a
test-only wrapper page that frames the card and writes, for every section id and every image, what
the rendered DOM holds (heading text, naturalWidth, the share of its pixels decoded: the charts are
opaque, so a truncated image shows as transparent rows) into its own DOM; `chromium --dump-dom` returns it.
The card itself has no scripts.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from churnflow.core.synthetic import telco_customers
from churnflow.evaluation.model_card import SECTIONS, _batch_metrics, bootstrap_intervals, resamples_for

from .conftest import CHURNFLOW

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
CARD_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
WRAPPER = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>
<iframe id="card" src="/model-card.html" width="1200" height="900"></iframe><pre id="result"></pre>
<script>
window.addEventListener("load", () => {
  const doc = document.getElementById("card").contentDocument;
  const sections = {};
  for (const section of doc.querySelectorAll("section[id]")) {
    const heading = section.querySelector("h2");
    sections[section.id] = {heading: heading ? heading.textContent : null,
                            visible: section.getBoundingClientRect().height > 0};
  }
  const images = [...doc.images].map(i => {
    // a truncated PNG still has its size (from its header): count the pixels actually decoded
    const canvas = document.createElement("canvas");
    canvas.width = i.naturalWidth; canvas.height = i.naturalHeight;
    let opaque = 0, all = 0;
    if (i.naturalWidth > 0) {
      const context = canvas.getContext("2d");
      context.drawImage(i, 0, 0);
      const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
      for (let k = 3; k < pixels.length; k += 4) { all++; if (pixels[k] === 255) opaque++; }
    }
    return {id: i.id, complete: i.complete, width: i.naturalWidth, decoded: all ? opaque / all : 0};
  });
  document.getElementById("result").textContent = JSON.stringify(
    {title: doc.title, sections, images, scripts: doc.scripts.length});
});
</script></body></html>"""


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    if not CHROMIUM.is_file():
        pytest.fail("no /usr/bin/chromium: run bash scripts/system-deps.sh as root (Debian package chromium)")
    return subprocess.run(
        [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """A tuned `churnflow run` (the default grid) on a telecom-layout table with blank TotalCharges."""
    root = tmp_path_factory.mktemp("card-run")
    telco_customers(1000, seed=11).to_csv(root / "telco.csv", index=False)
    config = ROOT / "examples" / "telco" / "config.yaml"
    args = ["run", "--data", str(root / "telco.csv"), "--config", str(config), "--output", str(root / "out")]
    result = subprocess.run([CHURNFLOW, *args], capture_output=True, text=True, timeout=900)
    assert result.returncode in (0, 4), result.stderr
    return root / "out", result


class _CardHandler(http.server.SimpleHTTPRequestHandler):
    def end_headers(self) -> None:
        if self.path.startswith("/model-card.html"):
            self.send_header("Content-Security-Policy", CARD_POLICY)
        super().end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def card_site(tuned_run: tuple[Path, subprocess.CompletedProcess], tmp_path: Path) -> Iterator[str]:
    """The card and the wrapper page on a loopback HTTP server (the card under a strict CSP)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "model-card.html").write_bytes((tuned_run[0] / "model-card.html").read_bytes())
    (site / "wrapper.html").write_text(WRAPPER)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_CardHandler, directory=site))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_tuned_run_writes_the_card_and_records_the_choice(tuned_run):
    out, result = tuned_run
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("model_family", "params", "threshold", "floors", "base_rate", "pr_auc"):
        assert key in metrics, key
    assert metrics["floors"]["min_roc_auc"] == 0.70 and 0 < metrics["base_rate"] < 1
    chose = f"chose {metrics['model_family']} ("
    assert chose in result.stdout and f"threshold {metrics['threshold']:.3f}" in result.stdout, result.stdout
    blanks = metrics["filled_blanks"]["TotalCharges"]
    assert blanks["blanks"] > 0
    assert f"filled {blanks['blanks']} blank 'TotalCharges' cell(s)" in result.stdout
    card = (out / "model-card.html").read_text()
    metadata = json.loads((out / "candidate" / "metadata.json").read_text())
    assert len(metadata["tuning"]["candidates"]) == 10  # the default grid, every one on the card
    assert card.count("<tr>") >= 10 + 7 + 4
    assert "<script" not in card.lower() and not re.search(r"(src|href)=\"(?!data:)", card)
    assert "TotalCharges" in card and f"{blanks['value']:.4f}" in card
    assert "1000 resamples" in card


def test_the_card_renders_every_section_in_a_headless_browser(card_site, tmp_path):
    dumped = _chromium("--virtual-time-budget=10000", "--dump-dom", f"{card_site}/wrapper.html", profile=tmp_path / "p")
    found = re.search(r'<pre id="result">(.*?)</pre>', dumped.stdout, re.S)
    assert found and found.group(1), f"the wrapper page reported nothing: {dumped.stderr[-800:]}"
    rendered = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert rendered["title"].startswith("Model card: ") and rendered["scripts"] == 0
    for section_id, heading in SECTIONS:
        assert rendered["sections"].get(section_id) == {"heading": heading, "visible": True}, section_id
    charts = {"chart-reliability", "chart-roc", "chart-pr", "chart-gains"}
    assert {image["id"] for image in rendered["images"]} == charts
    for image in rendered["images"]:  # decoded, every pixel, under a policy that admits only data: images
        assert image["complete"] and image["width"] > 100 and image["decoded"] == 1.0, image
    shot = tmp_path / "card.png"
    taken = _chromium(
        f"--screenshot={shot}", "--window-size=1200,3000", f"{card_site}/model-card.html", profile=tmp_path / "q"
    )
    assert shot.is_file() and shot.stat().st_size > 20_000, taken.stderr[-800:]


def test_vectorised_bootstrap_metrics_equal_scikit_learn_on_one_resample():
    rng = np.random.default_rng(3)
    target = (rng.uniform(size=400) < 0.3).astype("int64")
    probability = np.clip(0.3 * target + rng.uniform(size=400) * 0.7, 0, 1)
    got = _batch_metrics(target[None, :], probability[None, :], 0.5)
    assert got["roc_auc"][0] == pytest.approx(roc_auc_score(target, probability), abs=1e-12)
    assert got["pr_auc"][0] == pytest.approx(average_precision_score(target, probability), abs=1e-12)
    assert got["brier"][0] == pytest.approx(brier_score_loss(target, probability), abs=1e-12)
    intervals = bootstrap_intervals(target, probability, 0.5, resamples=300)
    assert intervals == bootstrap_intervals(target, probability, 0.5, resamples=300)  # seeded
    low, high = intervals["roc_auc"]
    assert low < roc_auc_score(target, probability) < high and high - low < 0.2


def test_large_test_splits_get_fewer_resamples_but_never_under_the_floor():
    assert resamples_for(200) == resamples_for(20_000) == 1000
    assert resamples_for(40_000) == 500 and resamples_for(10_000_000) == 200
