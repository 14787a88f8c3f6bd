"""rbmsearch.config: TrainConfig refuses unknown keys and bad values, and takes `key=value` overrides."""

from __future__ import annotations

import pytest

from rbmsearch.config import TrainConfig
from rbmsearch.errors import ConfigError, RbmsearchError


def test_config_refuses_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match=r"Unknown key\(s\) \['n_hiden'\] in my.json"):
        TrainConfig.from_dict({"n_hiden": 10}, "my.json")
    with pytest.raises(ConfigError, match="A positive int must be specified for cd_k, but got 0"):
        TrainConfig(cd_k=0)
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig(optimizer="adagrad")
    with pytest.raises(ConfigError, match="0 \\(off\\) or at least 2 must be specified for eval_control_betas, but got 1"):
        TrainConfig(eval_control_betas=1)  # a control of one temperature is no annealing
    with pytest.raises(ConfigError, match="non-negative int must be specified for eval_control_betas"):
        TrainConfig(eval_control_betas=-300)
    assert TrainConfig(eval_control_betas=0).eval_control_betas == 0  # off
    assert TrainConfig().with_overrides(["cd_k=3", "learning_rate=1", "rnn=gru"]) == TrainConfig(cd_k=3, learning_rate=1.0, rnn="gru")
    with pytest.raises(ConfigError, match="Unknown key 'lr'"):
        TrainConfig().with_overrides(["lr=0.1"])
    assert issubclass(ConfigError, RbmsearchError)  # every CLI reports it as `error: ...`
