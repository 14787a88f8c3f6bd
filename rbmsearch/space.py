"""The search-space file format: what a search fixes, what it searches, and how.

    search:  SearchSettings (trials, epochs, ASHA, concurrency, resources, samples)
    fixed:   TrainConfig field -> value
    params:  TrainConfig field -> {type: int|float, low, high, log, step, default} or {type: categorical, choices}
    enqueue: a list of {param: value} trials that run first, in order (unlisted params at their default)

`max_epochs: auto` and `grace_period: auto` are sized from the data when a search starts
(`SearchSpace.for_data`): a larger training split gets fewer epochs, but more training frames
per trial (AUTO_REFERENCE).

A space is YAML (spec in search_spaces/README.md); `default`, `paper` and `smoke` ship inside
the package. Every key, type and range is checked, and every range end and choice must be
a valid TrainConfig, so a bad space fails before any trial with SearchSpaceError naming the
file and the key. No Ray or Optuna here.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from rbmsearch.config import TrainConfig
from rbmsearch.errors import ConfigError, SearchSpaceError
from rbmsearch.workers import Resources

__all__ = ["AUTO", "AUTO_REFERENCE", "OBJECTIVES", "Param", "SearchSettings", "SearchSpace", "SearchSpaceError", "load_space", "shipped_spaces", "space_path"]

DEFAULT_SPACE = "default"
AUTO = "auto"
# `max_epochs: auto`: (training frames, epochs) at the reference, JSB's split and the length at
# which the default configuration reached its best test NLL (docs/results.md, 1.3). Epochs fall
# with the square root of the split's size, so a split 13x larger (Nottingham) gets 56 epochs,
# 3.6x the frames per trial: a model of more data needs more updates (docs/results.md, 6.6).
AUTO_REFERENCE = (13_807, 200)
AUTO_EPOCHS = (10, 400)
# `grace_period: auto`: ASHA's first rung at max_epochs / reduction_factor**AUTO_RUNGS epochs,
# so that AUTO_RUNGS rungs fit below max_epochs.
AUTO_RUNGS = 3
# Metrics a space may optimise, with the direction in which they improve. The CD cost is
# not among them: it is not a likelihood, and it falls as the Gibbs chain mixes worse.
OBJECTIVES = {"valid_monitor": "min", "valid_acc": "max"}


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
    max_epochs: int | str = 20  # TrainConfig.epochs of every trial, and ASHA's max_t; "auto": from the data
    grace_period: int | str = 2  # ASHA: epochs every trial gets before it can be stopped; "auto": from max_epochs
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

    def rungs(self) -> tuple[int, ...]:
        """The epochs at which ASHA judges a trial, by Ray's own rule (grace_period times powers of
        reduction_factor, up to max_epochs), rounded up to whole epochs; () while either is `auto`."""
        if AUTO in (self.max_epochs, self.grace_period):
            return ()
        import numpy as np

        count = int(np.log(self.max_epochs / self.grace_period) / np.log(self.reduction_factor) + 1)  # as ray.tune's _Bracket
        return tuple(sorted({math.ceil(self.grace_period * self.reduction_factor**k) for k in range(count)}))

    @property
    def trial_resources(self) -> Resources:
        """What each trial, and each shard of the final test score, asks Ray for."""
        return Resources(self.cpus_per_trial, self.gpus_per_trial, dict(self.resources))
    top: int = 10  # rows of the final table
    samples: int = 4  # samples (MIDI, WAV, PNG) of each rendered trial's best checkpoint
    render_top: int = 3  # trials whose samples are rendered for the gallery, best first
    sample_quarters: int = 32  # length of each sample, in quarter notes
    references: int = 3  # training pieces rendered beside the best trial's samples, to compare
    continuations: int = 2  # test pieces whose first quarter the best trial's model continues
    soundfont: str | None = None  # a .sf2 file for FluidSynth; null: an installed General MIDI one
    program: int | None = None  # General MIDI program; null: organ (19) for chorales, else piano (0)


_SETTING_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "metric": (lambda v: v in OBJECTIVES, f"one of {sorted(OBJECTIVES)}"),
    "mode": (lambda v: v in ("min", "max"), "'min' or 'max'"),
    "num_samples": (lambda v: _is_int(v) and v >= 1, "a positive int"),
    "max_epochs": (lambda v: (_is_int(v) and v >= 1) or v == AUTO, "a positive int or 'auto'"),
    "grace_period": (lambda v: (_is_int(v) and v >= 1) or v == AUTO, "a positive int or 'auto'"),
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
    "references": (lambda v: _is_int(v) and v >= 0, "a non-negative int"),
    "continuations": (lambda v: _is_int(v) and v >= 0, "a non-negative int"),
    "soundfont": (lambda v: v is None or (isinstance(v, str) and v.strip() != ""), "the path of a .sf2 file, or null"),
    "program": (lambda v: v is None or (_is_int(v) and 0 <= v <= 127), "a General MIDI program in 0..127, or null"),
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
    if AUTO not in (settings.grace_period, settings.max_epochs) and settings.grace_period > settings.max_epochs:
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


def _parse_enqueue(raw, params: tuple[Param, ...], where: str) -> tuple[dict, ...]:
    """The `enqueue` list: each entry a mapping of searched params to values inside their ranges."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SearchSpaceError(where, "enqueue", f"a list of {{param: value}} mappings must be specified, but got {_describe(raw)}.")
    by_name = {p.name: p for p in params}
    out = []
    for i, entry in enumerate(raw):
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            raise SearchSpaceError(where, f"enqueue[{i}]", f"a mapping of searched params to values must be specified, but got {_describe(entry)}.")
        for key, value in entry.items():
            param = by_name.get(key)
            if param is None:
                raise SearchSpaceError(where, f"enqueue[{i}].{key}", f"not a searched param; the searched params are {sorted(by_name)} (fixed values go in `fixed`).")
            if param.type == "categorical":
                if value not in param.choices:
                    raise SearchSpaceError(where, f"enqueue[{i}].{key}", f"one of the choices {list(param.choices)} must be specified, but got {value!r}.")
            else:
                kind = int if param.type == "int" else float
                value = _check_value(value, kind, where, f"enqueue[{i}].{key}")
                if not param.low <= value <= param.high:
                    raise SearchSpaceError(where, f"enqueue[{i}].{key}", f"a value in [{param.low}, {param.high}] must be specified, but got {value}.")
        out.append(dict(entry))
    return tuple(out)


