"""Search RNN-RBM hyperparameters with Ray Tune and Optuna; the search stage.

    python -m rbmsearch.tune [--data D] [--space FILE] [--num-samples N] [--max-epochs E] [--max-concurrent M]
                             [--cpus-per-trial C] [--gpus-per-trial G] [--storage P] [--name X]
                             [--resume] [--address A] [--single-trial]

Reads a dataset (`--data`: a Parquet file or URI written by `rbmsearch.data`, or any source it
imports: a MIDI folder, a .pickle, `bach-chorales`; default: the built-in Bach chorales) and a
search-space file (`--space`, default `search_spaces/default.yaml`; the format is in
`search_spaces/README.md`). Writes the experiment directory STORAGE/NAME (`--storage` is a
local path, default ./runs, or a URI such as s3://bucket/runs):

    search.json              the resolved space, data and resources: all that --resume reuses
    trial_<id>/              Ray Tune's results of one trial, and its checkpoints, each a
                             `rbmsearch.train` run directory (config.json, params.npz, ...)
    diverged/<id>.json       trials that produced NaN/inf: epoch, error and parameters
    trials.json              every trial: status, parameters, best metrics, error
    optuna.db                the trials as an Optuna study: `optuna-dashboard sqlite:///.../optuna.db`
    history.png              optimization history; importance.png: parameter importances
    best_run/                the best checkpoint, a run directory for `evaluate` and `render`
    best.json                the best trial: config, validation and test metrics, checkpoint
    samples/sample_<i>.mid   samples of the best model

How a search runs. The driver reads the dataset once and puts it in Ray's object store
(`tune.with_parameters`). Each trial is `rbmsearch.train.train` on one configuration (the
space's fixed values, Optuna's choices, epochs = max_epochs) behind a thin adapter: it
reports every epoch through `ray.tune.report` with the run directory as the checkpoint, and
a restarted trial copies `ray.tune.get_checkpoint()` back into its run directory so that
`train` resumes there. Optuna's TPE sampler (seeded) proposes configurations, a
ConcurrencyLimiter runs `max_concurrent` of them at once, and ASHA stops weak ones early.
`--single-trial` runs the same trial code in-process without importing Ray or Optuna.

The objective is `valid_monitor`: by default a cheap RAISE estimate of the validation NLL per
frame (lower is better; `rbmsearch.evaluate.monitor`: 4 runs x 200 temperatures on a fixed,
even spread of 200 validation frames, with fixed noise, so every epoch and every trial is
scored on the same frames with the same random numbers). It is the paper's measure with
fewer samples, erring high: a few tenths of a nat on JSB, more for models too sharp to anneal
in 200 steps. The AIS version (`monitor: nll` in `fixed`) errs low instead, and for sharp
models by whole nats (on Nottingham it read -4.3 where the NLL is 3.7), so a search on it
drifts towards models that only look good. The full score (100 AIS runs x 1000 temperatures
on every frame, with RAISE beside it) takes minutes, so only the best trial gets it, on the
test split, at the end. The pseudo-log-likelihood
(`monitor: pll` in `fixed`) is 10x cheaper but is no objective: on JSB it kept falling
(6.6 -> 5.5 nats/frame) while the AIS NLL of the same models rose (7.3 -> 7.9), so a search
on it picks the worst models. The monitor settings are held fixed in a search (they may be
set in `fixed`, not in `params`), since trials are only comparable on one scale.
`valid_acc`, the frame accuracy of one prediction per frame (25 Gibbs steps from silence,
against `evaluate`'s 1000) on an even spread of at most `acc_frames` validation frames, is
reported too: cheap but noisy, so it is shown, not optimised.

Divergence. A trial whose cost or monitor becomes NaN or inf raises DivergenceError (which
carries its configuration) before anything is reported, so no made-up loss reaches Tune
or Optuna: the trial shows as ERROR with its parameters, Optuna records it as FAIL, and the
search goes on. FailureConfig retries failed trials (a lost node, an OOM kill) from their last
checkpoint, but divergence is deterministic, so the trial leaves `diverged/<id>.json` and
any retry re-raises at once instead of training again.

Resume. `--resume` continues STORAGE/NAME (or the latest experiment under STORAGE) with
`Tuner.restore`: finished trials, the searcher's history (Optuna's study) and the scheduler
are kept, unfinished trials continue from their last checkpoint, and errored trials stay
errored (they diverged or exhausted their retries). The space, data and resources come
from the experiment's search.json, never from new flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rbmsearch.data import BuildOptions, Dataset, DatasetError, default_dataset, load_source, read_dataset
from rbmsearch.train import ConfigError, DivergenceError, TrainConfig, train

__all__ = [
    "Param",
    "SearchError",
    "SearchSettings",
    "SearchSpace",
    "SearchSpaceError",
    "benchmark",
    "check_shared_storage",
    "network_filesystem",
    "finish",
    "load_space",
    "render_trials",
    "run_search",
    "single_trial",
]

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
DEFAULT_SPACE = SPACES_DIR / "default.yaml"
DEFAULT_STORAGE = "runs"
# Metrics a space may optimise, with the direction in which they improve. The CD cost is
# not among them: it is not a likelihood, and it falls as the Gibbs chain mixes worse.
OBJECTIVES = {"valid_monitor": "min", "valid_acc": "max"}
# Gibbs steps per predicted frame for the per-epoch valid_acc: generation's 25, cheap but not
# mixed, so it reads below `evaluate`'s accuracy (1000 steps), the more so the sharper the
# model: 0.205 against 0.250 for a JSB model trained 200 epochs.
ACC_GIBBS_K = 25
SAMPLE_GIBBS_K = 25  # Gibbs steps per generated frame (the paper's setting)
SEARCH_FILE = "search.json"


class SearchSpaceError(ValueError):
    """A search-space file is invalid. The message names the file, the key and the fix."""

    def __init__(self, path: str | os.PathLike, key: str, reason: str):
        self.path = str(path)
        self.key = key
        self.reason = reason
        super().__init__(f"{self.path}: {key}: {reason}")


class SearchError(RuntimeError):
    """A search cannot start or finish: the experiment directory, resume, or no finished trial."""


# ---------------------------------------------------------------------------- search spaces


class _SpaceLoader(yaml.SafeLoader):
    """YAML for humans: duplicate keys are errors, and 1e-3 is a float (YAML 1.1 wants 1.0e-3)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


_SpaceLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _train_field_types() -> dict[str, type]:
    """TrainConfig field -> the type of its default (int, float or str)."""
    return {f.name: type(f.default) for f in dataclasses.fields(TrainConfig)}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _describe(value) -> str:
    return f"{value!r} ({type(value).__name__})"


@dataclass(frozen=True)
class Param:
    """One searched TrainConfig field: an int or float range, or a list of choices."""

    name: str
    type: str  # "int", "float" or "categorical"
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False  # sample uniformly in log space (low > 0)
    step: int | float | None = None  # a grid low, low + step, ...; not with log
    choices: tuple = ()
    default: Any = None  # the value --single-trial uses (else the midpoint / first choice)

    def center(self):
        """The value --single-trial uses: `default`, else the (geometric) midpoint or first choice."""
        if self.default is not None:
            return self.default
        if self.type == "categorical":
            return self.choices[0]
        mid = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
        if self.step:
            mid = self.low + round((mid - self.low) / self.step) * self.step
        return int(round(mid)) if self.type == "int" else float(mid)

    def extremes(self) -> list:
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]

    def distribution(self):
        """The Optuna distribution of this parameter."""
        import optuna

        if self.type == "int":
            return optuna.distributions.IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        if self.type == "float":
            return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        return optuna.distributions.CategoricalDistribution(list(self.choices))

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"type": self.type}
        if self.type == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high)
            if self.log:
                out["log"] = True
            if self.step is not None:
                out["step"] = self.step
        if self.default is not None:
            out["default"] = self.default
        return out


