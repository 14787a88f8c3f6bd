"""The gallery: a page of the best samples, served locally; the viewing stage.

    python -m rbmsearch.gallery EXPERIMENT_OR_RUN_DIR [--port P] [--no-serve]

Writes `index.html` (and `learning_curves.png`) into an experiment directory (`rbmsearch.tune`)
or a run directory (`rbmsearch.train`; its samples are rendered first if missing), and serves
on 127.0.0.1 only the files the page links. The page leads with the music: the best model's
samples (players, piano rolls, MIDI and WAV downloads), then training pieces and test pieces
continued by the model, a sortable table of the trials, the best trial's figures with their
units, the plots, and a glossary of every figure.
"""

from __future__ import annotations

import argparse
import functools
import html
import http.server
import os
import re
import urllib.parse
from pathlib import Path

from rbmsearch.console import cli
from rbmsearch.errors import GalleryError
from rbmsearch.files import atomic_write, read_json, write_text
from rbmsearch.render import beats_text, render_run

__all__ = ["GalleryError", "build_page", "make_server", "serve"]

TOP_CURVES = 10  # learning curves drawn on the page
RUN_SAMPLES, RUN_SAMPLE_QUARTERS = 4, 32  # what a run directory's page renders when it has no samples: as a search does

# Every figure the page shows: its label, unit, which way is better, and what it is.
GLOSSARY = {
    "test_nll": ("test NLL", "nats per frame", "lower", "negative log-likelihood of each test frame given the piece so far, by annealed importance sampling (AIS), averaged over frames; ± its 95% interval"),
    "test_nll_whole_split": ("test NLL, the whole split", "nats per frame", "lower", "where only a subsample was scored in full: the whole test split's NLL, regressed on a cheap score of every frame; ± its 95% interval"),
    "test_nll_raise": ("test NLL by RAISE", "nats per frame", "lower", "the same by RAISE, which errs high: the estimate is settled when it is close to the test NLL"),
    "test_acc": ("sampled accuracy", "%", "higher", "frame accuracy (Bay et al., as in the paper) of frames sampled from the model given the true history"),
    "test_acc_decoded": ("best-guess accuracy", "%", "higher", "frame accuracy of the model's most likely next frame"),
    "acc_repeat": ("repeat baseline", "%", "higher", "frame accuracy of copying the previous frame: a useful model beats it"),
    "test_frames": ("test frames scored", "frames", "", "the frames of the test split the score is taken on (an even subsample when fewer than the split has)"),
    "valid_monitor": ("validation monitor", "nats per frame", "lower", "the search's objective: a cheap RAISE estimate of the validation NLL after each epoch; it errs high"),
    "valid_acc": ("validation accuracy", "%", "higher", "sampled frame accuracy on a subsample of the validation split, after each epoch"),
    "epoch": ("best epoch", "epochs", "", "the epoch of the checkpoint the figures belong to"),
    "epochs": ("epochs", "epochs", "", "epochs the trial trained; fewer than the most means ASHA stopped it early"),
    "train_cost": ("training cost", "nats", "", "contrastive divergence's surrogate (a free-energy difference); not comparable between models"),
    "train_frames_per_s": ("training speed", "frames per second", "higher", "training frames processed per second of the trial"),
}
PERCENT = frozenset({"test_acc", "test_acc_decoded", "acc_repeat", "valid_acc"})
ROLL_STATS = {  # rbmsearch.render.roll_stats, as the comparison table names them
    "notes_per_frame": "notes per step",
    "empty_frame_rate": "silent steps",
    "pitch_range": "pitch range",
    "pitch_class_entropy": "pitch-class entropy (bits)",
    "scale_consistency": "in one key's scale",
    "repeat_rate": "notes held on",
}


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