@dataclass(frozen=True)
class SearchSpace:
    """A parsed search-space file: how to search, what is fixed, and what is searched."""

    name: str  # the file's stem: names experiments
    settings: SearchSettings
    fixed: dict  # TrainConfig field -> value
    params: tuple[Param, ...]
    description: str = ""
    where: str = ""  # the file it came from, for messages
    enqueue: tuple[dict, ...] = ()  # trials that run first, each a partial {param: value}

    @classmethod
    def from_dict(cls, raw, where: str, name: str = "space") -> SearchSpace:
        """Validate a space given as a dict (a parsed YAML file, or a search.json entry)."""
        if not isinstance(raw, dict):
            raise SearchSpaceError(where, "(top level)", f"a mapping with keys search, fixed, params must be specified, but got {_describe(raw)}.")
        unknown = sorted(set(raw) - {"description", "search", "fixed", "params", "enqueue"})
        if unknown:
            raise SearchSpaceError(where, unknown[0], "unknown top-level key; known keys are ['description', 'enqueue', 'fixed', 'params', 'search'].")
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
        enqueue = _parse_enqueue(raw.get("enqueue"), tuple(params), where)
        space = cls(name, settings, fixed, tuple(params), description, where, enqueue)
        space._check_train_configs()
        return space

    def _check_train_configs(self) -> None:
        """Every range end and every choice, with the rest at their centers, must be a valid TrainConfig."""
        center = self.center()
        try:  # the fixed values first, so that a bad one is blamed on itself, not on a param
            self.train_config(center)
        except ConfigError as e:
            key = f"fixed.{e.key}" if e.key in self.fixed else f"params.{e.key}" if e.key in center else "fixed"
            raise SearchSpaceError(self.where, key, f"refused by TrainConfig: {e}") from e
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
        for i, entry in enumerate(self.enqueue):
            try:
                self.train_config({**center, **entry})
            except ConfigError as e:
                raise SearchSpaceError(self.where, f"enqueue[{i}]", f"refused by TrainConfig: {e}") from e

    def center(self) -> dict:
        """The searched values --single-trial uses: each param's default or midpoint."""
        return {p.name: p.center() for p in self.params}

    def first_trials(self) -> list[dict]:
        """The trials that run before the sampler's: the center (first_trial_at_defaults), then `enqueue`, without repeats."""
        center = self.center()
        out = [center] if self.settings.first_trial_at_defaults else []
        for entry in self.enqueue:
            trial = {**center, **entry}
            if trial not in out:
                out.append(trial)
        return out

    def train_config(self, params: dict) -> TrainConfig:
        """The configuration of one trial: fixed values, then `params`, with epochs = max_epochs
        (1 while max_epochs is still `auto`, for checking)."""
        epochs = self.settings.max_epochs if self.settings.max_epochs != AUTO else 1
        return TrainConfig.from_dict({**self.fixed, **params, "epochs": epochs}, f"{self.where} (a trial's parameters)")

    def for_data(self, train_frames: int) -> SearchSpace:
        """The space with `auto` settings sized for a training split of `train_frames` frames."""
        settings = self.settings
        epochs = settings.max_epochs
        if epochs == AUTO:
            frames, at = AUTO_REFERENCE
            epochs = int(min(max(round(at * math.sqrt(frames / max(train_frames, 1))), AUTO_EPOCHS[0]), AUTO_EPOCHS[1]))
        grace = settings.grace_period
        if grace == AUTO:
            grace = max(1, round(epochs / settings.reduction_factor**AUTO_RUNGS))
        if (epochs, grace) == (settings.max_epochs, settings.grace_period):
            return self
        return self.with_settings(max_epochs=epochs, grace_period=min(grace, epochs))

    def with_settings(self, **changes) -> SearchSpace:
        """The same space with some search settings replaced (CLI flags, tests, benchmarks)."""
        raw = self.to_dict()
        raw["search"].update(changes)
        grace = raw["search"]["grace_period"]
        if "max_epochs" in changes and "grace_period" not in changes and AUTO not in (grace, changes["max_epochs"]):
            raw["search"]["grace_period"] = min(grace, changes["max_epochs"])  # a shorter run keeps a valid ASHA
        return SearchSpace.from_dict(raw, self.where, self.name)

    def to_dict(self) -> dict:
        return {
            "description": self.description,
            "search": asdict(self.settings),
            "fixed": dict(self.fixed),
            "params": {p.name: p.to_dict() for p in self.params},
            "enqueue": [dict(e) for e in self.enqueue],
        }