@dataclass(frozen=True)
class SearchSettings:
    """How a space is searched. Defaults: a small laptop search."""

    metric: str = "valid_monitor"  # see OBJECTIVES and the module docstring
    mode: str = "min"  # must match the metric's direction
    num_samples: int = 12  # trials in all
    max_epochs: int = 20  # TrainConfig.epochs of every trial, and ASHA's max_t
    grace_period: int = 2  # ASHA: epochs every trial gets before it can be stopped
    reduction_factor: float = 3  # ASHA: 1 in this many trials goes on at each rung
    max_concurrent: int = 2  # trials at once (ConcurrencyLimiter): one per core on a laptop
    cpus_per_trial: float = 1  # also TF's intra-op threads (at least 1)
    gpus_per_trial: float = 0  # fractions share a GPU; 0 hides the GPUs from the trial's TF
    resources: dict = field(default_factory=dict)  # custom Ray resources per trial, e.g. {"big_node": 1}
    seed: int = 0  # Optuna's TPE sampler
    max_failures: int = 2  # retries of a failed trial from its last checkpoint (not for NaN)
    keep_checkpoints: int = 2  # best checkpoints kept per trial, by metric
    acc_frames: int = 1000  # validation frames for the per-epoch valid_acc; 0 turns it off
    time_budget_s: float | None = None  # stop the whole search after this long
    first_trial_at_defaults: bool = False  # trial 1 uses each param's default (or midpoint)
    reuse_actors: bool = True  # keep trial processes (TF already imported) for the next trial
    top: int = 10  # rows of the final table
    samples: int = 4  # samples (MIDI, WAV, PNG) of each rendered trial's best checkpoint
    render_top: int = 3  # trials whose samples are rendered for the gallery, best first
    sample_quarters: int = 32  # length of each sample, in quarter notes


_SETTING_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "metric": (lambda v: v in OBJECTIVES, f"one of {sorted(OBJECTIVES)}"),
    "mode": (lambda v: v in ("min", "max"), "'min' or 'max'"),
    "num_samples": (lambda v: _is_int(v) and v >= 1, "a positive int"),
    "max_epochs": (lambda v: _is_int(v) and v >= 1, "a positive int"),
    "grace_period": (lambda v: _is_int(v) and v >= 1, "a positive int"),
    "reduction_factor": (lambda v: _is_number(v) and v > 1, "a number above 1"),
    "max_concurrent": (lambda v: _is_int(v) and v >= 1, "a positive int"),
    "cpus_per_trial": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "gpus_per_trial": (lambda v: _is_number(v) and v >= 0, "a non-negative number"),
    "resources": (
        lambda v: isinstance(v, dict) and all(isinstance(k, str) and k.lower() not in ("cpu", "gpu") and _is_number(a) and a > 0 for k, a in v.items()),
        "a mapping of custom resource names (not CPU/GPU: use cpus_per_trial, gpus_per_trial) to positive amounts",
    ),  # fmt: skip
    "seed": (lambda v: _is_int(v) and v >= 0, "a non-negative int"),
    "max_failures": (lambda v: _is_int(v) and v >= -1, "an int >= -1 (-1 retries forever)"),
    "keep_checkpoints": (lambda v: _is_int(v) and v >= 1, "a positive int"),
    "acc_frames": (lambda v: _is_int(v) and v >= 0, "a non-negative int"),
    "time_budget_s": (lambda v: v is None or (_is_number(v) and v > 0), "a positive number of seconds, or null"),
    "first_trial_at_defaults": (lambda v: isinstance(v, bool), "true or false"),
    "reuse_actors": (lambda v: isinstance(v, bool), "true or false"),
    "top": (lambda v: _is_int(v) and v >= 1, "a positive int"),
    "samples": (lambda v: _is_int(v) and v >= 0, "a non-negative int"),
    "render_top": (lambda v: _is_int(v) and v >= 1, "a positive int"),
    "sample_quarters": (lambda v: _is_int(v) and v >= 1, "a positive int"),
}
assert set(_SETTING_CHECKS) == {f.name for f in dataclasses.fields(SearchSettings)}


def _parse_settings(raw, where: str) -> SearchSettings:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SearchSpaceError(where, "search", f"a mapping of search settings must be specified, but got {_describe(raw)}.")
    unknown = sorted(set(raw) - set(_SETTING_CHECKS))
    if unknown:
        raise SearchSpaceError(where, f"search.{unknown[0]}", f"unknown search setting; known settings are {sorted(_SETTING_CHECKS)}.")
    for key, value in raw.items():
        check, expected = _SETTING_CHECKS[key]
        if not check(value):
            raise SearchSpaceError(where, f"search.{key}", f"{expected} must be specified, but got {_describe(value)}.")
    settings = SearchSettings(**raw)
    if settings.grace_period > settings.max_epochs:
        raise SearchSpaceError(
            where, "search.grace_period", f"at most max_epochs ({settings.max_epochs}) must be specified, but got {settings.grace_period}."
        )
    natural = OBJECTIVES[settings.metric]
    if settings.mode != natural:
        raise SearchSpaceError(where, "search.mode", f"{settings.metric} improves as it gets {'lower' if natural == 'min' else 'higher'}, so mode must be {natural!r}, but got {settings.mode!r}.")  # fmt: skip
    if settings.metric == "valid_acc" and settings.acc_frames == 0:
        raise SearchSpaceError(where, "search.acc_frames", "metric valid_acc needs acc_frames > 0, but got 0.")
    return settings


def _check_value(value, kind: type, where: str, key: str):
    """A TrainConfig value of the field's type (ints are accepted for float fields)."""
    if kind is float and _is_number(value):
        return float(value)
    if kind is int and _is_int(value):
        return value
    if kind is str and isinstance(value, str):
        return value
    expected = {int: "an int", float: "a number", str: "a string"}[kind]
    raise SearchSpaceError(where, key, f"{expected} must be specified, but got {_describe(value)}.")


