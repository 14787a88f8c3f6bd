"""Pretrain and train one RNN-RBM configuration; the single-trial stage.

    python -m rbmsearch.train --data DATA.parquet --out RUN_DIR [--epochs N] [--set key=value ...]

Reads a Parquet dataset written by `rbmsearch.data` and writes a run directory:

    RUN_DIR/config.json    {"train": TrainConfig, "model": ModelConfig, "data": where and what grid}
    RUN_DIR/params.npz     the model chosen by validation: for rnn="tanh" exactly W (n_v, n_h),
                           bv (n_v), bh (n_h), Wuv (n_u, n_v), Wuh (n_u, n_h), Wvu (n_v, n_u),
                           Wuu (n_u, n_u), bu (n_u), u0 (n_u), float32
    RUN_DIR/metrics.json   per-epoch history, the best epoch, and test_nll / test_nll_raise / test_acc / test_acc_decoded once
                           the test split is evaluated
    RUN_DIR/ckpt/          the TensorFlow checkpoint of the latest epoch (model + optimizer),
                           for resuming

A run directory is everything `evaluate` and `render` need: nothing downstream re-reads flags.
Running the same command again on an unfinished RUN_DIR resumes from its checkpoint.

Steps: (1) pretrain the RBM (W, bv, bh) with CD-k on shuffled frames; (2) train the RNN-RBM
with CD-k on minibatches of sequence windows, back-propagated through the RNN; after every
epoch score the validation split with the cheap monitor, save, and call `report`, the seam
the Ray Tune trainable uses. This module never imports Ray.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rbmsearch.data import Dataset, DatasetError, read_dataset

__all__ = ["ConfigError", "DivergenceError", "Report", "TrainConfig", "train", "load_run"]

OPTIMIZERS = ("adam", "sgd", "rmsprop")
LR_SCHEDULES = ("constant", "cosine", "exponential")
MONITORS = ("raise", "nll", "pll")  # see rbmsearch.evaluate.monitor


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it and the fix."""


