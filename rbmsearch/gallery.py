"""The gallery: a page of the best samples, served locally; the viewing stage.

    python -m rbmsearch.gallery EXPERIMENT_OR_RUN_DIR [--port P] [--no-serve]

Writes `index.html` (and `learning_curves.png`) into an experiment directory (`rbmsearch.tune`)
or a run directory (`rbmsearch.train`; its samples are rendered first if missing), then serves
the directory on 127.0.0.1 only: a path that leaves it is refused. The page shows the best
configuration and metrics, learning curves, the search plots, and each rendered trial's
samples as players, piano rolls and MIDI links beside a training piece.
"""

from __future__ import annotations

import argparse
import functools
import html
import http.server
import json
import os
import re
import urllib.parse
from pathlib import Path

from rbmsearch.console import cli
from rbmsearch.errors import GalleryError
from rbmsearch.files import atomic_write, read_json, write_text
from rbmsearch.render import render_run

__all__ = ["GalleryError", "build_page", "make_server", "serve"]

TOP_CURVES = 10  # learning curves drawn on the page


def _read_json(path: Path):
    """A JSON file the page shows, or None when there is none; a broken one raises GalleryError naming it."""
    return read_json(path, GalleryError, "rerun the stage that wrote it, or remove the file") if path.is_file() else None


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port in 0..65535 must be specified, but got {port}")
    return port


def _kind(directory: Path) -> str:
    if (directory / "best.json").is_file() and (directory / "trials.json").is_file():
        return "experiment"
    if (directory / "config.json").is_file() and (directory / "params.npz").is_file():
        return "run"
    raise GalleryError(
        directory,
        "neither an experiment directory (best.json + trials.json, from `python -m rbmsearch.tune`) "
        "nor a run directory (config.json + params.npz, from `python -m rbmsearch.train`); pass one of those.",
    )