def _parse_param(name: str, raw, kind: type, where: str) -> Param:
    key = f"params.{name}"
    example = "{type: float, low: 1.0e-4, high: 1.0e-2, log: true}"
    if not isinstance(raw, dict):
        raise SearchSpaceError(where, key, f"a mapping such as {example} must be specified, but got {_describe(raw)}.")
    allowed = {"int": {"type", "low", "high", "log", "step", "default"}, "float": {"type", "low", "high", "log", "step", "default"}, "categorical": {"type", "choices", "default"}}  # fmt: skip
    ptype = raw.get("type")
    if ptype not in allowed:
        raise SearchSpaceError(where, f"{key}.type", f"one of 'int', 'float', 'categorical' must be specified, but got {ptype!r}.")
    unknown = sorted(set(raw) - allowed[ptype])
    if unknown:
        raise SearchSpaceError(where, f"{key}.{unknown[0]}", f"unknown key for {'an' if ptype == 'int' else 'a'} {ptype} parameter; known keys are {sorted(allowed[ptype])}.")

    if ptype == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SearchSpaceError(where, f"{key}.choices", f"a non-empty list must be specified, but got {_describe(choices)}.")
        choices = tuple(_check_value(c, kind, where, f"{key}.choices[{i}]") for i, c in enumerate(choices))
        if len(set(choices)) != len(choices):
            raise SearchSpaceError(where, f"{key}.choices", f"each choice must appear once, but got {list(choices)}.")
        default = raw.get("default")
        if default is not None and default not in choices:
            raise SearchSpaceError(where, f"{key}.default", f"one of the choices {list(choices)} must be specified, but got {default!r}.")
        return Param(name, "categorical", choices=choices, default=default)

    if kind is str:
        raise SearchSpaceError(where, f"{key}.type", f"{name} is a str field of TrainConfig; use type: categorical with a list of choices.")
    if (ptype == "int") != (kind is int):
        raise SearchSpaceError(where, f"{key}.type", f"{name} is a{'n int' if kind is int else ' float'} field of TrainConfig, so type must be {kind.__name__!r}, but got {ptype!r}.")  # fmt: skip
    bounds = {}
    for bound in ("low", "high"):
        if bound not in raw:
            raise SearchSpaceError(where, f"{key}.{bound}", f"missing; a {ptype} parameter needs low and high.")
        bounds[bound] = _check_value(raw[bound], kind, where, f"{key}.{bound}")
    low, high = bounds["low"], bounds["high"]
    if low >= high:
        raise SearchSpaceError(where, f"{key}.low", f"a value below high ({high}) must be specified, but got {low}; for a constant, use `fixed`.")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise SearchSpaceError(where, f"{key}.log", f"true or false must be specified, but got {_describe(log)}.")
    if log and low <= 0:
        raise SearchSpaceError(where, f"{key}.low", f"a positive value must be specified for a log-scaled parameter, but got {low}.")
    step = raw.get("step")
    if step is not None:
        if log:
            raise SearchSpaceError(where, f"{key}.step", "step and log cannot be combined (Optuna samples a log range continuously); drop one.")
        step = _check_value(step, kind, where, f"{key}.step")
        if step <= 0:
            raise SearchSpaceError(where, f"{key}.step", f"a positive value must be specified, but got {step}.")
    default = raw.get("default")
    if default is not None:
        default = _check_value(default, kind, where, f"{key}.default")
        if not low <= default <= high:
            raise SearchSpaceError(where, f"{key}.default", f"a value in [{low}, {high}] must be specified, but got {default}.")
    return Param(name, ptype, low, high, log, step, default=default)


@dataclass(frozen=True)
class SearchSpace:
    """A parsed search-space file: how to search, what is fixed, and what is searched."""

    name: str  # the file's stem: names experiments
    settings: SearchSettings
    fixed: dict  # TrainConfig field -> value
    params: tuple[Param, ...]
    description: str = ""
    where: str = ""  # the file it came from, for messages

    @classmethod
    def from_dict(cls, raw, where: str, name: str = "space") -> SearchSpace:
        """Validate a space given as a dict (a parsed YAML file, or a search.json entry)."""
        if not isinstance(raw, dict):
            raise SearchSpaceError(where, "(top level)", f"a mapping with keys search, fixed, params must be specified, but got {_describe(raw)}.")
        unknown = sorted(set(raw) - {"description", "search", "fixed", "params"})
        if unknown:
            raise SearchSpaceError(where, unknown[0], "unknown top-level key; known keys are ['description', 'fixed', 'params', 'search'].")
        description = raw.get("description") or ""
        if not isinstance(description, str):
            raise SearchSpaceError(where, "description", f"a string must be specified, but got {_describe(description)}.")
        settings = _parse_settings(raw.get("search"), where)
        types = _train_field_types()

        def check_name(section: str, key) -> None:
            if key == "epochs":
                raise SearchSpaceError(where, f"{section}.epochs", "trials train for search.max_epochs epochs (ASHA stops weak ones earlier); set that instead.")
            if section == "params" and key.startswith("monitor"):
                raise SearchSpaceError(where, f"params.{key}", "the monitor is the objective, so every trial must use the same one; set it in `fixed`.")
            if key not in types:
                raise SearchSpaceError(where, f"{section}.{key}", f"not a TrainConfig field; known fields are {sorted(set(types) - {'epochs'})}.")

        fixed_raw = raw.get("fixed") or {}
        if not isinstance(fixed_raw, dict):
            raise SearchSpaceError(where, "fixed", f"a mapping of TrainConfig fields to values must be specified, but got {_describe(fixed_raw)}.")
        fixed = {}
        for key, value in fixed_raw.items():
            check_name("fixed", key)
            fixed[key] = _check_value(value, types[key], where, f"fixed.{key}")
        params_raw = raw.get("params") or {}
        if not isinstance(params_raw, dict) or not params_raw:
            raise SearchSpaceError(where, "params", f"a non-empty mapping of TrainConfig fields to ranges must be specified, but got {_describe(params_raw)}; to train one configuration use `python -m rbmsearch.train`.")  # fmt: skip
        params = []
        for key, value in params_raw.items():
            check_name("params", key)
            if key in fixed:
                raise SearchSpaceError(where, f"params.{key}", "also given in `fixed`; keep it in one of the two.")
            params.append(_parse_param(key, value, types[key], where))
        space = cls(name, settings, fixed, tuple(params), description, where)
        space._check_train_configs()
        return space

    def _check_train_configs(self) -> None:
        """Every range end and every choice, with the rest at their centers, must be a valid TrainConfig."""
        center = self.center()
        for param in self.params:
            for value in param.extremes() + [param.center()]:
                try:
                    self.train_config({**center, param.name: value})
                except ConfigError as e:
                    raise SearchSpaceError(self.where, f"params.{param.name}", f"the value {value!r} is refused by TrainConfig: {e}") from e
        if not self.params:
            try:
                self.train_config({})
            except ConfigError as e:
                raise SearchSpaceError(self.where, "fixed", f"refused by TrainConfig: {e}") from e

    def center(self) -> dict:
        """The searched values --single-trial uses: each param's default or midpoint."""
        return {p.name: p.center() for p in self.params}

    def train_config(self, params: dict) -> TrainConfig:
        """The configuration of one trial: fixed values, then `params`, with epochs = max_epochs."""
        return TrainConfig.from_dict({**self.fixed, **params, "epochs": self.settings.max_epochs}, f"{self.where} (a trial's parameters)")

    def distributions(self) -> dict:
        return {p.name: p.distribution() for p in self.params}

    def with_settings(self, **changes) -> SearchSpace:
        """The same space with some search settings replaced (CLI flags, tests, benchmarks)."""
        raw = self.to_dict()
        raw["search"].update(changes)
        if "max_epochs" in changes and "grace_period" not in changes:  # a shorter run keeps a valid ASHA
            raw["search"]["grace_period"] = min(raw["search"]["grace_period"], changes["max_epochs"])
        return SearchSpace.from_dict(raw, self.where, self.name)

    def to_dict(self) -> dict:
        return {
            "description": self.description,
            "search": asdict(self.settings),
            "fixed": dict(self.fixed),
            "params": {p.name: p.to_dict() for p in self.params},
        }


def load_space(path: str | os.PathLike) -> SearchSpace:
    """Read and validate a search-space file. Raises SearchSpaceError naming the file and key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SearchSpaceError(path, "(file)", f"cannot be read ({e.strerror or e}); the shipped spaces are in {SPACES_DIR}.") from e
    try:
        raw = yaml.load(text, Loader=_SpaceLoader)
    except yaml.YAMLError as e:
        raise SearchSpaceError(path, "(file)", f"is not valid YAML: {e}") from e
    return SearchSpace.from_dict(raw, str(path), path.stem)


# ---------------------------------------------------------------------------- one trial


@dataclass(frozen=True)
class TrialSpec:
    """What every trial of a search shares; sent to the workers once, with the dataset."""

    space: SearchSpace
    data_path: str  # provenance, written into each run's config.json
    marker_dir: str = ""  # where diverged trials leave a note (a path or URI); "" for none


def _configure_process(cpus: float, gpus: float) -> None:
    """Before TF starts in this process: its threads follow the trial's CPUs; no GPU if it has none."""
    if gpus == 0:
        # TF reads this when it initialises CUDA: a CPU trial on a GPU node must not claim a GPU.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # one banner per trial process is noise
    import tensorflow as tf

    threads = max(1, int(cpus))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as e:  # TF already ran ops here with other settings
        warnings.warn(f"Could not set TensorFlow to {threads} thread(s) ({e}); the trial may use more cores than it reserved.", stacklevel=2)


