"""What a search prints while it runs: one line per finished trial and a periodic status line.

`CompactProgress` is a Ray Tune callback for the driver; with it, Tune's own tables are off
(`python -m rbmsearch.tune --verbose` brings them back). `StateCopyRace` shortens Tune's records of
one harmless race to a line. Importing this module loads Ray.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time

from ray.tune import Callback

__all__ = ["STATE_LOGGERS", "CompactProgress", "StateCopyRace", "budget_bar", "state_copy_races_in_a_line"]

# The Tune modules that report a failed copy of the search's state to storage: when waiting for the
# copy, and when starting the next one.
STATE_LOGGERS = ("ray.tune.execution.experiment_state", "ray.train._internal.syncer")
_HIDDEN_STAGED = re.compile(r"/driver_artifacts/(\.[^/'\"\s]+)")  # a hidden file in Tune's staging folder


def _short(params: dict, names: list[str]) -> str:
    """The searched values, rounded: n_hidden=216 learning_rate=0.0102 optimizer=adam."""
    parts = []
    for name in names:
        if name in params:
            value = params[name]
            parts.append(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}")
    return " ".join(parts)


def budget_bar(elapsed_s: float, budget_s: float, width: int = 20) -> str:
    """'[######--------------] 30% of 60 min, 42 min left': how far a time budget has gone."""
    done = min(1.0, max(0.0, elapsed_s / budget_s))
    filled = int(round(done * width))
    return f"[{'#' * filled}{'-' * (width - filled)}] {done:.0%} of {budget_s / 60:.0f} min, {max(0.0, budget_s - elapsed_s) / 60:.0f} min left"


class CompactProgress(Callback):
    """Prints through `emit` (default: print to stdout): a line per trial that ends, and every
    `every_s` seconds a status line (trials running, done, errored; the best so far; with a
    time budget, a bar of how much of it is used and how long is left)."""

    def __init__(self, metric: str, mode: str, max_epochs: int, param_names: list[str], every_s: float = 60.0, emit=None, budget_s: float | None = None):
        self.metric, self.mode, self.max_epochs, self.names = metric, mode, max_epochs, list(param_names)
        self.budget_s = budget_s
        self.every_s, self._emit = every_s, emit  # not print itself: the callback is pickled with the experiment
        self.start = self.last = time.monotonic()
        self.best: dict[str, tuple[float, int]] = {}  # trial id -> (best metric, its epoch)
        self.done = self.errored = 0

    def emit(self, line: str) -> None:
        if self._emit is None:
            print(line, flush=True)
        else:
            self._emit(line)

    def setup(self, **info):
        self.start = self.last = time.monotonic()  # also after --resume, in a new driver

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def _elapsed(self) -> str:
        seconds = int(time.monotonic() - self.start)
        return f"{seconds // 60:d}:{seconds % 60:02d}"

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if isinstance(value, int | float) and math.isfinite(value):
            old = self.best.get(trial.trial_id)
            if old is None or self._better(value, old[0]):
                self.best[trial.trial_id] = (float(value), int(result.get("epoch", 0)))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        epochs = int((trial.last_result or {}).get("epoch", 0))
        how = "finished" if epochs >= self.max_epochs else "stopped early"
        best = self.best.get(trial.trial_id)
        score = f"best {self.metric} {best[0]:.4f} at epoch {best[1]}" if best else f"no {self.metric}"
        self.emit(f"[{self._elapsed()}] trial {trial.trial_id} {how} after {epochs} epochs: {score}; {_short(trial.config, self.names)}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.errored += 1
        error = str(getattr(trial, "error_msg", "") or "").strip().splitlines()
        self.emit(f"[{self._elapsed()}] trial {trial.trial_id} failed: {error[-1][:160] if error else 'see its error.txt'}; {_short(trial.config, self.names)}")

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self.last < self.every_s:
            return
        self.last = time.monotonic()
        running = sum(t.status == "RUNNING" for t in trials)
        line = f"[{self._elapsed()}] {running} running, {self.done} ended, {self.errored} failed"
        if self.best:
            trial_id, (value, epoch) = (min if self.mode == "min" else max)(self.best.items(), key=lambda item: item[1][0])
            line += f"; best {self.metric} so far {value:.4f} (trial {trial_id}, epoch {epoch})"
        if self.budget_s:
            line += f"; {budget_bar(time.monotonic() - self.start, self.budget_s)}"
        self.emit(line)


class StateCopyRace(logging.Filter):
    """For Tune's `STATE_LOGGERS`: a copy of the search's state to storage that missed a hidden file
    of Tune's next save becomes a one-line warning instead of a record with its traceback.

    Tune copies its staging folder to storage in the background, and may already be writing its
    next state there (a hidden file, then a rename), so a copy can miss a file that has just been
    renamed. Tune reports that when it next waits for a copy (an error and its traceback) or starts
    one (a warning with the traceback in its text). The next copy, seconds later, and the last one,
    which Tune waits for when the search ends, carry the state. Any other failure keeps Tune's
    record as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        if message.startswith("Saving experiment state") and isinstance(error, FileNotFoundError):
            hidden = _HIDDEN_STAGED.search(str(error))
        elif message.startswith("Last sync command failed") and "FileNotFoundError" in message:
            hidden = _HIDDEN_STAGED.search(message)
        else:
            hidden = None
        if hidden:
            record.msg, record.args = f"one copy of the search's state to storage missed {hidden[1]}, renamed while it was copied; the next copy carries the state", ()
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


@contextlib.contextmanager
def state_copy_races_in_a_line():
    """While it lasts, `StateCopyRace` filters Tune's `STATE_LOGGERS`."""
    race, loggers = StateCopyRace(), [logging.getLogger(name) for name in STATE_LOGGERS]
    for logger in loggers:
        logger.addFilter(race)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(race)
