"""rbmsearch.gallery: the gallery page, its local server, and a real headless Chromium loading it
(marked slow)."""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rbmsearch.gallery import GalleryError, build_page, make_server

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


def test_run_page_lists_samples_reference_and_curve(run_page, png_size):
    run = run_page.parent
    page = run_page.read_text()
    audio = re.findall(r'<audio[^>]* src="([^"]+)"', page)
    images = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert audio == [f"samples/sample_{i}.wav" for i in range(8)] + ["samples/reference.wav"]
    assert "learning_curves.png" in images and len(images) == 1 + 9
    assert all((run / src).is_file() for src in audio + images)
    assert all((run / href).is_file() for href in re.findall(r'<a href="([^"]+\.mid)" download>', page))
    assert "training piece p" in page and "test_nll" not in page  # no test score was computed for this run
    assert png_size(run / "learning_curves.png") == (800, 400)


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


@pytest.mark.slow
def test_headless_chromium_loads_every_audio_and_image(server, run_page, tmp_path, png_size):
    assert CHROMIUM, "Debian's chromium is needed for this test: apt-get install chromium (.ci/run installs it)"
    url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--mute-audio", "--virtual-time-budget=15000"]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    media = re.findall(r"<(img|audio)\b[^>]*>", dom)
    statuses = re.findall(r"<(?:img|audio)\b[^>]*data-status=\"(\w+)\"", dom)
    assert len(media) == 19 and statuses == ["loaded"] * 19, dom[-2000:]  # 9 players, 9 rolls, 1 curve
    shot = tmp_path / "gallery.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,2000", url], capture_output=True, timeout=120, check=True)
    assert png_size(shot) == (1200, 2000)
    kept = Path(__file__).resolve().parent.parent / ".pytest_cache" / "gallery.png"
    kept.parent.mkdir(exist_ok=True)
    shutil.copy(shot, kept)
    print(f"screenshot: {kept}", file=sys.stderr)


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