class _ValidationAcc:
    """Per-epoch ACC of the latest checkpoint: one prediction per frame on <= `frames` validation frames."""

    def __init__(self, dataset: Dataset, frames: int, config: TrainConfig):
        self.rolls = dataset.rolls("valid") or dataset.rolls("train")  # train's own fallback
        self.frames, self.config = frames, config
        self.model = self.checkpoint = self.chain = None

    def __call__(self, run_dir: Path) -> float:
        import tensorflow as tf

        from rbmsearch.ais import expected_frame_accuracy
        from rbmsearch.evaluate import conditional_rbms
        from rbmsearch.model import RnnRbm, gibbs_chain

        if self.model is None:
            self.model = RnnRbm(self.config.model_config(), seed=self.config.seed)
            self.checkpoint = tf.train.Checkpoint(model=self.model)
            model = self.model
            # One trace for the whole trial: k Gibbs steps from silence, as in evaluate.sample_predictions.
            self.chain = tf.function(lambda bv, bh, seed: gibbs_chain(tf.zeros_like(bv), model.W, bv, bh, ACC_GIBBS_K, seed)[0])
        self.checkpoint.restore(tf.train.latest_checkpoint(str(run_dir / "ckpt"))).expect_partial()
        v, bv, bh = conditional_rbms(self.model, self.rolls)  # (N, n_v), (N, n_v), (N, n_h)
        step = max(1, len(v) // self.frames)  # an even spread, the same frames every epoch
        seed = tf.constant([self.config.seed, 7], tf.int64)  # the same noise every epoch: less jitter
        sample = self.chain(tf.constant(bv[::step]), tf.constant(bh[::step]), seed).numpy() > 0.5
        return expected_frame_accuracy(v[::step], sample[None])


def run_trial(params: dict, dataset: Dataset, spec: TrialSpec, session) -> dict:
    """Train one configuration and report every epoch to `session`: the trial, with or without Ray.

    session: `run_dir` (the run directory), `restore()` -> epochs already done (after putting
    the last checkpoint into run_dir), `report(metrics, run_dir)`.
    """
    settings = spec.space.settings
    _configure_process(settings.cpus_per_trial, settings.gpus_per_trial)
    config = spec.space.train_config(params)
    restored = session.restore()
    acc = _ValidationAcc(dataset, settings.acc_frames, config) if settings.acc_frames else None
    start, reporting = time.perf_counter(), 0.0

    def report(epoch: int, record: dict, run_dir: Path) -> None:
        nonlocal reporting
        metrics = {**record, "restored_from_epoch": restored}
        if acc is not None:
            metrics["valid_acc"] = acc(run_dir)
        metrics["train_s"] = time.perf_counter() - start - reporting  # this attempt's own work so far
        before = time.perf_counter()
        session.report(metrics, run_dir)
        reporting += time.perf_counter() - before

    return train(config, dataset, session.run_dir, report=report, data_path=spec.data_path, evaluate_test=False)


def _epochs_done(run_dir: Path) -> int:
    path = run_dir / "metrics.json"
    return len(json.loads(path.read_text()).get("history", [])) if path.is_file() else 0


class _LocalSession:
    """Single-trial mode: the run directory is the only state; each report prints a JSON line."""

    def __init__(self, run_dir: Path, out=sys.stdout):
        self.run_dir, self.out = run_dir, out

    def restore(self) -> int:
        return _epochs_done(self.run_dir)  # train resumes from run_dir by itself

    def report(self, metrics: dict, run_dir: Path) -> None:
        print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}), file=self.out, flush=True)


class _RaySession:
    """Inside a Tune trial: checkpoints are Tune's, copied into a scratch run directory."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        # Ray logs every checkpoint it persists, once per epoch per trial: noise in the driver's table.
        logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)

    def restore(self) -> int:
        import ray.tune

        checkpoint = ray.tune.get_checkpoint()
        if checkpoint is None:
            return 0
        with checkpoint.as_directory() as path:
            shutil.copytree(path, self.run_dir, dirs_exist_ok=True)
        return _epochs_done(self.run_dir)

    def report(self, metrics: dict, run_dir: Path) -> None:
        import ray
        import ray.tune

        context = ray.get_runtime_context()
        gpus = context.get_accelerator_ids().get("GPU", [])  # what Ray gave this trial (CUDA_VISIBLE_DEVICES)
        metrics = {**metrics, "node_id": context.get_node_id(), "gpu_ids": ",".join(map(str, gpus))}
        ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(str(run_dir)))


def _filesystem(uri: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def _read_marker(marker_dir: str, trial_id: str) -> dict | None:
    import pyarrow.fs

    if not marker_dir:
        return None
    fs, path = _filesystem(f"{marker_dir}/{trial_id}.json")
    if fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as f:
        return json.loads(f.readall())


def _write_marker(marker_dir: str, trial_id: str, error: DivergenceError, params: dict) -> None:
    if not marker_dir:
        return
    fs, path = _filesystem(f"{marker_dir}/{trial_id}.json")
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    found = re.match(r"training diverged at epoch \d+: (.*?) is not finite", str(error))
    what = found.group(1) if found else "the cost"
    note = {"trial_id": trial_id, "epoch": error.epoch, "what": what, "params": params, "error": str(error)}
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(note, indent=2, sort_keys=True).encode())


def rbmsearch_trial(params: dict, dataset: Dataset, spec: TrialSpec) -> None:
    """The Ray Tune trainable: `run_trial` in a scratch run directory, with Tune's checkpoints."""
    import ray.tune

    trial_id = ray.tune.get_context().get_trial_id()
    earlier = _read_marker(spec.marker_dir, trial_id)
    if earlier is not None:  # NaN is deterministic: a retry would only diverge again
        config = spec.space.train_config(params)
        raise DivergenceError(earlier["epoch"], f"{earlier['what']} (in an earlier attempt of this trial; not retried)", config)
    with tempfile.TemporaryDirectory(prefix=f"rbmsearch-{trial_id}-") as scratch:
        try:
            run_trial(params, dataset, spec, _RaySession(Path(scratch) / "run"))
        except DivergenceError as e:
            _write_marker(spec.marker_dir, trial_id, e, params)
            raise


# ---------------------------------------------------------------------------- data and storage


def load_data(data: str | None, progress: bool = True) -> tuple[Dataset, str]:
    """--data -> (dataset, path recorded in runs). Parquet files and URIs are read; other sources imported."""
    if data is None:
        data = str(default_dataset(progress=progress))
    if data.endswith(".parquet") or "://" in data:
        return read_dataset(data), data
    return load_source(data, BuildOptions(progress=progress)), data


def _is_uri(path: str) -> bool:
    return "://" in path


def _storage_root(storage: str) -> str:
    return storage.rstrip("/") if _is_uri(storage) else str(Path(storage).expanduser().resolve())


def _read_text(uri: str) -> str | None:
    import pyarrow.fs

    fs, path = _filesystem(uri) if _is_uri(uri) else (pyarrow.fs.LocalFileSystem(), uri)
    if fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as f:
        return f.readall().decode()