class DivergenceError(FloatingPointError):
    """Training produced NaN or inf. Carries the epoch and the configuration."""

    def __init__(self, epoch: int, what: str, config: TrainConfig):
        self.epoch = epoch
        self.config = config
        super().__init__(
            f"training diverged at epoch {epoch}: {what} is not finite. Configuration: "
            f"{json.dumps(asdict(config), sort_keys=True)}. Lower learning_rate, set clip_norm, "
            "or reduce cd_k."
        )


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one trial. Defaults: the documented JSB configuration."""

    # The defaults are the best configuration of a 186-trial search on JSB Chorales
    # (search_spaces/default.yaml, 50 minutes on 2 cores): a large RBM, a small RNN, CD-3 and
    # a high learning rate. Trained for 100 epochs they score a test NLL of 6.31 nats/frame;
    # the paper's size (150 hidden, 100 recurrent, CD-15, lr 3e-3, 200 epochs) scored 7.41.
    n_hidden: int = 216
    n_recurrent: int = 43
    rnn: str = "tanh"  # "tanh" is the paper's RNN; "lstm" and "gru" are variants
    init_std: float = 0.01
    # RBM pretraining on shuffled frames: gives the RNN a sensible RBM to start from.
    pretrain_epochs: int = 3
    pretrain_cd_k: int = 1
    pretrain_learning_rate: float = 0.01
    pretrain_batch_frames: int = 100
    # Training through time. On JSB, 200 epochs reach a lower test NLL (6.24) than 100
    # (6.31) and about the same accuracy (0.250 against 0.245, mixed chains), for twice the time.
    epochs: int = 100
    cd_k: int = 3  # Gibbs steps per frame in CD-k; the paper's tutorial uses 15, which scored worse here
    window: int = 50  # frames per training window; 0 trains on whole sequences
    batch_size: int = 16  # windows per minibatch
    optimizer: str = "adam"
    learning_rate: float = 1e-2
    lr_schedule: str = "cosine"  # "cosine" anneals to 0 over `epochs`; "exponential" uses lr_decay
    lr_decay: float = 0.97  # per epoch, for lr_schedule="exponential"
    momentum: float = 0.9  # for optimizer="sgd"
    clip_norm: float = 10.0  # global gradient-norm clipping, a safety net at this learning rate; 0 turns it off
    dropout: float = 0.0  # on the history the RNN reads and on u_{t-1}; see RnnRbm.cd_loss
    weight_decay: float = 0.0  # L2 penalty (weight_decay / 2) * ||w||^2 on the weight matrices, not the biases
    seed: int = 0
    # The per-epoch validation score that picks the best epoch (see rbmsearch.evaluate):
    # "raise", a cheap reverse-AIS estimate of the NLL, which errs high; "nll", a cheap AIS
    # estimate, which errs low, for sharp models by whole nats (it rewards what it cannot
    # measure); or "pll", the pseudo-log-likelihood (cheaper, but it can fall while the NLL rises).
    monitor: str = "raise"
    monitor_frames: int = 200
    monitor_ais_runs: int = 4
    monitor_ais_betas: int = 200
    # Test evaluation at the end (see rbmsearch.evaluate); AIS as in the paper.
    eval_ais_runs: int = 100
    eval_ais_betas: int = 1000
    eval_acc_samples: int = 10
    eval_acc_gibbs_k: int = 1000  # Gibbs steps per accuracy sample; see EvalSettings.acc_gibbs_k
    eval_raise_runs: int = 10  # reverse-AIS runs per frame for test_nll_raise; see EvalSettings.raise_runs

    def __post_init__(self):
        positive = ["n_hidden", "n_recurrent", "pretrain_cd_k", "pretrain_batch_frames", "epochs", "cd_k", "batch_size",
                    "eval_ais_runs", "eval_acc_samples", "eval_acc_gibbs_k", "eval_raise_runs", "monitor_frames", "monitor_ais_runs"]  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"A positive int must be specified for {name}, but got {value!r}.")
        for name in ("pretrain_epochs", "window", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"A non-negative int must be specified for {name}, but got {value!r}.")
        for name in ("learning_rate", "pretrain_learning_rate", "init_std"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ConfigError(f"A positive finite value must be specified for {name}, but got {value!r}.")
        if not 0 < self.lr_decay <= 1 or not 0 <= self.momentum < 1 or not 0 <= self.clip_norm < math.inf:
            raise ConfigError(
                f"lr_decay must be in (0, 1], momentum in [0, 1) and clip_norm >= 0, but got "
                f"{self.lr_decay!r}, {self.momentum!r} and {self.clip_norm!r}."
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float) or not 0 <= self.dropout < 1:
            raise ConfigError(f"A value in [0, 1) must be specified for dropout, but got {self.dropout!r}.")
        if isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, int | float) or not 0 <= self.weight_decay < math.inf:
            raise ConfigError(f"A finite value >= 0 must be specified for weight_decay, but got {self.weight_decay!r}.")
        for name in ("eval_ais_betas", "monitor_ais_betas"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int) or getattr(self, name) < 2:
                raise ConfigError(f"An int >= 2 must be specified for {name}, but got {getattr(self, name)!r}.")
        choices = (("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES), ("rnn", ("tanh", "lstm", "gru")), ("monitor", MONITORS))
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ConfigError(f"One of {allowed} must be specified for {name}, but got {getattr(self, name)!r}.")

    @classmethod
    def from_dict(cls, values: dict, where: str = "the configuration") -> TrainConfig:
        """Build from a dict, refusing unknown keys by name (typos must not pass silently)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(f"Unknown key(s) {unknown} in {where}; known keys are {sorted(fields)}.")
        return cls(**values)

    def with_overrides(self, assignments: list[str]) -> TrainConfig:
        """Apply `key=value` strings (values parsed as JSON, else kept as strings)."""
        values = asdict(self)
        for item in assignments:
            key, sep, raw = item.partition("=")
            if not sep:
                raise ConfigError(f"--set expects key=value, but got {item!r}.")
            if key not in values:
                raise ConfigError(f"Unknown key {key!r} in --set {item}; known keys are {sorted(values)}.")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            if isinstance(values[key], float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            values[key] = value
        return TrainConfig.from_dict(values, "--set")

    def model_config(self):
        from rbmsearch.model import ModelConfig

        return ModelConfig(n_hidden=self.n_hidden, n_recurrent=self.n_recurrent, rnn=self.rnn, init_std=self.init_std)


# report(epoch, metrics, checkpoint_dir): called after every epoch once RUN_DIR holds it.
Report = Callable[[int, dict, Path], None]


# ---------------------------------------------------------------------------- batches


def windows(rolls: list[np.ndarray], window: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Cut each (steps, n_v) roll into consecutive windows of at most `window` steps.

    The cut points move by a random offset every epoch, so windows do not always start on
    the same frames. window=0 returns the whole sequences.
    """
    if window == 0:
        return list(rolls)
    out = []
    for roll in rolls:
        offset = int(rng.integers(window)) if len(roll) > window else 0
        cuts = [0, *range(offset or window, len(roll), window), len(roll)]
        out.extend(roll[a:b] for a, b in zip(cuts, cuts[1:]) if b > a)
    return out


def pad_batch(seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sequences (T_i, n_v) -> v (B, T_max, n_v) float32 zero-padded after, mask (B, T_max) float32."""
    t_max = max(len(s) for s in seqs)
    v = np.zeros((len(seqs), t_max, seqs[0].shape[1]), dtype=np.float32)
    mask = np.zeros((len(seqs), t_max), dtype=np.float32)
    for i, s in enumerate(seqs):
        v[i, : len(s)] = s
        mask[i, : len(s)] = 1.0
    return v, mask


def minibatches(rolls: list[np.ndarray], config: TrainConfig, rng: np.random.Generator):
    """Shuffled minibatches of windows; windows of similar length share a batch (less padding)."""
    pieces = windows(rolls, config.window, rng)
    order = rng.permutation(len(pieces))
    # Sort a shuffled list by length inside chunks of 8 batches: cheap padding, random batches.
    chunk = config.batch_size * 8
    order = np.concatenate([sorted(order[i : i + chunk], key=lambda j: len(pieces[j])) for i in range(0, len(order), chunk)])
    batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    for b in rng.permutation(len(batches)):
        yield pad_batch([pieces[j] for j in batches[b]])


# ---------------------------------------------------------------------------- run directory


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_json(path: Path, obj: dict) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def write_params(path: Path, params: dict[str, np.ndarray]) -> None:
    def save(tmp: Path):
        with open(tmp, "wb") as f:
            np.savez(f, **params)

    _atomic_write(path, save)


@dataclass(frozen=True)
class Run:
    """A run directory read back: the model as validation chose it, and its provenance."""

    path: Path
    config: TrainConfig
    data: dict  # {"path", "source", "steps_per_quarter", "qpm"}
    metrics: dict
    model: object  # rbmsearch.model.RnnRbm


def load_run(run_dir: str | os.PathLike) -> Run:
    """Rebuild the model of a run directory from config.json and params.npz alone."""
    from rbmsearch.model import RnnRbm

    run_dir = Path(run_dir)
    config_path, params_path = run_dir / "config.json", run_dir / "params.npz"
    for path in (config_path, params_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: missing, so {run_dir} is not a finished run directory; train one with "
                f"`python -m rbmsearch.train --data DATA --out {run_dir}`"
            )
    saved = json.loads(config_path.read_text())
    config = TrainConfig.from_dict(saved["train"], str(config_path))
    model = RnnRbm(config.model_config(), seed=config.seed)
    with np.load(params_path) as params:
        model.load_params(dict(params))
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return Run(run_dir, config, saved["data"], metrics, model)


# ---------------------------------------------------------------------------- training


def _learning_rate(config: TrainConfig, steps_per_epoch: int):
    import tensorflow as tf

    total = max(config.epochs * steps_per_epoch, 1)
    if config.lr_schedule == "cosine":
        return tf.keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=total)
    if config.lr_schedule == "exponential":
        return tf.keras.optimizers.schedules.ExponentialDecay(config.learning_rate, steps_per_epoch, config.lr_decay)
    return config.learning_rate


def make_optimizer(config: TrainConfig, steps_per_epoch: int):
    import tensorflow as tf

    lr = _learning_rate(config, steps_per_epoch)
    if config.optimizer == "sgd":
        return tf.keras.optimizers.SGD(lr, momentum=config.momentum)
    if config.optimizer == "rmsprop":
        return tf.keras.optimizers.RMSprop(lr)
    return tf.keras.optimizers.Adam(lr)


def _check_finite(epoch: int, what: str, value: float, config: TrainConfig) -> None:
    if not math.isfinite(value):
        raise DivergenceError(epoch, what, config)


def pretrain(model, frames: np.ndarray, config: TrainConfig, progress: bool = False) -> list[float]:
    """CD-k on the static RBM (W, bv, bh) over shuffled training frames (N, n_v). Returns costs."""
    import tensorflow as tf

    if config.pretrain_epochs == 0:
        return []
    variables = [model.W, model.bv, model.bh]
    optimizer = tf.keras.optimizers.SGD(config.pretrain_learning_rate, momentum=0.5)
    n_v = model.config.n_visible

    @tf.function(input_signature=[tf.TensorSpec((None, n_v), tf.float32), tf.TensorSpec((2,), tf.int64)])
    def step(v, seed):
        with tf.GradientTape() as tape:
            cost = model.rbm_pretrain_loss(v, config.pretrain_cd_k, seed)
        optimizer.apply_gradients(zip(tape.gradient(cost, variables), variables))
        return cost

    rng = np.random.default_rng([config.seed, 1])
    frames = frames.astype(np.float32)
    costs = []
    for epoch in range(config.pretrain_epochs):
        order = rng.permutation(len(frames))
        total = 0.0
        for i in range(0, len(order), config.pretrain_batch_frames):
            seed = tf.constant([config.seed, 1_000_000 * (epoch + 1) + i], tf.int64)
            total += float(step(frames[order[i : i + config.pretrain_batch_frames]], seed))
        costs.append(total / math.ceil(len(order) / config.pretrain_batch_frames))
        _check_finite(epoch, "the pretraining cost", costs[-1], config)
        if progress:
            print(f"pretrain epoch {epoch + 1}/{config.pretrain_epochs}: cost {costs[-1]:.4f}", file=sys.stderr)
    return costs


def make_train_step(model, optimizer, config: TrainConfig):
    """A compiled CD-k step: (v (B, T, n_v), mask (B, T), seed (2,) int64) -> cost, one update."""
    import tensorflow as tf

    variables = model.trainable_variables
    n_v = model.config.n_visible

    @tf.function(
        input_signature=[tf.TensorSpec((None, None, n_v), tf.float32), tf.TensorSpec((None, None), tf.float32), tf.TensorSpec((2,), tf.int64)]
    )
    def train_step(v, mask, seed):
        with tf.GradientTape() as tape:
            cost = model.cd_loss(v, mask, config.cd_k, seed, config.dropout)
        grads = tape.gradient(cost, variables)
        if config.weight_decay > 0:  # the gradient of (weight_decay / 2) * ||w||^2, on matrices only
            grads = [g + config.weight_decay * w if w.shape.rank == 2 else g for g, w in zip(grads, variables)]
        if config.clip_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, config.clip_norm)
        optimizer.apply_gradients(zip(grads, variables))
        return cost

    return train_step


