"""rbmsearch.gallery: the gallery page, its local server, and a real headless Chromium loading it
(marked slow)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rbmsearch.gallery import GalleryError, build_page, make_server
from rbmsearch.render import render_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run_page(tmp_path_factory, tiny_run):
    """A copy of the tiny trained run (building the page writes into the run directory) with its
    gallery built, which renders RUN_DIR/samples/ first."""
    run = shutil.copytree(tiny_run, tmp_path_factory.mktemp("gallery") / "run")
    return build_page(run)


@pytest.fixture
def server(run_page):
    srv = make_server(run_page.parent, port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def get(server, path: str) -> tuple[int, bytes]:
    """A raw GET: the path goes on the wire as written (browsers would normalise ../)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    conn.endheaders()
    response = conn.getresponse()
    return response.status, response.read()


def test_run_page_lists_samples_comparisons_and_curve(run_page, png_size):
    run = run_page.parent
    page = run_page.read_text()
    stats = json.loads((run / "samples" / "stats.json").read_text())
    audio = re.findall(r'<audio[^>]* src="([^"]+)"', page)
    images = re.findall(r'<img[^>]* src="([^"]+)"', page)
    shown = stats["samples"] + stats["continuations"] + stats["references"]
    assert len(stats["samples"]) == 4 and len(stats["references"]) == 2 and len(stats["continuations"]) == 2
    assert stats["settings"]["steps"] == 32 * 4  # 32 quarter notes of the toy data's grid, as a search renders
    assert audio == [f"samples/{s['wav']}" for s in shown]  # the samples first, then what they compare with
    assert images == [f"samples/{s['png']}" for s in shown] + ["learning_curves.png"]
    assert all((run / src).is_file() for src in audio + images)
    links = re.findall(r'<a href="([^"]+)" download>', page)
    assert links == [f"samples/{s[k]}" for s in shown for k in ("midi", "wav")] and all((run / href).is_file() for href in links)
    assert "training piece p" in page and "test piece" in page and "test NLL" not in page  # no test score was computed for this run
    assert png_size(run / "learning_curves.png") == (800, 400)


def write_experiment(exp: Path, run: Path) -> Path:
    """An experiment directory as a search leaves it, around a trained run: three trials (the best,
    one ASHA stopped, one diverged), the best one's samples with a training piece and a
    continuation, and the page."""
    exp.mkdir(parents=True)
    shutil.copytree(run, exp / "best_run")
    render_run(exp / "best_run", exp / "samples" / "trial_aaaa0001", num=2, steps=16, synth="builtin", references=1, continuations=1)
    config = json.loads((run / "config.json").read_text())
    trial = lambda tid, status, epochs, lr, best, error="": {  # noqa: E731
        "trial_id": tid, "status": status, "epochs": epochs, "params": {"learning_rate": lr, "n_hidden": 8}, "error": error,
        "best": best, "history": {str(e): 9 + 1 / e for e in range(1, epochs + 1)} if best else {},
    }  # fmt: skip
    trials = [
        trial("aaaa0001", "TERMINATED", 4, 0.012296071107325713, {"epoch": 3, "valid_monitor": 9.2551, "valid_acc": 0.1234}),
        trial("aaaa0002", "TERMINATED", 1, 0.00031, {"epoch": 1, "valid_monitor": 10.5, "valid_acc": 0.05}),
        trial("aaaa0003", "ERROR", 2, 0.09, {}, "training diverged at epoch 2: the validation monitor is not finite."),
    ]
    metrics = {"epoch": 3, "valid_monitor": 9.2551, "valid_acc": 0.1234, "test_nll": 9.2551, "test_nll_ci95": 0.4, "test_nll_raise": 9.3, "test_acc": 0.1, "test_acc_decoded": 0.2, "test_frames": 120, "test_frames_in_split": 120}  # fmt: skip
    best = {"trial_id": "aaaa0001", "params": trials[0]["params"], "config": config["train"], "metrics": metrics, "test_eval": {"acc_repeat": 0.15}, "data": config["data"]}  # fmt: skip
    (exp / "best.json").write_text(json.dumps(best))
    (exp / "trials.json").write_text(json.dumps(trials))
    (exp / "search.json").write_text(json.dumps({"space": {"search": {"max_epochs": 4}}}))
    (exp / "optuna.db").write_bytes(b"SQLite format 3\0")
    return build_page(exp)


@pytest.fixture(scope="module")
def experiment_page(tmp_path_factory, tiny_run):
    return write_experiment(tmp_path_factory.mktemp("gallery") / "exp", tiny_run)


def test_experiment_page_leads_with_the_music(experiment_page):
    page = experiment_page.read_text()
    order = [page.index(f'id="{name}"') for name in ("listen", "compare", "trials", "numbers", "plots", "glossary")]
    assert order == sorted(order) and page.index("<audio") < page.index("<table")  # a player before any table
    stats = json.loads((experiment_page.parent / "samples/trial_aaaa0001/stats.json").read_text())
    audio = re.findall(r'<audio[^>]* src="([^"]+)"', page)
    assert audio == [f"samples/trial_aaaa0001/{s['wav']}" for s in stats["samples"] + stats["continuations"] + stats["references"]]
    assert "test NLL <b>9.255 ± 0.400</b> nats per frame (lower is better)" in page
    assert "best-guess accuracy 20.0% against 15.0% for repeating the last frame" in page


