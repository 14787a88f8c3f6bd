"""The Optuna study of a search, written to SQLite as the search runs (for `optuna-dashboard`).

`LiveOptunaSearch` is Ray Tune's OptunaSearch with an RDB storage and three changes to what
it tells the study: a trial's value is its best epoch's metric (the epoch `train` keeps, not
the last one); a trial stopped before max_epochs (by ASHA, or by the time budget) is PRUNED;
and every trial carries its Ray trial id and epochs as user attributes. Intermediate values
are the metric of every reported epoch, keyed by epoch. Start and end times are Optuna's
own: when the trial was proposed, and when it ended. Importing this module loads Ray.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import optuna
from ray.tune.search.optuna import OptunaSearch

from rbmsearch.files import create_whole

__all__ = ["LiveOptunaSearch", "sqlite_storage"]

log = logging.getLogger(__name__)


def sqlite_storage(path: str) -> optuna.storages.RDBStorage:
    """An RDB storage in the SQLite file `path`; the timeout lets a dashboard read while trials write.

    A new file gets its schema in a temporary file first and appears whole: Optuna stamps its
    schema version in several statements, and another process that opened the file between
    them (optuna-dashboard, or a reader polling for it) would stamp it too and fail.
    """
    create_whole(path, _empty_study_file)
    return _open_sqlite(path)


def _open_sqlite(path) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 30}})


def _empty_study_file(tmp: Path) -> None:
    """Optuna's tables, and nothing else, in `tmp`."""
    _open_sqlite(tmp).engine.dispose()


class LiveOptunaSearch(OptunaSearch):
    """OptunaSearch that keeps an honest study as it goes (see the module docstring).

    max_epochs: a trial that ends before it is PRUNED. Other arguments: OptunaSearch's.
    """

    def __init__(self, *args, max_epochs: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._max_epochs = max_epochs
        self._best: dict[str, float] = {}  # Ray trial id -> its best metric so far
        self._epochs: dict[str, int] = {}  # Ray trial id -> its last reported epoch

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        value, epoch = result.get(self.metric), result.get("epoch")
        if not isinstance(value, int | float) or not math.isfinite(value) or epoch is None:
            return
        best = self._best.get(trial_id)
        if best is None or (value < best if self.mode == "min" else value > best):
            self._best[trial_id] = float(value)
        self._epochs[trial_id] = int(epoch)
        self._ot_trials[trial_id].report(float(value), int(epoch))  # a repeated epoch (a restored trial) is ignored

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if result:  # Tune hands a trial's last result to on_trial_complete, not to on_trial_result
            self.on_trial_result(trial_id, result)
        trial = self._ot_trials[trial_id]
        epochs, best = self._epochs.get(trial_id, 0), self._best.get(trial_id)
        trial.set_user_attr("ray_trial_id", trial_id)
        trial.set_user_attr("epochs", epochs)
        states = optuna.trial.TrialState
        if error or best is None:
            state, value = states.FAIL, None
        elif epochs < self._max_epochs:
            state, value = states.PRUNED, None
        else:
            state, value = states.COMPLETE, best
        try:
            self._ot_study.tell(trial, value, state=state)
        except (ValueError, RuntimeError) as e:  # e.g. the trial was already told
            log.warning("Optuna study: trial %s not recorded (%s)", trial_id, e)
        self._completed_trials.add(trial_id)