def _write_text(uri: str, text: str) -> None:
    if not _is_uri(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        Path(uri).write_text(text)
        return
    fs, path = _filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def _latest_experiment(storage: str) -> str:
    if _is_uri(storage):
        raise SearchError(f"--resume with a URI storage ({storage}) needs --name: which experiment to continue.")
    found = sorted(Path(storage).glob(f"*/{SEARCH_FILE}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SearchError(f"--resume found no experiment in {storage}; give --storage and --name of the one to continue.")
    return found[-1].parent.name


# ---------------------------------------------------------------------------- search


def _trial_name(trial) -> str:
    return f"trial_{trial.trial_id}"


def _init_ray(address: str | None) -> bool:
    """Connect to `address` (or $RAY_ADDRESS), else start a local Ray. Returns True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    ray.init(address=address or "local")
    return True


def _path_exists(path: str) -> bool:
    return os.path.exists(path)


# Filesystem types (/proc/mounts) whose paths other machines can mount too.
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "glusterfs", "afs")


def network_filesystem(path: str) -> str | None:
    """The type of the network filesystem holding `path` (nfs, fuse.gcsfuse, ...), or None if local."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:  # not Linux: cannot tell
        return None
    resolved = str(Path(path).resolve())
    under = [(point, kind) for point, kind in mounts if resolved == point or resolved.startswith(point.rstrip("/") + "/")]
    if not under:
        return None
    _, kind = max(under, key=lambda m: len(m[0]))  # the innermost mount
    return kind if kind in NETWORK_FILESYSTEMS or kind.startswith("fuse.") else None


def check_shared_storage(storage: str, settings: SearchSettings) -> None:
    """Fail fast if trials could write under a local `storage` path that the driver cannot see.

    Trials write their checkpoints under the storage path on whatever node they run, so on
    a cluster a node's own disk would strand them there. URIs (s3://, gs://, ...) and network
    filesystems are shared by nature. Otherwise: with several nodes alive, the driver writes
    a marker file and asks every node whether it sees it; with one node that cannot run a
    trial (a CPU-only head of an autoscaling cluster), trials will run on nodes that join
    later, which cannot be asked, so a local path is refused.
    """
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if _is_uri(storage) or network_filesystem(storage):
        return
    fix = ("pass shared storage: --storage s3://BUCKET/runs, gs://BUCKET/runs, or an NFS path mounted at the "
           "same place on every node")  # fmt: skip
    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) == 1:
        have = nodes[0]["Resources"]
        need = {"CPU": settings.cpus_per_trial, "GPU": settings.gpus_per_trial, **settings.resources}
        if all(have.get(k, 0) >= v for k, v in need.items() if v):
            return
        raise SearchError(
            f"no node of this cluster can run a trial yet (it has {json.dumps({k: have.get(k, 0) for k in need})}, a trial "
            f"needs {json.dumps(need)}), so trials will run on nodes that join later, which cannot see the local "
            f"--storage {storage}: {fix}. (On one machine, lower --cpus-per-trial or --gpus-per-trial instead.)"
        )
    marker = Path(storage) / f".rbmsearch-shared-{uuid.uuid4().hex}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("written by the driver; every node must see it\n")
    try:
        probe = ray.remote(num_cpus=0)(_path_exists)
        answers = {
            f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})": probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker))
            for n in nodes
        }  # fmt: skip
        blind = [name for name, answer in answers.items() if not ray.get(answer, timeout=300)]
    finally:
        marker.unlink()
    if blind:
        raise SearchError(
            f"--storage {storage} is a local path that {len(blind)} of the cluster's {len(nodes)} nodes cannot see "
            f"({', '.join(blind)}): their trials' checkpoints and results would be stranded on their own disks; {fix}."
        )


def run_search(
    space: SearchSpace | None,
    data: str | None,
    storage: str = DEFAULT_STORAGE,
    name: str | None = None,
    resume: bool = False,
    address: str | None = None,
    progress: bool = True,
    finish_search: bool = True,
):
    """Run (or with `resume`, continue) a search; returns (experiment path, ray.tune.ResultGrid).

    Raises SearchError when the experiment cannot start, or was interrupted (rerun with resume).
    """
    import ray
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    # Every trial checkpoints every epoch, so Tune snapshots the experiment often by design;
    # its warning about that would repeat every few seconds for the whole search.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

    storage = _storage_root(storage)
    if resume:
        name = name or _latest_experiment(storage)
        experiment = f"{storage}/{name}"
        saved = _read_text(f"{experiment}/{SEARCH_FILE}")
        if saved is None:
            raise SearchError(f"{experiment}/{SEARCH_FILE}: missing, so there is no experiment {name!r} in {storage} to resume.")
        saved = json.loads(saved)
        space = SearchSpace.from_dict(saved["space"], f"{experiment}/{SEARCH_FILE}", saved["space_name"])
        data = saved["data"]
    else:
        name = name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        experiment = f"{storage}/{name}"
        if _read_text(f"{experiment}/{SEARCH_FILE}") is not None:
            raise SearchError(f"{experiment} already holds an experiment; continue it with --resume, or choose another --name.")
    dataset, data_path = load_data(data, progress)
    settings = space.settings
    started_ray = _init_ray(address)
    try:
        check_shared_storage(storage, settings)  # before anything is written there
        if not resume:
            saved = {"space_name": space.name, "space_file": space.where, "space": space.to_dict(), "data": data_path, "created": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
            _write_text(f"{experiment}/{SEARCH_FILE}", json.dumps(saved, indent=2) + "\n")
        spec = TrialSpec(space, data_path, marker_dir=f"{experiment}/diverged")
        resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial, **settings.resources}
        trainable = ray.tune.with_resources(ray.tune.with_parameters(rbmsearch_trial, dataset=dataset, spec=spec), resources)
        if resume:
            tuner = ray.tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True, resume_errored=False)
        else:
            searcher = OptunaSearch(
                space=space.distributions(),
                metric=settings.metric,
                mode=settings.mode,
                sampler=_tpe_sampler(settings.seed),
                points_to_evaluate=[space.center()] if settings.first_trial_at_defaults else None,
            )
            scheduler = ASHAScheduler(
                time_attr="epoch", metric=settings.metric, mode=settings.mode, max_t=settings.max_epochs,
                grace_period=settings.grace_period, reduction_factor=settings.reduction_factor,
            )  # fmt: skip
            tuner = ray.tune.Tuner(
                trainable,
                tune_config=ray.tune.TuneConfig(
                    search_alg=ConcurrencyLimiter(searcher, max_concurrent=settings.max_concurrent),
                    scheduler=scheduler,
                    num_samples=settings.num_samples,
                    time_budget_s=settings.time_budget_s,
                    reuse_actors=settings.reuse_actors,
                    trial_name_creator=_trial_name,
                    trial_dirname_creator=_trial_name,
                ),
                run_config=ray.tune.RunConfig(
                    name=name,
                    storage_path=storage,
                    checkpoint_config=ray.tune.CheckpointConfig(
                        num_to_keep=settings.keep_checkpoints,
                        checkpoint_score_attribute=settings.metric,
                        checkpoint_score_order=settings.mode,
                    ),
                    failure_config=ray.tune.FailureConfig(max_failures=settings.max_failures),
                ),
            )
        results = tuner.fit()
        statuses = _saved_statuses(experiment)
        unfinished = sum(status not in ("TERMINATED", "ERROR") for status in statuses)
        # Fewer trials than asked for also means an interruption, unless a time budget ended the search.
        if unfinished or (len(statuses) < settings.num_samples and settings.time_budget_s is None):
            raise SearchError(
                f"the search was interrupted: {len(statuses) - unfinished} of {settings.num_samples} trials "
                f"done, {unfinished} unfinished; continue it with "
                f"`python -m rbmsearch.tune --resume --storage {storage} --name {name}`"
            )
        if finish_search:
            finish(experiment, results=results, dataset=dataset)
        return experiment, results
    finally:
        if started_ray:
            ray.shutdown()


