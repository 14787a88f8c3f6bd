"""The run directory: what `train` writes and every later stage reads.

    RUN_DIR/config.json    {"train": TrainConfig, "model": ModelConfig, "data": where and what grid}
    RUN_DIR/params.npz     the model validation chose, float32 (for rnn="tanh": W (n_v, n_h), bv (n_v),
                           bh (n_h), Wuv (n_u, n_v), Wuh (n_u, n_h), Wvu (n_v, n_u), Wuu (n_u, n_u), bu, u0 (n_u))
    RUN_DIR/metrics.json   per-epoch history, best_epoch, and test_* once the test split is scored
    RUN_DIR/ckpt/          the TensorFlow checkpoint of the latest epoch (model + optimizer), for resuming
    RUN_DIR/tensorboard/   per-epoch TensorBoard scalars (`tensorboard --logdir RUN_DIR`)

A model is rebuilt from config.json and params.npz alone (`load_run`), so nothing
downstream re-reads training flags. Every file is written atomically.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rbmsearch.config import TrainConfig
from rbmsearch.errors import ConfigError, RunError
from rbmsearch.files import atomic_write, read_json, write_json

__all__ = ["CONFIG_FILE", "METRICS_FILE", "PARAMS_FILE", "Run", "load_run", "read_metrics", "write_metrics", "write_params", "write_run"]

CONFIG_FILE = "config.json"
DATA_IDENTITY = ("source", "steps_per_quarter")  # what makes two datasets the same for a run
PARAMS_FILE = "params.npz"
METRICS_FILE = "metrics.json"


def _fix(run_dir: Path) -> str:
    return f"train it again with `python -m rbmsearch.train --data DATA --out {run_dir}`, or pass another run directory"


@dataclass(frozen=True)
class Run:
    """A run directory read back: the model as validation chose it, and its provenance."""

    path: Path
    config: TrainConfig
    data: dict  # {"path", "source", "steps_per_quarter", "qpm"}
    metrics: dict
    model: object  # rbmsearch.model.RnnRbm


def read_config(run_dir: str | os.PathLike) -> tuple[TrainConfig, dict]:
    """(TrainConfig, data provenance) from RUN_DIR/config.json. Fields a run predates take today's defaults."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    saved = read_json(path, RunError, _fix(run_dir))
    if not isinstance(saved, dict) or not isinstance(saved.get("train"), dict) or not isinstance(saved.get("data"), dict):
        raise RunError(path, f"must hold a JSON object with 'train' and 'data' objects, but does not; {_fix(run_dir)}")
    try:
        config = TrainConfig.from_dict(saved["train"], str(path))
    except ConfigError as e:
        raise RunError(path, f"holds an invalid configuration ({e}); {_fix(run_dir)}") from e
    return config, saved["data"]


def read_metrics(run_dir: str | os.PathLike) -> dict:
    """RUN_DIR/metrics.json, or {} when the run has not finished an epoch."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return {}
    metrics = read_json(path, RunError, _fix(Path(run_dir)))
    if not isinstance(metrics, dict):
        raise RunError(path, f"must hold a JSON object; {_fix(Path(run_dir))}")
    return metrics


def _read_params(path: Path, run_dir: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise RunError(path, f"missing, so {run_dir} is not a finished run directory; {_fix(run_dir)}")
    try:
        with np.load(path, allow_pickle=False) as params:
            return {name: params[name] for name in params.files}
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise RunError(path, f"is not a readable .npz file ({e}), perhaps truncated; {_fix(run_dir)}") from e
    except ValueError as e:  # object arrays: refused, never unpickled
        raise RunError(path, f"holds object arrays, which only a pickle can load, so it is refused; {_fix(run_dir)}") from e


def load_run(run_dir: str | os.PathLike) -> Run:
    """Rebuild the model of a run directory from config.json and params.npz alone.

    Raises RunError naming the file when one is missing, truncated or of the wrong shape.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunError(run_dir / CONFIG_FILE, f"missing, so {run_dir} is not a finished run directory; {_fix(run_dir)}")
    config, data = read_config(run_dir)
    params = _read_params(run_dir / PARAMS_FILE, run_dir)
    from rbmsearch.model import ModelConfig, RnnRbm  # TensorFlow, only once the files are good

    model = RnnRbm(ModelConfig.of(config), seed=config.seed)
    try:
        model.load_params(params)
    except (ValueError, KeyError) as e:
        raise RunError(run_dir / PARAMS_FILE, f"does not fit the model of {CONFIG_FILE} ({e}); {_fix(run_dir)}") from e
    return Run(run_dir, config, data, read_metrics(run_dir), model)


def write_run(run_dir: str | os.PathLike, config: TrainConfig, data: dict) -> None:
    """Write RUN_DIR/config.json. A run already there must be of the same configuration.

    Only `epochs` may differ (to train a run for longer), and the data must have the same
    source and grid (`DATA_IDENTITY`). Raises ConfigError otherwise, before anything is written.
    """
    from rbmsearch.model import ModelConfig

    run_dir = Path(run_dir)
    saved = {"train": asdict(config), "model": asdict(ModelConfig.of(config)), "data": data}
    path = run_dir / CONFIG_FILE
    if path.exists():
        previous_config, previous_data = read_config(run_dir)
        previous = {**asdict(previous_config), "epochs": config.epochs}
        if previous != saved["train"]:
            changed = sorted(k for k in previous if previous[k] != saved["train"][k])
            raise ConfigError(
                f"{run_dir} holds a run of another configuration (differs in {changed}, see {path}); "
                "choose a new --out, or delete that directory to start over."
            )
        # A run's identity includes its data: the same parameters on another grid or source are another model.
        same = {k: previous_data.get(k) for k in DATA_IDENTITY} == {k: data.get(k) for k in DATA_IDENTITY}
        if not same:
            raise ConfigError(
                f"{run_dir} holds a run trained on {previous_data.get('source')!r} at {previous_data.get('steps_per_quarter')} "
                f"steps per quarter, but this dataset is {data.get('source')!r} at {data.get('steps_per_quarter')}; "
                "choose a new --out, or delete that directory to start over."
            )
    write_json(path, saved)


def write_params(run_dir: str | os.PathLike, params: dict[str, np.ndarray]) -> None:
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **params)

    atomic_write(Path(run_dir) / PARAMS_FILE, save)


def write_metrics(run_dir: str | os.PathLike, metrics: dict) -> None:
    write_json(Path(run_dir) / METRICS_FILE, metrics)
