"""`TrainConfig`: everything that defines one trial, as a frozen dataclass with defaults.

Every stage reads a configuration from here: `train` trains it, `run` saves it in a run
directory's config.json and rebuilds the model from it, `space` checks a search space
against it. An unknown key or a bad value raises ConfigError naming it. Why each default is
what it is: docs/results.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass

from rbmsearch.errors import ConfigError

__all__ = ["AIS_BETAS", "AIS_RUNS", "CONTROL_BETAS", "LR_SCHEDULES", "MONITORS", "OPTIMIZERS", "RNN_TYPES", "TrainConfig"]

OPTIMIZERS = ("adam", "sgd", "rmsprop", "nesterov", "nadam")  # nesterov: SGD with Nesterov momentum (the paper's)
LR_SCHEDULES = ("constant", "cosine", "exponential")
MONITORS = ("raise", "nll", "pll")  # the per-epoch validation scores; see rbmsearch.train.monitor
AIS_RUNS = 100  # AIS runs per conditional RBM, as Boulanger-Lewandowski et al. (2012)
AIS_BETAS = 1000  # AIS temperatures; enough for JSB-like models, not for sharp ones (docs/evaluation.md)
CONTROL_BETAS = 1000  # the temperatures of a subsample's cheap control score of every frame (docs/evaluation.md, "The whole split from a subsample")
RNN_TYPES = ("tanh", "lstm", "gru")  # "tanh" is the paper's RNN; see rbmsearch.model


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one trial. Defaults: the documented JSB configuration."""

    # Sizes, CD steps and learning rate: the best trial of a search on JSB, which beat the
    # paper's size (docs/results.md, section 1).
    n_hidden: int = 216
    n_recurrent: int = 43
    rnn: str = "tanh"  # "tanh" is the paper's RNN; "lstm" and "gru" are variants
    init_std: float = 0.01
    # RBM pretraining on shuffled frames, so the RNN starts from a sensible RBM.
    pretrain_epochs: int = 3
    pretrain_cd_k: int = 1
    pretrain_learning_rate: float = 0.01
    pretrain_batch_frames: int = 100
    # RNN pretraining (the paper's initialisation): the recurrence is first trained as an RNN
    # with independent sigmoid outputs, by Adam on the training windows; 0 epochs skips it.
    rnn_pretrain_epochs: int = 0
    rnn_pretrain_learning_rate: float = 1e-3
    epochs: int = 100  # 200 gain a little NLL for twice the time (docs/results.md, 1.3)
    cd_k: int = 3  # Gibbs steps per frame in CD-k; the paper's 15 scored worse (docs/results.md, 1.3)
    # Longer chains late in training: CD-`cd_k_late` for the last `late_fraction` of the
    # epochs, where the learning rate is small and the model sharp; 0 keeps cd_k throughout.
    cd_k_late: int = 0
    late_fraction: float = 0.25
    window: int = 50  # frames per training window; 0 trains on whole sequences
    batch_size: int = 16  # windows per minibatch
    optimizer: str = "adam"
    learning_rate: float = 1e-2
    lr_schedule: str = "cosine"  # "cosine" anneals to 0 over `epochs`; "exponential" uses lr_decay
    lr_decay: float = 0.97  # per epoch, for lr_schedule="exponential"
    momentum: float = 0.9  # for optimizer="sgd" and "nesterov"
    clip_norm: float = 10.0  # global gradient-norm clipping, a safety net at this learning rate; 0 turns it off
    dropout: float = 0.0  # on the history the RNN reads and on u_{t-1}; see RnnRbm.cd_loss
    weight_decay: float = 0.0  # L2 penalty (weight_decay / 2) * ||w||^2 on the weight matrices, not the biases
    # An exponential moving average of the parameters, with this time constant in epochs, is
    # what the monitor reads and the run keeps (rbmsearch.train.ParameterAverage); 0: off.
    # Measured on Nottingham and JSB in docs/results.md, 6.16; searchable in the default space.
    average_epochs: float = 0.0
    seed: int = 0
    # The validation score that picks the best epoch and ranks a search's trials
    # (rbmsearch.train.monitor): "raise", because it errs high where "nll" (AIS) errs low by
    # whole nats on sharp models and "pll" can fall while the NLL rises. Few runs of many
    # temperatures: 2 x 2000 ranks sharp models where 4 x 200 reads them worse than they are
    # (docs/evaluation.md, "The monitor").
    monitor: str = "raise"
    monitor_frames: int = 200
    monitor_ais_runs: int = 2
    monitor_ais_betas: int = 2000
    monitor_every: int = 0  # epochs between readings (the last epoch is always read); 0: one per ~200k training frames (train.monitor_interval)
    # The test evaluation at the end (rbmsearch.evaluate): AIS with the paper's 100 runs.
    eval_ais_runs: int = AIS_RUNS
    eval_ais_betas: int = AIS_BETAS  # the most temperatures a test shard doubles to (EvalSettings.ais_betas)
    eval_acc_samples: int = 30  # prediction chains per frame: the sampled accuracy and the best guess's marginals (EvalSettings.acc_samples)
    eval_acc_gibbs_k: int = 1000  # Gibbs steps per accuracy sample, enough to mix (EvalSettings.acc_gibbs_k)
    eval_raise_runs: int = 10  # reverse-AIS runs per frame for test_nll_raise (EvalSettings.raise_runs)
    eval_max_betas: int = 0  # past eval_ais_betas, a shard may double on to this many with fewer runs; 0: off (EvalSettings.max_betas)
    eval_tail_betas: int = 0  # past that cap, RAISE on the 5% of frames that disagree most may go on to this many; 0: off (EvalSettings.tail_betas)
    eval_frames: int = 0  # score an even subsample of this many test frames, labelled as such; 0: the whole split
    # With a subsample, every test frame is also scored cheaply at this many temperatures, for the
    # whole-split estimate test_nll_whole_split (rbmsearch.evaluate.regression_estimate); 0: not.
    eval_control_betas: int = CONTROL_BETAS

    def __post_init__(self):
        positive = ["n_hidden", "n_recurrent", "pretrain_cd_k", "pretrain_batch_frames", "epochs", "cd_k", "batch_size",
                    "eval_ais_runs", "eval_acc_samples", "eval_acc_gibbs_k", "eval_raise_runs", "monitor_frames", "monitor_ais_runs"]  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"A positive int must be specified for {name}, but got {value!r}.", key=name)
        for name in ("pretrain_epochs", "rnn_pretrain_epochs", "cd_k_late", "window", "seed", "eval_frames", "eval_max_betas", "eval_tail_betas", "eval_control_betas", "monitor_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"A non-negative int must be specified for {name}, but got {value!r}.", key=name)
        for name in ("learning_rate", "pretrain_learning_rate", "rnn_pretrain_learning_rate", "init_std"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ConfigError(f"A positive finite value must be specified for {name}, but got {value!r}.", key=name)
        ranges = {"lr_decay": 0 < self.lr_decay <= 1, "momentum": 0 <= self.momentum < 1, "clip_norm": 0 <= self.clip_norm < math.inf,
                  "late_fraction": 0 < self.late_fraction <= 1}  # fmt: skip
        if not all(ranges.values()):
            raise ConfigError(
                f"lr_decay must be in (0, 1], momentum in [0, 1), clip_norm >= 0 and late_fraction in (0, 1], but got "
                f"{self.lr_decay!r}, {self.momentum!r}, {self.clip_norm!r} and {self.late_fraction!r}.",
                key=next(k for k, ok in ranges.items() if not ok),
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float) or not 0 <= self.dropout < 1:
            raise ConfigError(f"A value in [0, 1) must be specified for dropout, but got {self.dropout!r}.", key="dropout")
        for name in ("weight_decay", "average_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
                raise ConfigError(f"A finite value >= 0 must be specified for {name}, but got {value!r}.", key=name)
        for name in ("eval_ais_betas", "monitor_ais_betas"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int) or getattr(self, name) < 2:
                raise ConfigError(f"An int >= 2 must be specified for {name}, but got {getattr(self, name)!r}.", key=name)
        if 0 < self.eval_max_betas < self.eval_ais_betas:
            raise ConfigError(f"0 or at least eval_ais_betas ({self.eval_ais_betas}) must be specified for eval_max_betas, but got {self.eval_max_betas}.", key="eval_max_betas")
        if self.eval_control_betas == 1:
            raise ConfigError("0 (off) or at least 2 must be specified for eval_control_betas, but got 1.", key="eval_control_betas")
        cap = max(self.eval_ais_betas, self.eval_max_betas)
        if 0 < self.eval_tail_betas <= cap:
            raise ConfigError(f"0 or above the cap of eval_ais_betas and eval_max_betas ({cap}) must be specified for eval_tail_betas, but got {self.eval_tail_betas}.", key="eval_tail_betas")
        choices = (("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES), ("rnn", RNN_TYPES), ("monitor", MONITORS))
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ConfigError(f"One of {allowed} must be specified for {name}, but got {getattr(self, name)!r}.", key=name)

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
