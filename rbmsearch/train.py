"""Pretrain and train one RNN-RBM configuration; the single-trial stage.

    python -m rbmsearch.train --data DATA.parquet --out RUN_DIR [--epochs N] [--set key=value ...] [--no-test]

Reads a Parquet dataset (`rbmsearch.data`) and writes a run directory (`rbmsearch.run`).
(1) CD-k pretraining of the RBM on shuffled frames; (2) CD-k training of the RNN-RBM
(Boulanger-Lewandowski et al., ICML 2012) on minibatches of sequence windows, back-propagated
through the RNN; after every epoch the validation `monitor` picks the best parameters (with
`average_epochs`, the best of their moving average, `ParameterAverage`), the run
is checkpointed and `report` is called (the seam Ray Tune's trainable uses; this module never
imports Ray). Running again on an unfinished RUN_DIR resumes it. At the end the test split
is scored by `rbmsearch.evaluate`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tensorboardX import SummaryWriter
from tqdm import tqdm

from rbmsearch.arrays import pad_batch
from rbmsearch.config import MONITORS, TrainConfig
from rbmsearch.console import cli, import_tensorflow
from rbmsearch.data import Dataset, read_dataset
from rbmsearch.errors import DatasetError, DivergenceError
from rbmsearch.files import make_dir
from rbmsearch.run import read_metrics, write_metrics, write_params, write_run
from rbmsearch.workers import set_small_op_threads

__all__ = ["MonitorSettings", "ParameterAverage", "Report", "chain_length", "monitor", "pretrain", "pretrain_rnn", "train"]

log = logging.getLogger(__name__)


TENSORBOARD_DIR = "tensorboard"  # RUN_DIR/tensorboard: the per-epoch scalars, for `tensorboard --logdir`
TENSORBOARD_SCALARS = ("train_cost", "valid_monitor", "train_frames_per_s", "seconds", "cd_k")

# report(epoch, metrics, checkpoint_dir): called after every epoch the monitor reads, once RUN_DIR holds it.
Report = Callable[[int, dict, Path], None]
# monitor_every 0: one reading per this many training frames, and at least MIN_READINGS per run.
# The 2 x 2000 monitor costs about 7 epochs of JSB's training, and a fraction of one of Nottingham's.
MONITOR_TRAIN_FRAMES = 200_000
MIN_READINGS = 10


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


# ---------------------------------------------------------------------------- the monitor


@dataclass(frozen=True)
class MonitorSettings:
    kind: str = TrainConfig.monitor  # one of MONITORS; why RAISE: docs/evaluation.md, "The monitor"
    frames: int = TrainConfig.monitor_frames  # an even spread of the split, the same frames every reading
    ais_runs: int = TrainConfig.monitor_ais_runs
    ais_betas: int = TrainConfig.monitor_ais_betas
    seed: int = 0  # the same noise every reading, so readings differ by the model only

    @classmethod
    def of(cls, config: TrainConfig) -> MonitorSettings:
        return cls(config.monitor, config.monitor_frames, config.monitor_ais_runs, config.monitor_ais_betas, config.seed)


def monitor(model, rolls: list[np.ndarray], settings: MonitorSettings = MonitorSettings()) -> float:
    """The per-epoch validation score in nats per frame (lower is better) on <= settings.frames frames.

    An NLL with few samples: "raise" (reverse AIS, errs high), "nll" (AIS, errs low), or
    "pll", the negative pseudo-log-likelihood (no partition function; not an NLL).
    """
    from rbmsearch import ais
    from rbmsearch.model import conditional_rbms

    if settings.kind not in MONITORS:
        raise ValueError(f"One of {MONITORS} must be specified for the monitor kind, but got {settings.kind!r}.")
    v, bv, bh = conditional_rbms(model, rolls)
    step = max(1, len(v) // settings.frames)
    v, bv, bh, W = v[::step], bv[::step], bh[::step], model.W.numpy()
    if settings.kind == "pll":
        return ais.monitor_cost(v, W, bv, bh, np.float32)  # float32: 3x faster, far below epoch-to-epoch changes
    if settings.kind == "raise":
        log_z = ais.raise_run(W, bv, bh, v, n_runs=settings.ais_runs, n_betas=settings.ais_betas, seed=settings.seed).log_z
    else:
        log_z = ais.ais_log_z(W, bv, bh, n_runs=settings.ais_runs, n_betas=settings.ais_betas, seed=settings.seed)
    return float(-np.mean(ais.frame_log_likelihood(v, W, bv, bh, log_z)))


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
    if config.optimizer in ("sgd", "nesterov"):
        return tf.keras.optimizers.SGD(lr, momentum=config.momentum, nesterov=config.optimizer == "nesterov")
    if config.optimizer == "rmsprop":
        return tf.keras.optimizers.RMSprop(lr)
    if config.optimizer == "nadam":
        return tf.keras.optimizers.Nadam(lr)
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
            log.info("pretrain epoch %d/%d: cost %.4f", epoch + 1, config.pretrain_epochs, costs[-1])
    return costs


def pretrain_rnn(model, rolls: list[np.ndarray], config: TrainConfig, progress: bool = False) -> list[float]:
    """The paper's RNN initialisation: train the recurrence (and u0) as an RNN with independent
    sigmoid outputs on the training windows, through a temporary output layer that is then
    dropped. Returns the cross-entropy per frame (nats) of each epoch."""
    import tensorflow as tf

    if config.rnn_pretrain_epochs == 0:
        return []
    n_v, n_u = model.config.n_visible, model.config.n_recurrent
    frames = np.concatenate(rolls).mean(axis=0).clip(1e-3, 1 - 1e-3)
    out_W = tf.Variable(tf.zeros((n_u, n_v)), name="pretrain_out_W")
    out_b = tf.Variable(np.log(frames / (1 - frames)).astype(np.float32), name="pretrain_out_b")  # the note rates
    variables = [*model.recurrent_variables, out_W, out_b]
    optimizer = tf.keras.optimizers.Adam(config.rnn_pretrain_learning_rate)

    @tf.function(input_signature=[tf.TensorSpec((None, None, n_v), tf.float32), tf.TensorSpec((None, None), tf.float32)])
    def step(v, mask):
        with tf.GradientTape() as tape:
            cost = model.independent_loss(v, mask, out_W, out_b)
        grads = tape.gradient(cost, variables)
        if config.clip_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, config.clip_norm)
        optimizer.apply_gradients(zip(grads, variables))
        return cost

    costs = []
    for epoch in range(config.rnn_pretrain_epochs):
        rng = np.random.default_rng([config.seed, 3, epoch])
        batch_costs = [float(step(v, mask)) for v, mask in minibatches(rolls, config, rng)]
        costs.append(float(np.mean(batch_costs)))
        _check_finite(epoch, "the RNN pretraining cost", costs[-1], config)
        if progress:
            log.info("RNN pretrain epoch %d/%d: %.4f nats/frame", epoch + 1, config.rnn_pretrain_epochs, costs[-1])
    return costs


def monitor_interval(config: TrainConfig, train_frames: int) -> int:
    """Epochs between the monitor's readings: config.monitor_every, or for 0 one per
    MONITOR_TRAIN_FRAMES training frames, with at least MIN_READINGS in config.epochs."""
    if config.monitor_every:
        return config.monitor_every
    return max(1, min(round(MONITOR_TRAIN_FRAMES / max(train_frames, 1)), config.epochs // MIN_READINGS))


def chain_length(config: TrainConfig, epoch: int) -> int:
    """CD steps in `epoch` (0-based): cd_k, or cd_k_late in the last late_fraction of the epochs."""
    late = config.cd_k_late and epoch >= round(config.epochs * (1 - config.late_fraction))
    return config.cd_k_late if late else config.cd_k


class ParameterAverage:
    """An exponential moving average of a model's trainable variables (Polyak averaging) with a
    time constant of `steps` optimizer steps; early on it follows the model more closely
    (decay (1 + n) / (10 + n) after n updates, as tf.train.ExponentialMovingAverage's num_updates)."""

    def __init__(self, model, steps: float):
        import tensorflow as tf

        self.variables = model.trainable_variables
        self.shadows = [tf.Variable(v, trainable=False, name=v.name.split(":")[0] + "_average") for v in self.variables]
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="average_updates")
        self.decay = math.exp(-1.0 / max(steps, 1.0))
        self.trackable = tf.train.Checkpoint(shadows=self.shadows, updates=self.updates)  # what the run's checkpoint saves

    def reset(self) -> None:
        """Start the average afresh at the model's current values."""
        for shadow, variable in zip(self.shadows, self.variables):
            shadow.assign(variable)

    def update(self) -> None:
        """One step of the average; called inside the compiled training step."""
        import tensorflow as tf

        self.updates.assign_add(1)
        n = tf.cast(self.updates, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + n) / (10.0 + n))
        for shadow, variable in zip(self.shadows, self.variables):
            shadow.assign(decay * shadow + (1.0 - decay) * variable)

    @contextlib.contextmanager
    def in_model(self):
        """The average in the model's variables for the block, the trained values back after it."""
        trained = [variable.numpy() for variable in self.variables]
        for variable, shadow in zip(self.variables, self.shadows):
            variable.assign(shadow)
        try:
            yield
        finally:
            for variable, value in zip(self.variables, trained):
                variable.assign(value)


