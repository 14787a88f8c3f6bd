"""rbmsearch.study's SQLite file: processes that open a new study file at the same moment (the
search, a dashboard, a reader polling for it) all get one whole schema, where Optuna's own
start-up stamps its version in several statements and lets them collide."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

OPENER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from rbmsearch.study import sqlite_storage

    where, me, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    (where / f"ready-{me}").touch()
    for r in range(rounds):
        while not (where / f"go-{r}").exists():
            time.sleep(0.001)
        try:
            sqlite_storage(str(where / f"study-{r}.db")).engine.dispose()
            outcome = "ok"
        except Exception as e:
            outcome = type(e).__name__
        (where / f"done-{r}-{me}").write_text(outcome)
    """
)


def test_processes_opening_a_new_study_file_at_once_all_succeed(tmp_path):
    import optuna

    processes, rounds = 4, 3
    procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(tmp_path), str(i), str(rounds)]) for i in range(processes)]
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("ready-*"))) < processes and time.monotonic() < deadline:
            time.sleep(0.05)
        outcomes = []
        for r in range(rounds):
            (tmp_path / f"go-{r}").touch()  # all of them open study-r.db, which does not exist yet
            while len(list(tmp_path.glob(f"done-{r}-*"))) < processes and time.monotonic() < deadline:
                time.sleep(0.02)
            outcomes.append(sorted(p.read_text() for p in tmp_path.glob(f"done-{r}-*")))
    finally:
        for p in procs:
            p.wait(timeout=60)
    assert outcomes == [["ok"] * processes] * rounds, outcomes
    assert [p.returncode for p in procs] == [0] * processes
    for r in range(rounds):  # one usable study file each, nothing left beside them
        study = optuna.create_study(storage=f"sqlite:///{tmp_path}/study-{r}.db", study_name="s")
        study.enqueue_trial({"x": 1.0})
        assert len(optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/study-{r}.db").trials) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if "study" in p.name) == [f"study-{r}.db" for r in range(rounds)]  # temporary files too