def _saved_statuses(experiment: str) -> list[str]:
    """Trial statuses as the experiment state on storage has them.

    After Ctrl-C, Tune saves the state (interrupted trials still RUNNING, so that a restore
    continues them) and only then stops the trials, which the ResultGrid it returns then
    shows as TERMINATED; the saved state is the one that tells an interruption apart.
    """
    from ray.tune import ExperimentAnalysis

    return [trial.status for trial in ExperimentAnalysis(experiment).trials]


def _tpe_sampler(seed: int):
    import optuna

    return optuna.samplers.TPESampler(seed=seed)


# ---------------------------------------------------------------------------- the end of a search


@dataclass
class TrialSummary:
    """One trial as the final table, trials.json and the Optuna study show it."""

    trial_id: str
    status: str  # "TERMINATED" (finished or stopped by ASHA) or "ERROR"
    params: dict
    epochs: int  # epochs reported
    best: dict  # the reported record with the best metric, {} if none
    history: dict  # epoch -> metric
    error: str = ""
    checkpoint: Any = None  # the best ray.tune.Checkpoint, if any

    def to_json(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "checkpoint"}  # history: epoch -> metric
        out["checkpoint"] = self.checkpoint.path if self.checkpoint is not None else None
        return out


def _short_error(error) -> str:
    text = str(error)
    found = re.search(r"training diverged at epoch \d+: [^.]*\.", text)
    if found:
        return found.group(0)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else type(error).__name__


def _summaries(results, settings: SearchSettings, param_names: list[str]) -> list[TrialSummary]:
    better = min if settings.mode == "min" else max
    out = []
    for result in results:
        frame = result.metrics_dataframe
        records = frame.to_dict("records") if frame is not None and settings.metric in frame else []
        records = [r for r in records if isinstance(r.get(settings.metric), float) and math.isfinite(r[settings.metric])]
        best = better(records, key=lambda r: r[settings.metric]) if records else {}
        keep = ("epoch", settings.metric, "valid_monitor", "valid_acc", "train_cost", "train_frames_per_s")
        trial_id = result.path.rstrip("/").rsplit("/", 1)[-1].removeprefix("trial_")
        checkpoint = result.get_best_checkpoint(settings.metric, settings.mode) if records else None
        out.append(
            TrialSummary(
                trial_id=trial_id,
                status="ERROR" if result.error else "TERMINATED",
                params={k: result.config[k] for k in param_names if k in result.config},
                epochs=int(max((r["epoch"] for r in records), default=0)),
                best={k: (int if k == "epoch" else float)(best[k]) for k in keep if k in best and best[k] == best[k]},
                history={int(r["epoch"]): float(r[settings.metric]) for r in records},
                error=_short_error(result.error) if result.error else "",
                checkpoint=checkpoint or (result.checkpoint if records else None),
            )
        )
    ranked = sorted((s for s in out if s.best), key=lambda s: s.best[settings.metric], reverse=settings.mode == "max")
    return ranked + [s for s in out if not s.best]


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(summaries: list[TrialSummary], settings: SearchSettings, param_names: list[str]) -> str:
    """The top trials (by metric), then every errored trial, with parameters and metrics."""
    finished = [s for s in summaries if s.best][: settings.top]
    failed = [s for s in summaries if s.status == "ERROR" and not s.best]
    metrics = [settings.metric] + [m for m in ("valid_acc",) if m != settings.metric]
    header = ["rank", "trial", "status", "epochs", *metrics, *param_names]
    rows = []
    for rank, s in enumerate(finished, 1):
        rows.append([str(rank), s.trial_id, s.status, str(s.epochs), *(_format_value(s.best.get(m, "")) for m in metrics), *(_format_value(s.params.get(p, "")) for p in param_names)])  # fmt: skip
    for s in failed:
        rows.append(["-", s.trial_id, s.status, str(s.epochs), *("-" for _ in metrics), *(_format_value(s.params.get(p, "")) for p in param_names)])  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [header, *rows]]
    lines += [f"trial {s.trial_id} failed: {s.error}" for s in summaries if s.status == "ERROR"]
    return "\n".join(lines)


def write_optuna_study(path: Path, summaries: list[TrialSummary], space: SearchSpace, study_name: str):
    """Write the trials into a fresh SQLite Optuna study (for optuna-dashboard); returns the study."""
    import optuna

    if path.exists():
        path.unlink()  # the file mirrors the experiment: rebuilt, never appended to
    settings = space.settings
    study = optuna.create_study(
        storage=f"sqlite:///{path}", study_name=study_name, direction="minimize" if settings.mode == "min" else "maximize"
    )
    distributions = space.distributions()
    for s in summaries:
        finished = bool(s.best)
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE if finished else optuna.trial.TrialState.FAIL,
                value=s.best[settings.metric] if finished else None,
                params={k: v for k, v in s.params.items() if k in distributions},
                distributions={k: d for k, d in distributions.items() if k in s.params},
                user_attrs={"ray_trial_id": s.trial_id, "status": s.status, "epochs": s.epochs, "error": s.error, **{k: v for k, v in s.best.items() if k != settings.metric}},  # fmt: skip
                intermediate_values=s.history if finished else None,
            )
        )
    return study


def save_plots(study, out_dir: Path) -> dict[str, str]:
    """history.png and importance.png of the study; a plot that cannot be drawn is skipped, with the reason.

    Importances are PED-ANOVA's (Optuna's deterministic evaluator; fANOVA would need scikit-learn).
    """
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as oplt

    made = {}
    plots = {
        "history.png": lambda: oplt.plot_optimization_history(study),
        "importance.png": lambda: oplt.plot_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()),
    }
    for filename, plot in plots.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                ax = plot()
            except (ValueError, RuntimeError) as e:  # e.g. importances need 2+ finished trials
                print(f"{filename} skipped: {e}", file=sys.stderr)
                continue
        for warning in caught:  # e.g. too few trials: the importances shown are all equal
            print(f"{filename}: {warning.message}", file=sys.stderr)
        ax.figure.set_size_inches(8, 5)
        ax.figure.tight_layout()
        ax.figure.savefig(out_dir / filename, dpi=100)
        plt.close(ax.figure)
        made[filename] = str(out_dir / filename)
    return made


def evaluate_best(run_dir: Path, dataset: Dataset) -> dict:
    """Score a run directory's model on the test split with its config's AIS settings (full by default)."""
    from rbmsearch.train import load_run, test_metrics, write_json

    run = load_run(run_dir)
    rolls = dataset.rolls("test")
    if not rolls:
        print("the dataset has no test split: test NLL and ACC are not computed", file=sys.stderr)
        return {}
    test = test_metrics(run, rolls, progress=True)
    write_json(run_dir / "metrics.json", {**run.metrics, **test})  # as `train` does after evaluating
    return test


def render_trials(out: Path, ranked: list[tuple[str, Path]], settings: SearchSettings, data: str, seed: int) -> dict[str, list[str]]:
    """Samples of each (trial id, run directory) into out/samples/trial_<id>/ (out/samples/ for
    the single trial); returns trial id -> paths of its MIDI files relative to `out`.

    A trial whose rendering fails is reported and skipped: samples never cost a search its results.
    """
    from rbmsearch.render import RenderError, render_run
    from rbmsearch.train import load_run

    done = {}
    for trial_id, run_dir in ranked:
        if settings.samples == 0:
            break
        try:
            steps = settings.sample_quarters * int(load_run(run_dir).data["steps_per_quarter"])
            folder = Path("samples") if trial_id == "single" else Path("samples") / f"trial_{trial_id}"
            result = render_run(run_dir, out / folder, settings.samples, steps, seed=seed, data=data)
        except (RenderError, OSError, ValueError) as e:
            print(f"samples of trial {trial_id} skipped: {e}", file=sys.stderr)
            continue
        done[trial_id] = [str(folder / s["midi"]) for s in result["samples"]]
    return done