def chain_noise_pool(model, config: TrainConfig, k: int):
    """The table of noise that a run of training steps' CD-k chains read (`noise.NoisePool`):
    twice what a full batch's chain reads, so that a row serves about 5 steps on JSB's batches
    (docs/results.md, 10.6)."""
    from rbmsearch.noise import NoisePool

    return NoisePool(model.config.n_visible, model.config.n_hidden, rows=2 * k * config.batch_size * (config.window or TrainConfig.window))


def make_train_step(model, optimizer, config: TrainConfig, cd_k: int | None = None, average: ParameterAverage | None = None):
    """A compiled CD-k step (k = `cd_k`, default config.cd_k): (v (B, T, n_v), mask (B, T), seed (2,) int64) -> cost, one update
    (and one of `average`)."""
    k = cd_k or config.cd_k
    import tensorflow as tf

    variables = model.trainable_variables
    n_v = model.config.n_visible
    pool = chain_noise_pool(model, config, k)

    @tf.function(
        input_signature=[tf.TensorSpec((None, None, n_v), tf.float32), tf.TensorSpec((None, None), tf.float32), tf.TensorSpec((2,), tf.int64)]
    )
    def train_step(v, mask, seed):
        with tf.GradientTape() as tape:
            cost = model.cd_loss(v, mask, k, seed, config.dropout, pool)
        grads = tape.gradient(cost, variables)
        if config.weight_decay > 0:  # the gradient of (weight_decay / 2) * ||w||^2, on matrices only
            grads = [g + config.weight_decay * w if w.shape.rank == 2 else g for g, w in zip(grads, variables)]
        if config.clip_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, config.clip_norm)
        optimizer.apply_gradients(zip(grads, variables))
        if average is not None:
            average.update()
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
    tensorboard: bool = True,
    read_at: Collection[int] = (),
) -> dict:
    """Train one configuration into `run_dir`, resuming if it holds a checkpoint of it.

    Reads the validation monitor every `monitor_interval` epochs, at the epochs in `read_at`
    (a search's ASHA rungs) and after the last, of the parameters' moving average if
    config.average_epochs (which params.npz then keeps), and then calls `report(epoch, metrics, run_dir)`,
    once run_dir holds that epoch's checkpoint. `tensorboard`: write the per-epoch scalars to run_dir/tensorboard. Returns the final metrics (also in run_dir/metrics.json), with
    `test_nll`, `test_nll_raise`, `test_acc` and `test_acc_decoded` if `evaluate_test`.

    Raises:
        DivergenceError: a cost or the validation monitor became NaN or inf.
        ConfigError: run_dir holds a run of a different configuration.
    """
    import tensorflow as tf

    from rbmsearch.evaluate import score_run
    from rbmsearch.model import ModelConfig, RnnRbm, configure_devices
    from rbmsearch.run import load_run

    configure_devices()
    run_dir = Path(run_dir)
    train_rolls, valid_rolls = dataset.rolls("train"), dataset.rolls("valid")
    if not train_rolls:  # checked before anything is written: a failed start leaves no empty run
        raise DatasetError(data_path or dataset.meta.source, "has no training pieces; rebuild it with a larger --valid/--test split budget left for train")
    if not valid_rolls:  # small datasets: monitor on the training set rather than nothing
        valid_rolls = train_rolls
    meta = dataset.meta
    make_dir(run_dir)
    write_run(run_dir, config, {"path": data_path, "source": meta.source, "steps_per_quarter": meta.steps_per_quarter, "qpm": meta.qpm})

    model = RnnRbm(ModelConfig.of(config), seed=config.seed)
    steps_per_epoch = len(list(minibatches(train_rolls, config, np.random.default_rng(0))))
    optimizer = make_optimizer(config, steps_per_epoch)
    epoch_var = tf.Variable(0, dtype=tf.int64, name="epoch")  # epochs completed
    average = ParameterAverage(model, config.average_epochs * steps_per_epoch) if config.average_epochs else None
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var, **({"average": average.trackable} if average else {}))
    manager = tf.train.CheckpointManager(checkpoint, run_dir / "ckpt", max_to_keep=1)
    metrics = {"history": [], "pretrain_costs": []}
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).expect_partial()
        metrics = {**metrics, **read_metrics(run_dir)}
        metrics["history"] = metrics["history"][: int(epoch_var.numpy())]
        if progress:
            log.info("resuming %s after epoch %d", run_dir, int(epoch_var.numpy()))
    else:
        metrics["pretrain_costs"] = pretrain(model, np.concatenate(train_rolls), config, progress)
        metrics["rnn_pretrain_costs"] = pretrain_rnn(model, train_rolls, config, progress)
        if average is not None:  # the average starts from the pretrained model
            average.reset()

    train_steps = {}  # CD steps -> its compiled step (two with cd_k_late)
    monitor_settings = MonitorSettings.of(config)

    every = monitor_interval(config, sum(len(r) for r in train_rolls))
    best = min((h["valid_monitor"] for h in metrics["history"] if "valid_monitor" in h), default=math.inf)
    first = int(epoch_var.numpy())
    scalars = SummaryWriter(str(run_dir / TENSORBOARD_DIR), flush_secs=10) if tensorboard else None  # `tensorboard --logdir RUN_DIR`
    bar = tqdm(total=config.epochs, initial=first, desc="training", unit="epoch", disable=not progress, file=sys.stderr)
    for epoch in range(first, config.epochs):
        start = time.perf_counter()
        rng = np.random.default_rng([config.seed, 2, epoch])  # per epoch: resuming replays it
        costs, frames = [], 0
        k = chain_length(config, epoch)
        if k not in train_steps:
            train_steps[k] = make_train_step(model, optimizer, config, k, average)
        train_step = train_steps[k]
        for i, (v, mask) in enumerate(minibatches(train_rolls, config, rng)):
            costs.append(float(train_step(v, mask, tf.constant([config.seed, epoch * 100_003 + i], tf.int64))))
            _check_finite(epoch + 1, f"the CD cost of minibatch {i}", costs[-1], config)
            frames += int(mask.sum())
        train_s = time.perf_counter() - start
        record = {"epoch": epoch + 1, "train_cost": float(np.mean(costs)), "cd_k": k, "train_frames_per_s": frames / train_s}
        read = (epoch + 1) % every == 0 or epoch + 1 == config.epochs or epoch + 1 in read_at
        if read:
            with average.in_model() if average is not None else contextlib.nullcontext():  # the model the run keeps
                record["valid_monitor"] = score = monitor(model, valid_rolls, monitor_settings)
                _check_finite(epoch + 1, "the validation monitor", score, config)
                if score < best:
                    best = score
                    write_params(run_dir, model.to_params())
                    metrics["best_epoch"] = epoch + 1
        record["seconds"] = time.perf_counter() - start
        metrics["history"].append(record)
        if scalars is not None:
            for name in TENSORBOARD_SCALARS:
                if name in record:
                    scalars.add_scalar(name, record[name], global_step=epoch + 1)
            scalars.flush()
        epoch_var.assign(epoch + 1)
        manager.save()
        write_metrics(run_dir, metrics)
        bar.set_postfix(cost=f"{record['train_cost']:.3f}", best=f"{best:.3f}", fps=f"{record['train_frames_per_s']:,.0f}", **({"valid": f"{score:.3f}"} if read else {}))
        bar.update()
        if report is not None and read:
            report(epoch + 1, record, run_dir)

    bar.close()
    if scalars is not None:
        scalars.close()
    if evaluate_test and "test_nll" not in metrics and dataset.rolls("test"):
        # The model validation chose; its shards are kept in run_dir/eval, so a rerun resumes the score.
        metrics.update(score_run(load_run(run_dir), dataset.rolls("test"), progress, store_root=run_dir / "eval"))
        write_metrics(run_dir, metrics)
    return metrics


@cli
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rbmsearch.train", description="Pretrain, train and evaluate one RNN-RBM.")
    parser.add_argument("--data", required=True, help="a Parquet dataset from `python -m rbmsearch.data build`")
    parser.add_argument("--out", required=True, help="the run directory (resumed if it holds this configuration)")
    parser.add_argument("--epochs", type=int, help="shorthand for --set epochs=N")
    parser.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override TrainConfig fields: --set cd_k=25 learning_rate=0.003")
    parser.add_argument("--no-test", action="store_true", help="skip the final test-split evaluation")
    args = parser.parse_args(argv)
    import_tensorflow()  # here, without its start-up lines, before any stage loads it
    set_small_op_threads()  # as a search trial runs, with every core
    overrides = args.set + ([f"epochs={args.epochs}"] if args.epochs is not None else [])
    config = TrainConfig().with_overrides(overrides)
    dataset = read_dataset(args.data)
    metrics = train(config, dataset, args.out, data_path=args.data, progress=True, evaluate_test=not args.no_test)
    summary = {k: metrics[k] for k in ("best_epoch", "test_nll", "test_nll_raise", "test_acc", "test_acc_decoded") if k in metrics}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