def test_experiment_trials_table_has_status_epochs_and_rounded_values(experiment_page):
    page = experiment_page.read_text()
    table = page[page.index('<table class="sortable">') : page.index("</table>", page.index('<table class="sortable">'))]
    rows = [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table)[1:]]
    heads = re.findall(r"<th>([^<]*)</th>", table)
    assert heads[:7] == ["rank", "trial", "status", "epochs", "best epoch", "validation monitor", "validation accuracy"]
    assert [row[:4] for row in rows] == [["1", "aaaa0001", "finished", "4"], ["2", "aaaa0002", "stopped early", "1"], ["", "aaaa0003", "diverged", "2"]]
    assert rows[0][5:] == ["9.26", "12.3%", "0.0123", "8"]  # 3 significant digits, not raw floats
    shown = re.sub(r"<script>.*</script>|<[^>]+>", "", page, flags=re.S)  # what a reader sees (sorting keys stay exact)
    assert "0.012296071107325713" not in shown and '{"' not in shown  # no raw floats, no JSON


def test_glossary_explains_every_figure_shown(experiment_page):
    page = experiment_page.read_text()
    glossary = page[page.index('id="glossary"') :]
    numbers = page[page.index('id="numbers"') : page.index('id="plots"')]
    for label in re.findall(r"<tr><th>([^<]+)</th><td>[^<]*\d", numbers[: numbers.index("<h3>")]):
        assert f"<dt>{label}</dt>" in glossary, label
    for unit in ("Unit: nats per frame; lower is better.", "Unit: %; higher is better."):
        assert unit in glossary


def test_experiment_serves_the_page_not_the_study(experiment_page):
    srv = make_server(experiment_page.parent, port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        assert get(srv, "/optuna.db")[0] == 404 and get(srv, "/best.json")[0] == 404 and get(srv, "/")[0] == 200
        assert get(srv, "/samples/trial_aaaa0001/continuation_0.wav")[0] == 200
    finally:
        srv.shutdown()
        srv.server_close()


def test_not_an_experiment_or_run(tmp_path):
    with pytest.raises(GalleryError, match="neither an experiment directory"):
        build_page(tmp_path)


def test_server_serves_inside_and_refuses_outside(server, run_page, tmp_path):
    status, body = get(server, "/index.html")
    assert status == 200 and body == run_page.read_bytes()
    assert get(server, "/samples/sample_0.wav")[0] == 200
    for path in ("/../../etc/passwd", "/samples/../../gallery0", "/%2e%2e/%2e%2e/etc/passwd"):
        assert get(server, path)[0] == 403, path
    outside = tmp_path / "secret.txt"
    outside.write_text("not for the page")
    (run_page.parent / "link").symlink_to(outside)
    try:
        assert get(server, "/link")[0] == 403  # a symlink out of the directory is refused too
    finally:
        (run_page.parent / "link").unlink()
    assert server.server_address[0] == "127.0.0.1"


class Chromium:
    """Real headless Chromium, driven through the DevTools protocol on a pipe (fds 3 and 4 in
    the browser: NUL-terminated JSON messages), so no WebSocket client is needed."""

    def __init__(self, url: str, width: int, height: int):
        assert CHROMIUM, "Debian's chromium is needed for this test: apt-get install chromium (.ci/run installs it)"
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()

        def wire():  # in the child, before exec: the protocol's fds
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--mute-audio", "--hide-scrollbars", "--remote-debugging-pipe", f"--window-size={width},{height}"]
        self.process = subprocess.Popen([CHROMIUM, *flags, "about:blank"], preexec_fn=wire, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._id = b"", 0
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.call("Page.enable", self.session)
        self.call("Emulation.setDeviceMetricsOverride", self.session, width=width, height=height, deviceScaleFactor=1, mobile=False)  # the viewport, exactly
        self.call("Page.navigate", self.session, url=url)
        self._next(lambda m: m.get("method") == "Page.loadEventFired")

    def _next(self, wanted) -> dict:
        """Read messages until one for which wanted(message) holds (events between are dropped)."""
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._in, 1 << 16)
                assert chunk, "chromium closed the DevTools pipe"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            message = json.loads(raw)
            if wanted(message):
                return message

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._out, json.dumps(message).encode() + b"\0")
        reply = self._next(lambda m: m.get("id") == self._id)
        assert "error" not in reply, reply["error"]
        return reply["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", self.session, expression=expression, awaitPromise=True, returnByValue=True, timeout=60000)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        shot = self.call("Page.captureScreenshot", self.session, format="png", captureBeyondViewport=full_page)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self):
        self.process.kill()
        self.process.wait(timeout=30)
        os.close(self._in)
        os.close(self._out)