def _fmt(value) -> str:
    """A value as a reader wants it: 3 significant digits, no JSON."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e3 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 1e4 else str(value)
    if isinstance(value, list | tuple):
        return "–".join(_fmt(v) for v in value)
    return str(value)


def _metric(key: str, value) -> str:
    """A metric with its unit: '6.21 nats per frame', '21.5%'."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return html.escape(_fmt(value))
    if key in PERCENT:
        return f"{100 * value:.1f}%"
    unit = GLOSSARY.get(key, ("", "", "", ""))[1]
    text = f"{value:.3f}" if unit == "nats per frame" else _fmt(value)
    return html.escape(f"{text} {unit}" if unit and unit not in ("%", "epochs", "frames") else text)


def _metrics_table(metrics: dict) -> str:
    rows = []
    whole = metrics.get("test_frames") == metrics.get("test_frames_in_split")  # then the whole-split row would repeat test_nll
    for key, (label, unit, better, _) in GLOSSARY.items():
        if metrics.get(key) is not None and not (whole and key == "test_nll_whole_split"):
            value = _metric(key, metrics[key])
            if key in ("test_nll", "test_nll_whole_split") and metrics.get(f"{key}_ci95") is not None:
                value += f" ± {metrics[f'{key}_ci95']:.3f}"
            hint = f' <span class="hint">({better} is better)</span>' if better else ""
            rows.append(f"<tr><th>{html.escape(label)}</th><td>{value}{hint}</td></tr>")
    return f"<table>{''.join(rows)}</table>"


def _params_table(config: dict) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in config.items() if not isinstance(v, dict))
    return f"<table>{cells}</table>"


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


def _card(directory: Path, folder: Path, item: dict, caption: str) -> str:
    """One piece: its caption with MIDI and WAV downloads, a player, and its piano roll."""
    rel = folder.relative_to(directory).as_posix()
    q = lambda name: urllib.parse.quote(f"{rel}/{name}")  # noqa: E731
    stem = Path(item["midi"]).stem
    return (
        f'<figure class="piece"><figcaption><b>{html.escape(caption)}</b> · '
        f'<a href="{q(stem + ".mid")}" download>MIDI</a> · <a href="{q(stem + ".wav")}" download>WAV</a></figcaption>'
        f'<audio controls preload="metadata" src="{q(stem + ".wav")}"></audio>'
        f'<img src="{q(stem + ".png")}" alt="piano roll of {html.escape(caption)}" width="1000" height="350" loading="lazy"></figure>'
    )


def _references(stats: dict) -> list[dict]:
    """The training pieces a render shows beside its samples (one, under "reference", before 'references')."""
    return stats.get("references") or ([stats["reference"]] if stats.get("reference") else [])


def _listen(directory: Path, folder: Path, stats: dict, who: str) -> str:
    settings = stats.get("settings", {})
    how = f"{settings.get('gibbs_k', 25)} Gibbs steps per frame, seed {settings.get('seed', 0)}"
    start = f"continuing training piece {settings['primer']}" if settings.get("primer") else "from silence"
    cards = "".join(_card(directory, folder, s, f"sample {i + 1}") for i, s in enumerate(stats["samples"]))
    return (
        f'<section id="listen"><h2>Listen: {html.escape(who)}</h2>'
        f'<p class="note">Made {html.escape(start)} ({html.escape(how)}). Audio: {html.escape(stats.get("sound", stats.get("synth", "")))}.</p><div class="pieces">{cards}</div></section>'
    )


def _compare(directory: Path, folder: Path, stats: dict) -> str:
    parts = []
    for c in stats.get("continuations", []):
        beats = beats_text(c["primer_steps"], stats.get("settings", {}).get("steps_per_quarter", 1))
        parts.append(_card(directory, folder, c, f"{c['split']} piece {c['piece']}: {beats} of it (grey), then the model"))
    parts += [_card(directory, folder, r, f"training piece {r['piece']}") for r in _references(stats)]
    rows = ""
    compared = stats.get("stats", {})
    if compared:
        header = "".join(f"<th>{html.escape(name.replace('_', ' '))}</th>" for name in compared)
        for key, label in ROLL_STATS.items():
            rows += f"<tr><th>{html.escape(label)}</th>" + "".join(f"<td>{html.escape(_stat(key, s.get(key)))}</td>" for s in compared.values()) + "</tr>"
        rows = f"<table><tr><th></th>{header}</tr>{rows}</table>"
    if not parts and not rows:
        return ""
    return f'<section id="compare"><h2>Compare: the data, and the model continuing it</h2>{rows}<div class="pieces">{"".join(parts)}</div></section>'