def _table(rows: dict) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows.items())
    return f"<table>{cells}</table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def _curves_png(directory: Path, curves: dict[str, dict[int, float]], ylabel: str) -> str | None:
    """learning_curves.png: one line per trial (epoch -> metric). Returns its name, or None."""
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    for label, curve in curves.items():
        epochs = sorted(curve)
        ax.plot(epochs, [curve[e] for e in epochs], marker="." if len(epochs) < 30 else None, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(directory / "learning_curves.png", lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return "learning_curves.png"


def _media(directory: Path, folder: Path, stem: str, caption: str) -> str:
    rel = folder.relative_to(directory).as_posix()
    q = lambda name: urllib.parse.quote(f"{rel}/{name}")  # noqa: E731
    return (
        f'<figure><figcaption>{html.escape(caption)} · <a href="{q(stem + ".mid")}" download>MIDI</a></figcaption>'
        f'<audio controls preload="auto" src="{q(stem + ".wav")}"></audio>'
        f'<img src="{q(stem + ".png")}" alt="{html.escape(caption)} piano roll" width="1000" height="350"></figure>'
    )


def _samples_section(directory: Path, folder: Path, heading: str) -> str:
    stats = _read_json(folder / "stats.json")
    if stats is None:
        return f"<section><h3>{html.escape(heading)}</h3><p>No samples were rendered here.</p></section>"
    parts = [f"<section><h3>{html.escape(heading)}</h3>"]
    compare = {name: {k: v for k, v in s.items() if k not in ("frames", "notes")} for name, s in stats["stats"].items()}
    parts.append("<table><tr><th></th>" + "".join(f"<th>{html.escape(k)}</th>" for k in next(iter(compare.values()))) + "</tr>")
    for name, s in compare.items():
        parts.append(f"<tr><th>{html.escape(name)}</th>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in s.values()) + "</tr>")
    parts.append("</table>")
    for i, sample in enumerate(stats["samples"]):
        parts.append(_media(directory, folder, Path(sample["midi"]).stem, f"sample {i}"))
    if stats.get("reference"):
        parts.append(_media(directory, folder, "reference", f"for comparison, training piece {stats['reference']['piece']}"))
    parts.append("</section>")
    return "".join(parts)


STYLE = """body{font-family:system-ui,sans-serif;max-width:1080px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:90%}
figure{margin:1em 0}audio{display:block;width:100%}img{max-width:100%;height:auto;display:block}
[data-status=missing]{outline:3px solid #c00}"""
# Marks every <img> and <audio> data-status="loaded" or "missing" (outlined in red), so a broken
# file shows on the page, and a headless browser's DOM tells which media loaded.
MEDIA_CHECK = """<script>
for (const el of document.querySelectorAll("img, audio")) {
  const mark = (status) => () => { el.dataset.status = status; };
  const ready = el.tagName === "IMG" ? el.complete && el.naturalWidth > 0 : el.readyState >= 1;
  if (ready) { el.dataset.status = "loaded"; continue; }
  el.addEventListener(el.tagName === "IMG" ? "load" : "loadedmetadata", mark("loaded"));
  el.addEventListener("error", mark("missing"));
}
</script>"""


def build_page(directory: str | os.PathLike) -> Path:
    """Write index.html for an experiment or run directory; returns its path."""
    directory = Path(directory).resolve()
    kind = _kind(directory)
    body = []
    if kind == "experiment":
        best = _read_json(directory / "best.json")
        trials = _read_json(directory / "trials.json")
        metric = next((k for k in ("valid_monitor", "valid_acc") if k in best.get("metrics", {})), "valid_monitor")
        body.append(f"<h1>rbmsearch: {html.escape(directory.name)}</h1>")
        body.append(f"<h2>Best trial {html.escape(str(best.get('trial_id')))}</h2>")
        body.append("<h3>Metrics</h3>" + _table(best.get("metrics", {})))
        body.append("<h3>Configuration</h3>" + _table(best.get("config", {})))
        finished = [t for t in trials if t.get("best")]
        curves = {f"trial {t['trial_id']}": {int(e): v for e, v in t.get("history", {}).items()} for t in finished[:TOP_CURVES]}
        plots = [name for name in (_curves_png(directory, curves, metric), "history.png", "importance.png") if name and (directory / name).is_file()]
        body.append("<h2>Search</h2>" + "".join(f'<img src="{name}" alt="{name}">' for name in plots))
        rows = "".join(
            f"<tr><td>{i}</td><td>{html.escape(t['trial_id'])}</td><td>{html.escape(_fmt(t['best'].get(metric, '')))}</td>"
            f"<td>{html.escape(_fmt(t['best'].get('valid_acc', '')))}</td><td>{html.escape(_fmt(t['params']))}</td></tr>"
            for i, t in enumerate(finished, 1)
        )  # fmt: skip
        body.append(f"<table><tr><th>rank</th><th>trial</th><th>{metric}</th><th>valid_acc</th><th>parameters</th></tr>{rows}</table>")
        body.append("<h2>Samples of the top trials</h2>")
        for rank, t in enumerate(finished, 1):
            folder = directory / "samples" / f"trial_{t['trial_id']}"
            if folder.is_dir():
                body.append(_samples_section(directory, folder, f"#{rank}: trial {t['trial_id']} ({metric} {_fmt(t['best'].get(metric))})"))
    else:
        config = _read_json(directory / "config.json")
        metrics = _read_json(directory / "metrics.json") or {}
        folder = directory / "samples"
        if not (folder / "stats.json").is_file():
            render_run(directory, folder)
        body.append(f"<h1>rbmsearch run: {html.escape(directory.name)}</h1>")
        summary = {k: v for k, v in metrics.items() if k in ("best_epoch", "test_nll", "test_nll_ci95", "test_nll_raise", "test_acc", "test_acc_decoded", "test_frames", "test_frames_in_split")}
        body.append("<h3>Metrics</h3>" + _table(summary) + "<h3>Configuration</h3>" + _table(config.get("train", {})))
        history = metrics.get("history", [])
        curve = _curves_png(directory, {"valid_monitor": {h["epoch"]: h["valid_monitor"] for h in history}}, "validation monitor (nats/frame)")
        if curve:
            body.append(f'<h2>Learning curve</h2><img src="{curve}" alt="learning curve">')
        body.append(_samples_section(directory, folder, "Samples"))
    page = f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>rbmsearch: {html.escape(directory.name)}</title><style>{STYLE}</style></head><body>{"".join(body)}{MEDIA_CHECK}</body></html>\n'  # fmt: skip
    return write_text(directory / "index.html", page)


_LINK = re.compile(r'(?:src|href)="([^"#?]+)')
REQUEST_TIMEOUT_S = 10  # a client that sends nothing for this long is dropped, freeing its thread
BACKLOG = 128  # connections waiting to be accepted (the standard library's default is 5)


def linked_files(page: Path) -> frozenset[str]:
    """What index.html links, as paths relative to its directory, and the page itself: all that is served."""
    try:
        stamp = page.stat().st_mtime_ns
    except OSError:
        return frozenset({"index.html"})
    return _parse_links(page, stamp)


@functools.lru_cache(maxsize=8)
def _parse_links(page: Path, stamp: int) -> frozenset[str]:
    """The links of one version of the page (`stamp`: its mtime), parsed once, not per request."""
    links = {urllib.parse.unquote(m) for m in _LINK.findall(page.read_text())}
    return frozenset({"index.html"} | {link for link in links if "://" not in link and not link.startswith("/")})


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the files the page links, from one directory: nothing else, no listings, nothing outside."""

    timeout = REQUEST_TIMEOUT_S

    def __init__(self, *args, directory: str, **kwargs):
        self.root = Path(directory).resolve()
        super().__init__(*args, directory=str(self.root), **kwargs)

    def send_head(self):
        raw = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if "\x00" in raw:
            self.send_error(400, "a path with a NUL byte")
            return None
        target = (self.root / raw.lstrip("/")).resolve()
        if ".." in Path(raw).parts or not target.is_relative_to(self.root):
            self.send_error(403, "outside the served directory")
            return None
        relative = target.relative_to(self.root).as_posix() if target != self.root else "index.html"
        if relative not in linked_files(self.root / "index.html"):
            self.send_error(404, "not a file of the gallery page")
            return None
        if target == self.root:
            self.path = "/index.html"
        return super().send_head()

    def list_directory(self, path):  # never list a directory
        self.send_error(404, "no directory listings")
        return None

    def log_message(self, format, *args):  # quiet: one line per request on stderr is noise
        pass


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = BACKLOG
    daemon_threads = True  # a stuck client never keeps the process alive


def make_server(directory: str | os.PathLike, port: int = 8000) -> http.server.ThreadingHTTPServer:
    """An HTTP server for `directory` on 127.0.0.1:port (0 picks a free port); not started."""
    handler = functools.partial(_Handler, directory=str(directory))
    return _Server(("127.0.0.1", port), handler)


def serve(directory: str | os.PathLike, port: int = 8000) -> None:
    server = make_server(directory, port)
    print(f"serving {directory} at http://127.0.0.1:{server.server_address[1]}/  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@cli
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rbmsearch.gallery", description="Build and serve the gallery of a search or a run.")
    parser.add_argument("directory", help="an experiment directory (rbmsearch.tune) or a run directory (rbmsearch.train)")
    parser.add_argument("--port", type=_port, default=8000, help="port on 127.0.0.1 (default 8000; 0 picks a free one)")
    parser.add_argument("--no-serve", action="store_true", help="write the page and print its path")
    args = parser.parse_args(argv)
    page = build_page(args.directory)
    if args.no_serve:
        print(page)
        return
    try:
        serve(page.parent, args.port)
    except OSError as e:
        raise SystemExit(f"error: cannot serve on 127.0.0.1:{args.port} ({e}); choose another --port") from e


if __name__ == "__main__":
    main()
