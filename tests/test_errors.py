"""rbmsearch.errors: one family, so each CLI catches one type; errors survive Ray's pickling."""

from __future__ import annotations

import inspect
import pickle

import pytest

from rbmsearch import errors
from rbmsearch.config import TrainConfig


def test_every_domain_error_derives_from_one_base():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, Exception) and c.__module__ == errors.__name__]
    public = sorted(c.__name__ for c in classes if not c.__name__.startswith("_"))
    assert public == sorted(errors.__all__)
    assert all(issubclass(c, errors.RbmsearchError) for c in classes)


@pytest.mark.parametrize(
    "error, fields",
    [
        (errors.DatasetError("data.parquet", "has no rows; rebuild it"), {"path": "data.parquet", "reason": "has no rows; rebuild it"}),
        (errors.RunError("run/params.npz", "is truncated"), {"path": "run/params.npz", "reason": "is truncated"}),
        (errors.MIDIConversionError("a.mid", "not MIDI"), {"path": "a.mid", "reason": "not MIDI"}),
        (errors.SearchSpaceError("s.yaml", "params.cd_k", "bad"), {"path": "s.yaml", "key": "params.cd_k", "reason": "bad"}),
        (errors.DivergenceError(3, "the validation monitor", TrainConfig()), {"epoch": 3, "what": "the validation monitor", "config": TrainConfig()}),
    ],
)
def test_errors_pickle_with_their_fields_and_message(error, fields):
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and str(back) == str(error)
    assert {k: getattr(back, k) for k in fields} == fields


def test_messages_name_the_place_first():
    assert str(errors.RunError("run/config.json", "missing; train it")) == "run/config.json: missing; train it"
    assert str(errors.SearchSpaceError("s.yaml", "search.top", "a positive int must be specified")) == "s.yaml: search.top: a positive int must be specified"
    message = str(errors.DivergenceError(7, "the CD cost of minibatch 2", TrainConfig(cd_k=5)))
    assert message.startswith("training diverged at epoch 7: the CD cost of minibatch 2 is not finite. Configuration: {")
    assert '"cd_k": 5' in message and message.endswith("Lower learning_rate, set clip_norm, or reduce cd_k.")