def _stat(key: str, value) -> str:
    if value is None:
        return "–"
    if key in ("empty_frame_rate", "scale_consistency", "repeat_rate"):
        return f"{100 * value:.0f}%"
    if key == "pitch_range":
        from rbmsearch.render import note_name

        return "–".join(note_name(p) for p in value)
    return _fmt(value)


def _trial_status(trial: dict, max_epochs) -> str:
    if trial.get("status") == "ERROR":
        return "diverged" if "diverged" in trial.get("error", "") else "failed"
    if isinstance(max_epochs, int) and trial.get("epochs", 0) < max_epochs:
        return "stopped early"
    return "finished"


def _trials_table(trials: list[dict], metric: str, max_epochs, best_id: str) -> str:
    """Every trial, ranked, sortable by any column (click its heading)."""
    names = sorted({k for t in trials for k in t.get("params", {})})
    heads = ["rank", "trial", "status", "epochs", "best epoch", GLOSSARY.get(metric, (metric,))[0], "validation accuracy", *names]
    rows = []
    rank = 0
    for t in trials:
        best = t.get("best") or {}
        rank += bool(best)
        cells = [(rank if best else "", rank if best else 1e9), (t["trial_id"], t["trial_id"]), (_trial_status(t, max_epochs),) * 2, (t.get("epochs", ""),) * 2, (best.get("epoch", ""),) * 2]
        cells += [(_fmt(best.get(metric, "")), best.get(metric, "")), (f"{100 * best['valid_acc']:.1f}%" if "valid_acc" in best else "", best.get("valid_acc", ""))]
        cells += [(_fmt(t["params"].get(n, "")), t["params"].get(n, "")) for n in names]
        tds = "".join(f'<td data-sort="{html.escape(str(key))}">{html.escape(str(shown))}</td>' for shown, key in cells)
        rows.append(f'<tr{" class=best" if t["trial_id"] == best_id else ""}>{tds}</tr>')
    head = "".join(f"<th>{html.escape(h)}</th>" for h in heads)
    return f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _glossary(keys) -> str:
    items = "".join(
        f"<dt>{html.escape(GLOSSARY[k][0])}</dt><dd>{html.escape(GLOSSARY[k][3])}. Unit: {html.escape(GLOSSARY[k][1])}" + (f"; {GLOSSARY[k][2]} is better." if GLOSSARY[k][2] else ".") + "</dd>"
        for k in GLOSSARY if k in keys
    )  # fmt: skip
    return f'<section id="glossary"><h2>Glossary</h2><dl>{items}</dl></section>'


STYLE = """body{font-family:system-ui,sans-serif;max-width:1080px;margin:1em auto;padding:0 1em;color:#222;line-height:1.35}
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.15em;margin:1.2em 0 .4em;border-bottom:1px solid #ddd}
.headline{font-size:1.05em;margin:.2em 0 .6em}.note,.hint{color:#666;font-size:90%}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:2px 8px;text-align:left;font-size:90%}
.scroll{overflow-x:auto}.scroll td{white-space:nowrap}table.sortable th{cursor:pointer;background:#f6f6f6;white-space:nowrap}table.sortable th:after{content:" ⇅";color:#aaa}
tr.best{background:#eef5ff}.pieces{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:0 1.2em}
figure.piece{margin:.6em 0 1em}figcaption{margin-bottom:.3em}
audio{display:block;width:100%;height:36px}img{max-width:100%;height:auto;display:block}dt{font-weight:600;margin-top:.4em}dd{margin-left:1.2em}
[data-status=missing]{outline:3px solid #c00}"""
# Marks every <img> and <audio> data-status="loaded" or "missing" (outlined in red), so a broken
# file shows on the page, and a headless browser's DOM tells which media loaded. Sorts a
# table.sortable by the column whose heading is clicked (numbers as numbers; again: reversed).
SCRIPT = """<script>
for (const el of document.querySelectorAll("img, audio")) {
  const mark = (status) => () => { el.dataset.status = status; };
  if (el.tagName === "IMG") el.loading = "eager";
  const ready = el.tagName === "IMG" ? el.complete && el.naturalWidth > 0 : el.readyState >= 1;
  if (ready) { el.dataset.status = "loaded"; continue; }
  el.addEventListener(el.tagName === "IMG" ? "load" : "loadedmetadata", mark("loaded"));
  el.addEventListener("error", mark("missing"));
}
for (const table of document.querySelectorAll("table.sortable")) {
  table.querySelectorAll("th").forEach((th, col) => th.addEventListener("click", () => {
    const body = table.tBodies[0], up = th.dataset.order !== "up";
    const key = (row) => { const v = row.cells[col].dataset.sort; const n = parseFloat(v); return v !== "" && !isNaN(n) && isFinite(v) ? n : v; };
    const rows = [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
      const c = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : typeof x === "number" ? -1 : 1; return up ? c : -c; });
    table.querySelectorAll("th").forEach((h) => delete h.dataset.order);
    th.dataset.order = up ? "up" : "down";
    rows.forEach((row) => body.appendChild(row));
  }));
}
</script>"""


