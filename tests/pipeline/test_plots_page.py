"""The page `dvc plots show` writes with the project's page template, plot templates and plot
declarations, on curves files in the train stage's format (in a temporary git + DVC repo),
opened in a real headless Chromium with networking off: every chart must draw from the page's
own scripts."""

import csv
import io
import os
import re
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import PROJECT
from PIL import Image

from tlstudy.stages.train import run_name
from tlstudy.training import augment, engine
from tlstudy.training.curves import PLOT_COLUMNS

pytestmark = pytest.mark.slow
EPOCHS = 4
# runs.json's panels: a column per quantity, a row per augmentation family.
PANEL_W, PANEL_H = 260, 170
CHARTS = ["plots_train_augment_csv", "plots_train_scratch_csv", "plots_pretrain_pacs_sources_csv"]
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
# No name resolves, and every request, loopback included, goes to a proxy on a closed port;
# file:// pages still load.
OFFLINE = ["--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]


def curves(variants: dict[str, list], lrs: list[float], seeds: list[int], diverged: tuple | None = None) -> list:
    """Rows as the train stage writes them; the run `diverged` (variant, lr, seed) has a
    validation loss of 1e5 at epoch 1."""
    rows = []
    for i, (variant, spec) in enumerate(variants.items()):
        for lr in lrs:
            for seed in seeds:
                name = run_name(engine.Run("sgd", lr, variant), list(variants), seed if len(seeds) > 1 else None)
                for epoch in range(1, EPOCHS + 1):
                    loss = 2.0 / epoch * (1 + i / 10 + lr + seed / 20)
                    val_loss = 1e5 if (variant, lr, seed, epoch) == (*(diverged or ()), 1) else loss * 1.1
                    row = dict(run=name, seed=seed, optimizer="sgd", lr=f"{lr:g}", variant=variant)
                    row.update(family=augment.family(spec), epoch=epoch, train_loss=f"{loss:.6g}", train_acc=0.5)
                    row.update(val_loss=f"{val_loss:.6g}", val_acc=f"{0.9 - 0.4 / epoch:.6g}", seconds=1.0)
                    rows.append([row[c] for c in PLOT_COLUMNS])
    return rows


def write_csv(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([PLOT_COLUMNS, *rows])
    path.write_text(buf.getvalue())


def sh(cwd: Path, *cmd: str) -> str:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=dict(os.environ, DVC_NO_ANALYTICS="1"))
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def dvc(cwd: Path, *args: str) -> str:
    local = Path(sys.executable).with_name("dvc")
    return sh(cwd, str(local) if local.exists() else "dvc", *args)


@pytest.fixture(scope="module")
def repo(module_tmp, study_params) -> Path:
    """A sweep over every variant (all five families, 3 seeds), a part without augmentation and a
    pretrained backbone; the project's .dvc/config, .dvc/plots and dvc.yaml `plots:`."""
    ws = module_tmp / "repo"
    ws.mkdir()
    sh(ws, "git", "init", "-q")
    dvc(ws, "init", "-q")
    shutil.copy(PROJECT / ".dvc" / "config", ws / ".dvc" / "config")
    shutil.copytree(PROJECT / ".dvc" / "plots", ws / ".dvc" / "plots", dirs_exist_ok=True)
    plots = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["plots"]
    (ws / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}, sort_keys=False))
    every = study_params["augmentations"]
    write_csv(ws / "plots/train/augment.csv", curves(every, [0.01], [0, 1, 2], ("blur27", 0.01, 1)))
    write_csv(ws / "plots/train/scratch.csv", curves({"none": []}, [0.01, 0.001], [0, 1], ("none", 0.001, 0)))
    write_csv(ws / "plots/pretrain/pacs_sources.csv", curves({"hflip_rot10": every["hflip_rot10"]}, [0.05], [0]))
    sh(ws, "git", "add", "-A")
    sh(ws, "git", "-c", "user.name=test", "-c", "user.email=test@tlstudy.invalid", "commit", "-qm", "curves")
    return ws


@pytest.fixture(scope="module")
def page(repo) -> Path:
    dvc(repo, "plots", "show")
    return repo / "dvc_plots" / "index.html"


@pytest.fixture(scope="module")
def cdn_page(repo) -> Path:
    """DVC's own page, which loads Vega from a CDN."""
    config = (repo / ".dvc" / "config").read_text()
    try:
        dvc(repo, "config", "--unset", "plots.html_template")
        dvc(repo, "plots", "show", "-o", "cdn_plots")
    finally:
        (repo / ".dvc" / "config").write_text(config)
    return repo / "cdn_plots" / "index.html"


@pytest.fixture(scope="module")
def browser() -> str:
    if CHROMIUM is None:
        if os.environ.get("TLSTUDY_REQUIRE_BROWSER") == "1":
            pytest.fail("TLSTUDY_REQUIRE_BROWSER=1 but no chromium on PATH (Debian: apt-get install chromium)")
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium); the page is not opened in a browser")
    return CHROMIUM