def _build_gallery(out: Path) -> Path | None:
    from rbmsearch.render import RenderError
    from rbmsearch.samples import GalleryError, build_page

    try:
        return build_page(out)
    except (GalleryError, RenderError, OSError) as e:
        print(f"gallery skipped: {e}", file=sys.stderr)
        return None


def finish(experiment_dir: str, results=None, dataset: Dataset | None = None) -> dict:
    """End of a search: table, trials.json, Optuna study and plots, test score, best.json, samples, gallery.

    experiment_dir: STORAGE/NAME (a path or URI) holding search.json. `results` (a ResultGrid)
    and `dataset` are read from there when not given. The best `render_top` trials' best
    checkpoints are rendered (`rbmsearch.render`) into samples/trial_<id>/, and index.html
    (`rbmsearch.samples`) shows them. Outputs go into the experiment directory (for a URI,
    through a local staging directory that is uploaded at the end). Returns best.json's content.
    """
    saved = json.loads(_read_text(f"{experiment_dir}/{SEARCH_FILE}") or "null")
    if saved is None:
        raise SearchError(f"{experiment_dir}/{SEARCH_FILE}: missing; is {experiment_dir} an rbmsearch experiment?")
    space = SearchSpace.from_dict(saved["space"], f"{experiment_dir}/{SEARCH_FILE}", saved["space_name"])
    settings = space.settings
    if results is None:
        from ray.tune import ExperimentAnalysis, ResultGrid

        results = ResultGrid(ExperimentAnalysis(experiment_dir))
    if dataset is None:
        dataset, _ = load_data(saved["data"], progress=False)
    remote = _is_uri(experiment_dir)
    out = Path(tempfile.mkdtemp(prefix="rbmsearch-finish-")) if remote else Path(experiment_dir)

    names = [p.name for p in space.params]
    summaries = _summaries(results, settings, names)
    print(f"\n{len(summaries)} trials: {sum(s.status == 'TERMINATED' for s in summaries)} finished, {sum(s.status == 'ERROR' for s in summaries)} errored")  # fmt: skip
    print(format_table(summaries, settings, names))
    (out / "trials.json").write_text(json.dumps([s.to_json() for s in summaries], indent=2) + "\n")
    study = write_optuna_study(out / "optuna.db", summaries, space, Path(experiment_dir).name)
    plots = save_plots(study, out)

    best = next((s for s in summaries if s.best and s.checkpoint is not None), None)
    if best is None:
        if remote:
            _upload(out, experiment_dir)
        raise SearchError(f"no trial of {experiment_dir} finished an epoch, so there is no best model; see trials.json for the errors.")
    best_run = out / "best_run"
    if best_run.exists():
        shutil.rmtree(best_run)
    best.checkpoint.to_directory(str(best_run))
    test = evaluate_best(best_run, dataset)
    config = json.loads((best_run / "config.json").read_text())
    others = [s for s in summaries if s.best and s.checkpoint is not None and s is not best][: settings.render_top - 1]
    with tempfile.TemporaryDirectory(prefix="rbmsearch-render-") as scratch:
        ranked = [(best.trial_id, best_run)]
        for s in others:
            ranked.append((s.trial_id, Path(scratch) / s.trial_id))
            s.checkpoint.to_directory(str(ranked[-1][1]))
        rendered = render_trials(out, ranked, settings, saved["data"], space.train_config(best.params).seed)
    samples = rendered.get(best.trial_id, [])
    report = {
        "trial_id": best.trial_id,
        "params": best.params,
        "config": config["train"],
        "data": config["data"],
        "metrics": {**best.best, **{k: v for k, v in test.items() if k != "test_eval"}},
        "test_eval": test.get("test_eval"),
        "checkpoint": best.checkpoint.path,
        "run_dir": f"{experiment_dir}/best_run",
        "samples": [f"{experiment_dir}/{p}" for p in samples],
        "plots": {k: f"{experiment_dir}/{k}" for k in plots},
        "optuna_storage": f"sqlite:///{experiment_dir}/optuna.db",
    }
    (out / "best.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    page = _build_gallery(out)
    if remote:
        _upload(out, experiment_dir)

    print(f"\nbest trial {best.trial_id}: {settings.metric} {best.best[settings.metric]:.4f}" + (f", test NLL {test['test_nll']:.3f} nats/frame (RAISE {test['test_nll_raise']:.3f}), test ACC {test['test_acc']:.3f} (best guess {test.get('test_acc_decoded', math.nan):.3f})" if test else ""))  # fmt: skip
    print(f"best.json: {experiment_dir}/best.json")
    if samples:
        print(f"samples:   {experiment_dir}/samples/trial_{best.trial_id}/ (MIDI, WAV and piano rolls of the best {len(rendered)} trials in samples/)")  # fmt: skip
    print(f"dashboard: optuna-dashboard {report['optuna_storage']}")
    if page is not None:
        view = f"python -m rbmsearch.samples {experiment_dir}" if not remote else f"copy {experiment_dir} here, then python -m rbmsearch.samples DIR"
        print(f"view them: {view}   (serves the gallery on http://127.0.0.1:8000/)")
    return report


def _upload(local: Path, uri: str) -> None:
    import pyarrow.fs

    fs, path = _filesystem(uri)
    pyarrow.fs.copy_files(str(local), path, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=fs)
    shutil.rmtree(local)


# ---------------------------------------------------------------------------- single trial


def single_trial(space: SearchSpace, data: str | None, out_dir: str | os.PathLike, cpus: float | None = None) -> dict:
    """One configuration (fixed values + each param's default or midpoint) through the trial code, without Ray.

    Writes out_dir/run (a run directory), then best.json and samples/ as a search would.
    Returns best.json's content.
    """
    out_dir = Path(out_dir)
    dataset, data_path = load_data(data)
    space = space.with_settings(cpus_per_trial=cpus or float(os.cpu_count() or 1))
    params = space.center()
    print(f"single trial: {json.dumps(params)}", file=sys.stderr)
    run_dir = out_dir / "run"
    metrics = run_trial(params, dataset, TrialSpec(space, data_path), _LocalSession(run_dir))
    test = evaluate_best(run_dir, dataset)
    settings = space.settings
    # The samples go into the run directory, where `python -m rbmsearch.samples RUN_DIR` looks.
    rendered = render_trials(run_dir, [("single", run_dir)], settings, data_path, space.train_config(params).seed)
    samples = [run_dir / p for p in rendered.get("single", [])]
    page = _build_gallery(run_dir) if samples else None
    history = metrics["history"]
    best = min(history, key=lambda h: h["valid_monitor"]) if history else {}
    report = {
        "params": params,
        "config": json.loads((run_dir / "config.json").read_text())["train"],
        "metrics": {**best, **{k: v for k, v in test.items() if k != "test_eval"}},
        "run_dir": str(run_dir),
        "samples": [str(p) for p in samples],
    }
    (out_dir / "best.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    m = report["metrics"]
    print(f"best epoch {m.get('epoch')}: valid_monitor {m.get('valid_monitor', math.nan):.4f}" + (f", test NLL {m['test_nll']:.3f} nats/frame (RAISE {m.get('test_nll_raise', math.nan):.3f}), test ACC {m['test_acc']:.3f} (best guess {m.get('test_acc_decoded', math.nan):.3f})" if "test_nll" in m else ""))  # fmt: skip
    print(f"best.json: {out_dir / 'best.json'}")
    if page is not None:
        print(f"samples:   {samples[0].parent}/ (MIDI, WAV, piano rolls)\nview them: python -m rbmsearch.samples {run_dir}")
    return report


# ---------------------------------------------------------------------------- benchmark


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m rbmsearch.bench tune`."""
    parser.add_argument("--source", required=True, help="a dataset: .parquet, .pickle, MIDI folder, or bach-chorales")
    parser.add_argument("--trials", type=int, default=4, help="trials per search")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial")
    parser.add_argument("--concurrent", type=int, default=2, help="trials at once in the parallel search")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a TrainConfig field of the benchmarked trial")  # fmt: skip


def _benchmark_space(args: argparse.Namespace, concurrent: int, cpus: float) -> SearchSpace:
    """Identical trials except the seed (the searched parameter), so both searches do the same work."""
    base = TrainConfig(n_hidden=100, n_recurrent=64, cd_k=5, pretrain_epochs=1, eval_ais_runs=2, eval_ais_betas=10, eval_acc_samples=1)
    config = base.with_overrides(args.set)
    fixed = {k: v for k, v in asdict(config).items() if k not in ("epochs", "seed")}
    raw = {
        "search": {"num_samples": args.trials, "max_epochs": args.epochs, "grace_period": args.epochs, "max_concurrent": concurrent,
                   "cpus_per_trial": cpus, "max_failures": 0, "keep_checkpoints": 1, "samples": 0, "reuse_actors": False},
        "fixed": fixed,
        "params": {"seed": {"type": "int", "low": 0, "high": 1_000_000}},
    }  # fmt: skip
    return SearchSpace.from_dict(raw, "the tune benchmark", "bench")


def benchmark(args: argparse.Namespace) -> dict:
    """Ray/Tune overhead beyond training, and trials per hour with `--concurrent` trials vs one at a time.

    Overhead = wall time of the sequential search minus the trials' own time in `train`
    (reports and checkpoint uploads excluded): process start-up, imports, scheduling,
    checkpointing. The sequential search gives each trial all the machine's cores.
    """
    import ray

    cpus = os.cpu_count() or 1
    start = time.perf_counter()
    started = _init_ray(None)
    init_s = time.perf_counter() - start
    figures: dict[str, Any] = {"source": args.source, "trials": args.trials, "epochs": args.epochs, "ray_init_s": round(init_s, 2)}
    try:
        with tempfile.TemporaryDirectory(prefix="rbmsearch-bench-") as storage:
            for label, concurrent, per_trial in (("sequential", 1, float(cpus)), ("concurrent", args.concurrent, max(1.0, cpus / args.concurrent))):
                space = _benchmark_space(args, concurrent, per_trial)
                start = time.perf_counter()
                _, results = run_search(space, args.source, storage, name=label, progress=False, finish_search=False)
                wall = time.perf_counter() - start
                train_s = sum(float(r.metrics.get("train_s", 0.0)) for r in results)
                figures[label] = {
                    "max_concurrent": concurrent,
                    "cpus_per_trial": per_trial,
                    "wall_s": round(wall, 2),
                    "train_s": round(train_s, 2),
                    "overhead_s": round(wall - train_s / concurrent, 2),
                    "trials_per_hour": round(args.trials / wall * 3600, 1),
                    "busy_fraction": round(train_s / (wall * concurrent), 3),  # of the trial slots
                    "errors": results.num_errors,
                }
        seq, par = figures["sequential"], figures["concurrent"]
        figures["overhead_fraction"] = round(seq["overhead_s"] / seq["wall_s"], 3)
        figures["overhead_s_per_trial"] = round(seq["overhead_s"] / args.trials, 2)
        figures["speedup"] = round(par["trials_per_hour"] / seq["trials_per_hour"], 2)
    finally:
        if started:
            ray.shutdown()
    return figures


# ---------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rbmsearch.tune", description="Search RNN-RBM hyperparameters with Ray Tune and Optuna.")
    parser.add_argument("--data", help="a Parquet file or URI, a MIDI folder, a .pickle, or bach-chorales (default: the built-in Bach chorales)")
    parser.add_argument("--space", help=f"a search-space file (default: {DEFAULT_SPACE})")
    parser.add_argument("--num-samples", type=int, help="trials in all (overrides search.num_samples)")
    parser.add_argument("--max-epochs", type=int, help="epochs per trial (overrides search.max_epochs)")
    parser.add_argument("--max-concurrent", type=int, help="trials at once (overrides search.max_concurrent; e.g. 2 per GPU on a cluster)")
    parser.add_argument("--time-budget", type=float, metavar="MINUTES", help="stop starting and running trials after this long (overrides search.time_budget_s)")
    parser.add_argument("--cpus-per-trial", type=float, help="CPUs per trial, also TF's threads (overrides search.cpus_per_trial)")
    parser.add_argument("--gpus-per-trial", type=float, help="GPUs per trial, fractions allowed (overrides search.gpus_per_trial)")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="where experiments go: a local path or a URI (default: ./runs)")
    parser.add_argument("--name", help="the experiment's name (default: SPACE-DATE-TIME; with --resume: the latest)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted experiment, with its own settings")
    parser.add_argument("--address", help="join a running Ray cluster (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--single-trial", action="store_true", help="run one configuration in-process without Ray, for debugging")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # this process's TF: no start-up banner

    minutes = args.time_budget
    if minutes is not None and not 0 < minutes < math.inf:
        parser.error(f"--time-budget is a positive number of minutes, but got {minutes:g}")
    by_flag = {  # flag: (search setting, value or None)
        "--num-samples": ("num_samples", args.num_samples),
        "--max-epochs": ("max_epochs", args.max_epochs),
        "--max-concurrent": ("max_concurrent", args.max_concurrent),
        "--time-budget": ("time_budget_s", None if minutes is None else minutes * 60),
        "--cpus-per-trial": ("cpus_per_trial", args.cpus_per_trial),
        "--gpus-per-trial": ("gpus_per_trial", args.gpus_per_trial),
    }
    overrides = {key: value for key, value in by_flag.values() if value is not None}
    try:
        if args.resume:
            given = [flag for flag, (_, value) in by_flag.items() if value is not None] + [f for f, v in (("--space", args.space), ("--data", args.data), ("--single-trial", args.single_trial)) if v]  # fmt: skip
            if given:
                raise SearchError(f"--resume continues the experiment as it was started (its search.json); drop {', '.join(given)}.")
            run_search(None, None, args.storage, args.name, resume=True, address=args.address)
            return
        space = load_space(args.space or DEFAULT_SPACE)
        if overrides:
            try:
                space = space.with_settings(**overrides)
            except SearchSpaceError as e:
                raise SearchError(f"a command-line override is invalid: {e.reason} ({e.key})") from e
        if args.single_trial:
            storage = _storage_root(args.storage)
            if _is_uri(storage):
                raise SearchError(f"--single-trial writes to a local directory, but --storage is {storage}.")
            name = args.name or f"single-{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            single_trial(space, args.data, Path(storage) / name, cpus=args.cpus_per_trial)
            return
        run_search(space, args.data, args.storage, args.name, address=args.address)
    except SearchError as e:
        raise SystemExit(f"error: {e}") from e
    except (SearchSpaceError, DatasetError, ConfigError, DivergenceError) as e:
        raise SystemExit(f"error: {e}") from e


if __name__ == "__main__":
    main()