def _experiment_body(directory: Path) -> list[str]:
    best = _read_json(directory / "best.json")
    trials = _read_json(directory / "trials.json")
    search = _read_json(directory / "search.json") or {}
    settings = search.get("space", {}).get("search", {})
    metric = next((k for k in ("valid_monitor", "valid_acc") if k in best.get("metrics", {})), "valid_monitor")
    best_id = str(best.get("trial_id"))
    metrics = {**best.get("metrics", {}), **{k: v for k, v in best.get("test_eval", {}).items() if k == "acc_repeat"}}
    folder = directory / "samples" / f"trial_{best_id}"
    stats = _read_json(folder / "stats.json")
    data = best.get("data", {})
    headline = [f"{len(trials)} trials on {data.get('source') or data.get('path', 'the data')}; the best is trial {best_id}"]
    if "test_nll" in metrics:
        sub = "" if metrics.get("test_frames") == metrics.get("test_frames_in_split") else f" on an even subsample of {metrics.get('test_frames'):,} frames"
        if sub and metrics.get("test_nll_whole_split") is not None:
            sub += f", the whole split {metrics['test_nll_whole_split']:.3f} ± {metrics['test_nll_whole_split_ci95']:.3f} by regression on a cheap score of every frame"
        headline.append(f"test NLL <b>{metrics['test_nll']:.3f} ± {metrics.get('test_nll_ci95', float('nan')):.3f}</b> nats per frame{sub} (lower is better)")
    if "test_acc_decoded" in metrics:
        headline.append(f"best-guess accuracy {100 * metrics['test_acc_decoded']:.1f}%" + (f" against {100 * metrics['acc_repeat']:.1f}% for repeating the last frame" if "acc_repeat" in metrics else ""))
    body = [f"<h1>rbmsearch: {html.escape(directory.name)}</h1>", f'<p class="headline">{"; ".join(headline)}.</p>']
    if stats is not None:
        body.append(_listen(directory, folder, stats, f"the best model (trial {best_id}, epoch {metrics.get('epoch', '?')})"))
        body.append(_compare(directory, folder, stats))
    else:
        body.append('<section id="listen"><h2>Listen</h2><p>No samples were rendered for the best trial (search setting <code>samples</code> is 0, or rendering failed: see the search\'s log).</p></section>')
    body.append(f"<section id=\"trials\"><h2>Trials</h2><p class=\"note\">Click a heading to sort. The best trial is highlighted; \"stopped early\" means ASHA ended it before {settings.get('max_epochs', 'the most')} epochs.</p>")
    body.append(_trials_table(trials, metric, settings.get("max_epochs"), best_id) + "</section>")
    for t in trials:
        other = directory / "samples" / f"trial_{t['trial_id']}"
        other_stats = _read_json(other / "stats.json") if t.get("best") and str(t["trial_id"]) != best_id else None
        if other_stats is None:  # not rendered (or the best, shown above)
            continue
        cards = "".join(_card(directory, other, s, f"trial {t['trial_id']}, sample {i + 1}") for i, s in enumerate(other_stats["samples"]))
        body.append(f"<details><summary>Samples of trial {html.escape(str(t['trial_id']))} ({html.escape(GLOSSARY[metric][0])} {_fmt(t['best'].get(metric))})</summary><div class=\"pieces\">{cards}</div></details>")
    config = f'<h3>Its searched parameters</h3>{_params_table(best.get("params", {}))}'
    if best.get("config"):
        config += f'<details><summary>Every training setting</summary>{_params_table(best["config"])}</details>'
    body.append(f'<section id="numbers"><h2>The best trial in numbers</h2>{_metrics_table(metrics)}{config}</section>')
    finished = [t for t in trials if t.get("best")]
    curves = {f"trial {t['trial_id']}": {int(e): v for e, v in t.get("history", {}).items()} for t in finished[:TOP_CURVES]}
    plots = [(name, caption) for name, caption in (
        (_curves_png(directory, curves, f"{GLOSSARY[metric][0]} ({GLOSSARY[metric][1]})"), f"learning curves of the best {TOP_CURVES} trials"),
        ("history.png", "the objective of each trial in the order they ran (Optuna)"),
        ("importance.png", "how much each parameter mattered to the objective (Optuna's fANOVA)"),
    ) if name and (directory / name).is_file()]  # fmt: skip
    body.append('<section id="plots"><h2>Plots</h2>' + "".join(f'<figure><img src="{n}" alt="{html.escape(c)}"><figcaption class="note">{html.escape(c)}</figcaption></figure>' for n, c in plots) + "</section>")
    body.append(_glossary({*metrics, "epochs"}))
    return body


