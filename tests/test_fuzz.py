"""rbmsearch.fuzz: a folder of generated pathological MIDI files imports without a crash, every
bad file is listed with its reason, and every good file imports unchanged."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rbmsearch.fuzz import KINDS, check_import, make_corpus


def test_a_folder_of_pathological_files_imports_and_lists_every_bad_one(tmp_path):
    corpus = make_corpus(tmp_path / "fuzz", 300, seed=1)
    kinds = {kind for kind, _ in corpus.values()}
    assert kinds == set(KINDS)  # every kind of damage is in the folder
    report = check_import(tmp_path / "fuzz", corpus)
    assert report.problems == []
    assert report.imported + report.skipped == 300
    assert report.imported >= sum(kind == "good" for kind, _ in corpus.values())
    for kind in ("truncate", "header_type"):  # always broken, so always listed
        assert report.skipped_by_kind[kind] == sum(k == kind for k, _ in corpus.values()), kind


def test_the_harness_sees_a_changed_good_file(tmp_path):
    corpus = make_corpus(tmp_path / "fuzz", 6, seed=2)
    name = next(n for n, (kind, _) in corpus.items() if kind == "good")
    kind, roll = corpus[name]
    changed = roll.copy()
    changed[0, 0] = ~changed[0, 0]
    report = check_import(tmp_path / "fuzz", {**corpus, name: (kind, changed)})
    assert report.problems == [f"{name}: a good file imported changed"]


@pytest.mark.slow
def test_bench_fuzz_reports_its_figures():
    out = subprocess.run([sys.executable, "-m", "rbmsearch.bench", "fuzz", "--files", "60", "--workers", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout.splitlines()[-1])
    assert figures["benchmark"] == "fuzz" and figures["crashes"] == 0 and figures["problems"] == 0
    assert figures["imported"] + figures["skipped"] == 60 and figures["peak_rss_mb"] > 0