def train(
    config: TrainConfig,
    dataset: Dataset,
    run_dir: str | os.PathLike,
    report: Report | None = None,
    data_path: str = "",
    progress: bool = False,
    evaluate_test: bool = True,
) -> dict:
    """Train one configuration into `run_dir`, resuming if it holds a checkpoint of it.

    Calls `report(epoch, metrics, run_dir)` after every epoch, once run_dir holds that
    epoch's checkpoint. Returns the final metrics (also in run_dir/metrics.json), with
    `test_nll`, `test_nll_raise`, `test_acc` and `test_acc_decoded` if `evaluate_test`.

    Raises:
        DivergenceError: a cost or the validation monitor became NaN or inf.
        ConfigError: run_dir holds a run of a different configuration.
    """
    import tensorflow as tf

    from rbmsearch import evaluate
    from rbmsearch.model import RnnRbm, configure_devices

    configure_devices()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    train_rolls, valid_rolls = dataset.rolls("train"), dataset.rolls("valid")
    if not train_rolls:
        raise DatasetError(data_path or dataset.meta.source, "has no training pieces; rebuild it with a larger --valid/--test split budget left for train")
    if not valid_rolls:  # small datasets: monitor on the training set rather than nothing
        valid_rolls = train_rolls
    saved_config = {
        "train": asdict(config),
        "model": asdict(config.model_config()),
        "data": {"path": data_path, "source": dataset.meta.source, "steps_per_quarter": dataset.meta.steps_per_quarter, "qpm": dataset.meta.qpm},
    }
    config_path = run_dir / "config.json"
    if config_path.exists():  # resuming: only `epochs` may change (to train a run for longer)
        # Fields a run predates (e.g. eval_raise_runs) take today's defaults.
        previous = {**asdict(TrainConfig()), **json.loads(config_path.read_text()).get("train", {}), "epochs": config.epochs}
        if previous != saved_config["train"]:
            changed = sorted(k for k in previous.keys() | saved_config["train"].keys() if previous.get(k) != saved_config["train"].get(k))
            raise ConfigError(
                f"{run_dir} holds a run of another configuration (differs in {changed}, see {config_path}); "
                "choose a new --out, or delete that directory to start over."
            )
    write_json(config_path, saved_config)

    model = RnnRbm(config.model_config(), seed=config.seed)
    steps_per_epoch = len(list(minibatches(train_rolls, config, np.random.default_rng(0))))
    optimizer = make_optimizer(config, steps_per_epoch)
    epoch_var = tf.Variable(0, dtype=tf.int64, name="epoch")  # epochs completed
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var)
    manager = tf.train.CheckpointManager(checkpoint, run_dir / "ckpt", max_to_keep=1)
    metrics_path = run_dir / "metrics.json"
    metrics = {"history": [], "pretrain_costs": []}
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).expect_partial()
        metrics = json.loads(metrics_path.read_text())
        metrics["history"] = metrics["history"][: int(epoch_var.numpy())]
        if progress:
            print(f"resuming {run_dir} after epoch {int(epoch_var.numpy())}", file=sys.stderr)
    else:
        metrics["pretrain_costs"] = pretrain(model, np.concatenate(train_rolls), config, progress)

    train_step = make_train_step(model, optimizer, config)
    monitor_settings = evaluate.MonitorSettings(config.monitor, config.monitor_frames, config.monitor_ais_runs, config.monitor_ais_betas, config.seed)

    best = min((h["valid_monitor"] for h in metrics["history"]), default=math.inf)
    first = int(epoch_var.numpy())
    bar = tqdm(total=config.epochs, initial=first, desc="training", unit="epoch", disable=not progress, file=sys.stderr)
    for epoch in range(first, config.epochs):
        start = time.perf_counter()
        rng = np.random.default_rng([config.seed, 2, epoch])  # per epoch: resuming replays it
        costs, frames = [], 0
        for i, (v, mask) in enumerate(minibatches(train_rolls, config, rng)):
            costs.append(float(train_step(v, mask, tf.constant([config.seed, epoch * 100_003 + i], tf.int64))))
            _check_finite(epoch + 1, f"the CD cost of minibatch {i}", costs[-1], config)
            frames += int(mask.sum())
        train_s = time.perf_counter() - start
        monitor = evaluate.monitor(model, valid_rolls, monitor_settings)
        _check_finite(epoch + 1, "the validation monitor", monitor, config)
        record = {
            "epoch": epoch + 1,
            "train_cost": float(np.mean(costs)),
            "valid_monitor": monitor,
            "train_frames_per_s": frames / train_s,
            "seconds": time.perf_counter() - start,
        }
        metrics["history"].append(record)
        if monitor < best:
            best = monitor
            write_params(run_dir / "params.npz", model.to_params())
            metrics["best_epoch"] = epoch + 1
        epoch_var.assign(epoch + 1)
        manager.save()
        write_json(metrics_path, metrics)
        bar.set_postfix(cost=f"{record['train_cost']:.3f}", valid=f"{monitor:.3f}", best=f"{best:.3f}", fps=f"{record['train_frames_per_s']:,.0f}")
        bar.update()
        if report is not None:
            report(epoch + 1, record, run_dir)

    bar.close()
    if evaluate_test and "test_nll" not in metrics and dataset.rolls("test"):
        run = load_run(run_dir)  # the model validation chose, not simply the last one
        metrics.update(test_metrics(run, dataset.rolls("test"), progress))
        write_json(metrics_path, metrics)
    return metrics