# Waits until the page has loaded and every <img> and <audio> carries the data-status the
# page's own script sets (or 30 s pass), then reports them.
MEDIA_SETTLED = """(async () => {
  const media = () => [...document.querySelectorAll("img, audio")];
  for (let i = 0; i < 600 && (document.readyState !== "complete" || media().some((e) => !e.dataset.status)); i++)
    await new Promise((r) => setTimeout(r, 50));
  return media().map((e) => [e.tagName, e.getAttribute("src"), e.dataset.status || "pending"]);
})()"""


@pytest.fixture
def experiment_server(experiment_page):
    srv = make_server(experiment_page.parent, port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


@pytest.mark.slow
def test_chromium_on_a_laptop_screen_plays_first_loads_everything_and_sorts(experiment_server, experiment_page, png_size):
    browser = Chromium(experiment_server, 1366, 768)
    try:
        media = browser.evaluate(MEDIA_SETTLED)
        stats = json.loads((experiment_page.parent / "samples/trial_aaaa0001/stats.json").read_text())
        assert len(media) == 2 * (2 + 1 + 1) + 1 and all(status == "loaded" for *_, status in media), media  # 4 players, 4 rolls, 1 curve
        assert media[0] == ["AUDIO", f"samples/trial_aaaa0001/{stats['samples'][0]['wav']}", "loaded"]
        # Above the fold of a laptop screen: the headline and the first player with its piano roll.
        first = browser.evaluate("""(() => { const r = (q) => document.querySelector(q).getBoundingClientRect();
            return [innerHeight, r("#listen audio").bottom, r("#listen img").bottom, r("#trials").top]; })()""")
        assert first[0] == 768 and first[1] < 768 and first[2] < 768 < first[3], first
        # Clicking a heading sorts the trials by it; clicking again reverses.
        column = """((i) => { document.querySelectorAll("table.sortable th")[i].click();
            return [...document.querySelectorAll("table.sortable tbody tr")].map((r) => r.cells[1].textContent); })"""
        assert browser.evaluate(column + "(3)") == ["aaaa0002", "aaaa0003", "aaaa0001"]  # epochs 1, 2, 4
        assert browser.evaluate(column + "(3)") == ["aaaa0001", "aaaa0003", "aaaa0002"]
        assert browser.evaluate(column + "(2)") == ["aaaa0003", "aaaa0001", "aaaa0002"]  # diverged, finished, stopped early
        browser.evaluate(column + "(0)")  # back to rank order for the picture
        kept = Path(__file__).resolve().parent.parent / ".pytest_cache"
        kept.mkdir(exist_ok=True)
        assert png_size(browser.screenshot(kept / "gallery.png")) == (1366, 768)
        width, height = png_size(browser.screenshot(kept / "gallery-full.png", full_page=True))
        assert width == 1366 and height > 2 * 768
        print(f"screenshots: {kept / 'gallery.png'}, {kept / 'gallery-full.png'}", file=sys.stderr)
    finally:
        browser.close()


@pytest.mark.slow
def test_chromium_loads_every_audio_and_image_of_a_run_page(server, run_page):
    browser = Chromium(f"http://127.0.0.1:{server.server_address[1]}/index.html", 1200, 900)
    try:
        media = browser.evaluate(MEDIA_SETTLED)
    finally:
        browser.close()
    assert len(media) == 2 * (4 + 2 + 2) + 1 and all(status == "loaded" for *_, status in media), media


def test_gallery_cli_no_serve(run_page):
    out = subprocess.run([sys.executable, "-m", "rbmsearch.gallery", str(run_page.parent), "--no-serve"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(run_page)
    bad = subprocess.run([sys.executable, "-m", "rbmsearch.gallery", str(run_page.parent / "samples"), "--no-serve"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode != 0 and "neither an experiment directory" in bad.stderr


def test_server_serves_only_what_the_page_links(server, run_page):
    run = run_page.parent
    assert (run / "params.npz").is_file() and (run / "config.json").is_file()
    for path in ("/params.npz", "/config.json", "/metrics.json", "/ckpt/checkpoint", "/samples/stats.json"):
        assert get(server, path)[0] == 404, path  # on disk, but not on the page
    assert get(server, "/samples/")[0] == 404  # no directory listing
    status, body = get(server, "/")
    assert status == 200 and body == run_page.read_bytes()
    assert get(server, "/%00")[0] == 400  # answered, not a dropped connection and a traceback
    assert get(server, "/samples/sample_0.png")[0] == 200


def test_server_answers_200_concurrent_requests_and_a_slow_client_blocks_no_one(server):
    import socket
    from concurrent.futures import ThreadPoolExecutor

    port = server.server_address[1]
    slow = socket.create_connection(("127.0.0.1", port))  # sends nothing: it holds one thread until its timeout
    try:
        slow.sendall(b"GET /index.html HTTP/1.1\r\n")  # and never finishes its request
        with ThreadPoolExecutor(200) as pool:
            statuses = list(pool.map(lambda _: get(server, "/samples/sample_0.mid")[0], range(200)))
        assert statuses == [200] * 200
    finally:
        slow.close()