def headless(browser: str, tmp_path: Path, page: Path, *action: str, offline: bool = True) -> str:
    """Open the page (networking off unless told), let its scripts run for 20 s of virtual time,
    then act (`--dump-dom`: the DOM on stdout; `--screenshot=PATH`)."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    args += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    args += [*(OFFLINE if offline else []), f"--user-data-dir={profile}", "--virtual-time-budget=20000"]
    r = subprocess.run([*args, *action, page.as_uri()], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"chromium failed:\n{r.stderr[-3000:]}"
    return r.stdout


class Canvases(HTMLParser):
    """The (width, height) of each <canvas> inside each of the given divs."""

    def __init__(self, ids: list[str]):
        super().__init__()
        self.ids, self.found, self.current, self.depth = ids, {i: [] for i in ids}, None, 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and self.current is None and a.get("id") in self.ids:
            self.current, self.depth = a["id"], 0
        elif tag == "div" and self.current is not None:
            self.depth += 1
        elif tag == "canvas" and self.current is not None:
            self.found[self.current].append((int(a.get("width", 0)), int(a.get("height", 0))))

    def handle_endtag(self, tag):
        if tag == "div" and self.current is not None:
            self.current, self.depth = (None, 0) if self.depth == 0 else (self.current, self.depth - 1)


def canvases(browser: str, tmp_path: Path, page: Path) -> dict[str, list[tuple[int, int]]]:
    """Per plot div of the page (DVC names each after its file), the canvases Vega drew there."""
    ids = re.findall(r"vegaEmbed\('#(\w+)'", page.read_text(encoding="utf8"))
    assert sorted(ids) == sorted(CHARTS)
    parser = Canvases(ids)
    parser.feed(headless(browser, tmp_path, page, "--dump-dom"))
    return parser.found


def test_the_page_loads_no_script_from_the_network(page):
    html = page.read_text(encoding="utf8")
    assert re.findall(r"<script\b[^>]*\bsrc\s*=", html) == []
    assert re.findall(r"<link\b[^>]*\bhref\s*=\s*[\"']?https?:", html) == []
    assert "cdn." not in html
    # Vega, Vega-Lite and Vega-Embed inline, before the plots whose scripts call them at once.
    head = html.split("</head>")[0]
    assert ".vega={}" in head and ".vegaLite={}" in head and ".vegaEmbed=" in head


def test_every_chart_draws_with_the_network_off(browser, page, tmp_path):
    drawn = canvases(browser, tmp_path, page)
    assert all(len(c) == 1 and c[0][0] > 3 * PANEL_W for c in drawn.values()), drawn
    sweep, part, backbone = (drawn[c][0][1] for c in CHARTS)
    assert sweep > 5 * PANEL_H  # a row per family
    assert part < 2 * PANEL_H and backbone < 2 * PANEL_H  # one family: one row
    shot = tmp_path / "page.png"
    headless(browser, tmp_path, page, "--window-size=1400,2200", "--hide-scrollbars", f"--screenshot={shot}")
    # In the first column (train_loss, no legend) only the curves have a saturated colour: axes,
    # grid and text are grey. A chart with its axes but no curves has none.
    rgb = np.asarray(Image.open(shot).convert("RGB"), dtype=int)[:, : PANEL_W + 100]
    coloured = int((rgb.max(axis=2) - rgb.min(axis=2) > 80).sum())
    assert coloured > 2000, f"{coloured} coloured pixels in the train_loss column: no curves drawn"


def test_dvcs_cdn_page_draws_nothing_here(browser, cdn_page, tmp_path):
    """The control for the test above: the same plots on DVC's own page stay blank offline."""
    assert re.findall(r"<script src=\"https://cdn\.[^\"]+/vega-embed", cdn_page.read_text(encoding="utf8"))
    assert canvases(browser, tmp_path, cdn_page) == {c: [] for c in CHARTS}


def test_the_browser_reaches_no_server_not_even_on_this_machine(browser, tmp_path):
    """The control for the offline flags, where no CDN is reachable anyway: a server on 127.0.0.1,
    asked for a script by address and by name, gets both requests from a browser without the
    flags and none from one with them."""
    requests = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript")
            self.end_headers()
            self.wfile.write(b"document.title = 'loaded';")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        page = tmp_path / "remote.html"
        page.write_text("".join(f'<script src="http://{h}:{port}/x.js"></script>' for h in ("127.0.0.1", "localhost")))
        headless(browser, tmp_path, page, "--dump-dom", offline=False)
        assert requests == ["/x.js", "/x.js"]
        requests.clear()
        headless(browser, tmp_path, page, "--dump-dom")
        assert requests == []
    finally:
        server.shutdown()
        server.server_close()