def test_metrics(run: Run, rolls: list[np.ndarray], progress: bool = False) -> dict:
    """Evaluate a run's model on `rolls` (the test split) with its configuration's eval_* settings."""
    from rbmsearch import evaluate

    c = run.config
    settings = evaluate.EvalSettings(ais_runs=c.eval_ais_runs, ais_betas=c.eval_ais_betas, acc_samples=c.eval_acc_samples,
                                     acc_gibbs_k=c.eval_acc_gibbs_k, seed=c.seed, raise_runs=c.eval_raise_runs)  # fmt: skip
    result = evaluate.evaluate(run.model, rolls, settings, progress=progress)
    return {"test_nll": result["nll"], "test_nll_raise": result["nll_raise"], "test_acc": result["acc"],
            "test_acc_decoded": result["acc_decoded"], "test_eval": result}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rbmsearch.train", description="Pretrain, train and evaluate one RNN-RBM.")
    parser.add_argument("--data", required=True, help="a Parquet dataset from `python -m rbmsearch.data build`")
    parser.add_argument("--out", required=True, help="the run directory (resumed if it holds this configuration)")
    parser.add_argument("--epochs", type=int, help="shorthand for --set epochs=N")
    parser.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override TrainConfig fields: --set cd_k=25 learning_rate=0.003")
    parser.add_argument("--no-test", action="store_true", help="skip the final test-split evaluation")
    args = parser.parse_args(argv)
    try:
        overrides = args.set + ([f"epochs={args.epochs}"] if args.epochs is not None else [])
        config = TrainConfig().with_overrides(overrides)
        dataset = read_dataset(args.data)
        metrics = train(config, dataset, args.out, data_path=args.data, progress=True, evaluate_test=not args.no_test)
    except (ConfigError, DatasetError, DivergenceError) as e:
        raise SystemExit(f"error: {e}") from e
    summary = {k: metrics[k] for k in ("best_epoch", "test_nll", "test_nll_raise", "test_acc", "test_acc_decoded") if k in metrics}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
