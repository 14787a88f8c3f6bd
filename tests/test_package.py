"""The package as users get it: a wheel installed into a fresh venv, the `rbmsearch` command,
`python -m rbmsearch`, and `--help` that never loads TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import rbmsearch
from rbmsearch.cli import STAGES
from rbmsearch.data import Dataset, DatasetMeta, Piece, write_dataset

ROOT = Path(__file__).resolve().parent.parent


def tiny_parquet(path: Path) -> Path:
    """A few random pieces in every split: enough for one smoke trial, built without ../shared."""
    rng = np.random.default_rng(0)
    pieces = []
    for split, n in (("train", 6), ("valid", 2), ("test", 2)):
        for i in range(n):
            roll = np.zeros((24, 88), bool)
            roll[np.arange(24), 40 + rng.integers(0, 12, 24)] = True
            pieces.append(Piece(f"{split}/{i}", split, roll))
    write_dataset(Dataset(DatasetMeta(source="tiny", steps_per_quarter=1), tuple(pieces)), path)
    return path


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """A fresh venv holding only the wheel built from this checkout.

    The dependencies (TensorFlow, Ray, ...) come from this interpreter's site-packages through a
    .pth line, so the test needs no download; rbmsearch itself comes only from the wheel.
    """
    root = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(ROOT)],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = (root / "dist").glob("rbmsearch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"rbmsearch/search_spaces/default.yaml", "rbmsearch/search_spaces/paper.yaml", "rbmsearch/search_spaces/smoke.yaml"} <= set(names)
    assert not any(name.startswith(("tests/", "search_spaces/")) for name in names)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True).stdout.strip())  # fmt: skip
    # Install the wheel by unpacking it (what pip does for a pure-Python wheel) with this pip, targeting the new venv.
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    (venv / "bin" / "rbmsearch").write_text(f"#!{python}\nimport sys\nfrom rbmsearch.cli import main\nsys.exit(main())\n")
    (venv / "bin" / "rbmsearch").chmod(0o755)
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def run_in(venv: Path, args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(venv / "bin" / "python"), *args], capture_output=True, text=True, cwd=cwd, env={**env, "RAY_AUTH_MODE": "disabled"}, timeout=timeout)  # fmt: skip


@pytest.mark.slow
def test_the_wheel_installs_and_runs_a_single_trial_from_its_shipped_space(wheel_venv, tmp_path):
    where = run_in(wheel_venv, ["-c", "import rbmsearch, pathlib; print(pathlib.Path(rbmsearch.__file__).parent)"], tmp_path)
    assert where.returncode == 0 and str(wheel_venv) in where.stdout, where.stderr  # not the checkout
    help_ = run_in(wheel_venv, ["-m", "rbmsearch.tune", "--help"], tmp_path)
    assert help_.returncode == 0 and "--single-trial" in help_.stdout, help_.stderr
    data = tiny_parquet(tmp_path / "tiny.parquet")
    args = ["-m", "rbmsearch.tune", "--single-trial", "--space", "smoke", "--data", str(data), "--storage", str(tmp_path / "runs"), "--name", "one", "--max-epochs", "1"]  # fmt: skip
    out = run_in(wheel_venv, args, tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    best = json.loads((tmp_path / "runs/one/best.json").read_text())
    assert np.isfinite(best["metrics"]["test_nll"]) and best["config"]["epochs"] == 1
    assert (tmp_path / "runs/one/run/params.npz").is_file()
    version = subprocess.run([str(wheel_venv / "bin" / "rbmsearch"), "--version"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == f"rbmsearch {rbmsearch.__version__}", version.stderr


def test_the_command_lists_every_stage_and_its_version():
    out = subprocess.run([sys.executable, "-m", "rbmsearch", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and all(stage in out.stdout for stage in STAGES)
    out = subprocess.run([sys.executable, "-m", "rbmsearch", "--version"], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == f"rbmsearch {rbmsearch.__version__}"
    out = subprocess.run([sys.executable, "-m", "rbmsearch", "nosuchstage"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "invalid choice: 'nosuchstage'" in out.stderr


def test_a_stage_runs_through_the_command(tmp_path):
    data = tiny_parquet(tmp_path / "tiny.parquet")
    out = subprocess.run([sys.executable, "-m", "rbmsearch", "data", "info", str(data)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "source tiny, 1 steps per quarter, pitches 21..108"
    bad = subprocess.run([sys.executable, "-m", "rbmsearch", "evaluate", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [f"error: {tmp_path / 'config.json'}: missing, so {tmp_path} is not a finished run directory; train it again with `python -m rbmsearch.train --data DATA --out {tmp_path}`, or pass another run directory"]  # fmt: skip


@pytest.mark.parametrize("stage", list(STAGES))
def test_help_is_fast_and_never_loads_tensorflow_ray_or_optuna(stage):
    code = (f"import sys, time; t = time.perf_counter()\nfrom rbmsearch.{stage} import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print({'s': time.perf_counter() - t, 'heavy': sorted(m for m in ('tensorflow', 'ray', 'optuna') if m in sys.modules)})")  # fmt: skip
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    figures = eval(out.stdout.strip().splitlines()[-1])  # our own dict literal
    assert figures["heavy"] == [], f"rbmsearch.{stage} --help imports {figures['heavy']}"
    assert time.perf_counter() - start < 30  # a hang, not a speed target: `bench`-style figures are in docs/results.md