def _run_body(directory: Path) -> list[str]:
    config = _read_json(directory / "config.json")
    metrics = _read_json(directory / "metrics.json") or {}
    folder = directory / "samples"
    if not (folder / "stats.json").is_file():
        data = config.get("data") if isinstance(config, dict) else None
        spq = data.get("steps_per_quarter") if isinstance(data, dict) else None
        steps = RUN_SAMPLE_QUARTERS * (spq if isinstance(spq, int) and spq > 0 else 4)  # a broken config.json: render_run names it
        render_run(directory, folder, num=RUN_SAMPLES, steps=steps, references=2, continuations=2, progress=True)
    stats = _read_json(folder / "stats.json")
    shown = {k: v for k, v in metrics.items() if k in GLOSSARY}
    if "best_epoch" in metrics:
        shown["epoch"] = metrics["best_epoch"]
    body = [f"<h1>rbmsearch run: {html.escape(directory.name)}</h1>"]
    if "test_nll" in shown:
        body.append(f'<p class="headline">test NLL <b>{shown["test_nll"]:.3f} ± {shown.get("test_nll_ci95", float("nan")):.3f}</b> nats per frame (lower is better).</p>')
    body += [_listen(directory, folder, stats, "the model"), _compare(directory, folder, stats)]
    body.append(f'<section id="numbers"><h2>In numbers</h2>{_metrics_table(shown)}<h3>Configuration</h3>{_params_table(config.get("train", {}))}</section>')
    history = metrics.get("history", [])
    curve = _curves_png(directory, {"valid_monitor": {h["epoch"]: h["valid_monitor"] for h in history if "valid_monitor" in h}}, "validation monitor (nats per frame)")
    if curve:
        body.append(f'<section id="plots"><h2>Learning curve</h2><img src="{curve}" alt="learning curve"></section>')
    body.append(_glossary({*shown, "valid_monitor"} if curve else shown))
    return body


def build_page(directory: str | os.PathLike) -> Path:
    """Write index.html for an experiment or run directory; returns its path."""
    directory = Path(directory).resolve()
    body = _experiment_body(directory) if _kind(directory) == "experiment" else _run_body(directory)
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>rbmsearch: {html.escape(directory.name)}</title><style>{STYLE}</style></head><body>{''.join(body)}{SCRIPT}</body></html>\n"
    )
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