def shipped_spaces() -> dict[str, Path]:
    """The search spaces that ship with rbmsearch: name -> file (default, paper, smoke, ...)."""
    folder = resources.files("rbmsearch.search_spaces")
    return {entry.name.removesuffix(".yaml"): Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".yaml")}


def space_path(name_or_path: str | os.PathLike) -> Path:
    """A shipped space's name (`default`) or a file's path -> the file. Unknown names raise SearchSpaceError."""
    text = str(name_or_path)
    shipped = shipped_spaces()
    if text in shipped:
        return shipped[text]
    path = Path(text)
    if path.suffix not in (".yaml", ".yml") and not path.exists():
        raise SearchSpaceError(text, "(file)", f"neither a file nor a shipped space; the shipped spaces are {sorted(shipped)}, or pass a .yaml file.")
    return path


def load_space(name_or_path: str | os.PathLike) -> SearchSpace:
    """Read and validate a search space: a shipped one by name, or a YAML file.

    Raises SearchSpaceError naming the file and the key.
    """
    path = space_path(name_or_path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SearchSpaceError(path, "(file)", f"cannot be read ({e.strerror or e}); give an existing .yaml file, or one of the shipped spaces {sorted(shipped_spaces())}.") from e
    try:
        raw = yaml.load(text, Loader=_SpaceLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SearchSpaceError(path, "(file)", f"is not valid YAML ({problem}{where}); fix the file (format: search_spaces/README.md).") from e
    return SearchSpace.from_dict(raw, str(path), path.stem)
