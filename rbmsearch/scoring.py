"""Score frames in shards: the unit of evaluation work, where it runs, and the files it leaves.

A shard is a run of consecutive frames (their RBMs given the true history, from
`model.conditional_rbms`). `score_shard` gives each frame's AIS and RAISE log-likelihoods,
the counts of its sampled predictions and its note marginals. Those per-frame figures
combine over shards into the split's scores (`rbmsearch.evaluate`). `run_shards` runs the
missing shards in-process or as Ray tasks that ask for a trial's resources, and stores each
shard under a `ShardStore` directory as soon as it is done, so that a rerun resumes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from rbmsearch.config import AIS_BETAS, AIS_RUNS, CONTROL_BETAS
from rbmsearch.files import atomic_write, make_dir, write_json
from rbmsearch.workers import Resources, configure_process, ray_running

__all__ = ["ACC_STARTS", "BASES", "CONTROL_SHARD_FRAMES", "SHARD_FRAMES", "ControlSettings", "EvalSettings", "chain_marginals", "fitted_base", "Shard", "ShardStore",
           "run_shards", "sample_predictions", "score_control", "score_shard", "shard_seed"]

log = logging.getLogger(__name__)

SHARD_FRAMES = 500  # frames per shard: about 2 minutes of AIS on 2 cores at the paper's settings
SHARD_ATTEMPTS = 3  # a shard whose worker or node is lost is sent again, at most this often in all
MIXING_CHECK_SAMPLES = 2  # chains per checked frame started at the true frame, for acc_mixing_gap
MIXING_CHECK_EVERY = 10  # frames of a shard between two the mixing check looks at
RAISE_AHEAD = 4  # RAISE may run up to this many times AIS's temperatures before AIS's double
PILOT_FRAMES = 50  # frames of a shard whose annealing finds the temperatures the whole shard starts at
MIN_LONG_AIS_RUNS = 10  # the fewest AIS runs of an annealing past ais_betas
TAIL_SHARE = 0.05  # the share of a shard's frames whose RAISE goes on past the cap (`_anneal_the_tail`)
TAIL_STEP = 4  # the tail's temperatures grow by this factor a pass
# The arrays of a finished shard (per frame; betas, tail and sweeps per shard), with their dtypes.
SHARD_ARRAYS = {"ll_ais": np.float64, "ll_raise": np.float64, "marginals": np.float32, "chain_marginals": np.float32, "acc_counts": np.float32, "mixing_counts": np.float32, "betas": np.int64, "tail": np.int64, "sweeps": np.float64}
CONTROL_ARRAYS = {"ll_control": np.float64, "sweeps": np.float64}  # a finished control shard's arrays (`score_control`)
CONTROL_SHARD_FRAMES = 5000  # frames per control shard: about two minutes on one core at 1000 temperatures
CONTROL_STREAM = 1  # the control's random streams are derived_seed(seed, shard, CONTROL_STREAM), apart from the shards'


@dataclass(frozen=True)
class EvalSettings:
    ais_runs: int = AIS_RUNS  # AIS runs per frame, as in the paper
    # Temperatures: each shard starts at start_betas and doubles them until AIS's and RAISE's
    # NLL agree within gap_tolerance, or ais_betas is reached. gap_tolerance 0: always ais_betas.
    ais_betas: int = AIS_BETAS
    # Prediction chains per frame: `acc`, and the best guess's marginals (`chain_marginals`), which
    # 10 chains left 0.4 to 0.6 points of accuracy apart between seeds (docs/results.md, 6.12).
    acc_samples: int = 30
    # Gibbs steps per predicted frame: generation's 25 do not mix, 1000 do (docs/evaluation.md,
    # "Sampled"); `acc_mixing_gap` checks it on every evaluation.
    acc_gibbs_k: int = 1000
    # Where the predictions' chains start: "previous", the frame before (silence at a piece's
    # start), or "silence". Both use only the history; a sharp model's chains from silence stay
    # stuck far from its likely frames (docs/results.md, 6.9). The samples also fit the base.
    acc_start: str = "previous"
    seed: int = 0
    # RAISE runs per frame for `nll_raise`, a tenth of AIS's cost: fewer runs only make it
    # more cautious (docs/results.md, 3.2).
    raise_runs: int = 10
    start_betas: int = 100
    gap_tolerance: float = 0.05  # nats per frame
    # Past ais_betas the doubling may go on to max_betas, with fewer AIS runs (`annealing_runs`),
    # for sharp models such as Nottingham's; 0: ais_betas is the cap.
    max_betas: int = 0
    # Past the cap, RAISE on the 5% of frames that disagree most may go on to tail_betas
    # (`_anneal_the_tail`): on a sharp model they hold the gap (docs/results.md, 6.15); 0: off.
    tail_betas: int = 0
    # The annealing's base: "fitted", the note marginals of the predictions' samples (a base
    # close to each frame's RBM, so far fewer temperatures reach agreement), or "own-bv", the
    # frame's visible biases alone (the earlier base; docs/results.md, 3.8).
    base: str = "fitted"
    arrays: ClassVar[dict] = SHARD_ARRAYS  # what a finished shard holds

    def __post_init__(self):
        if self.base not in BASES:
            raise ValueError(f"Expected base to be one of {sorted(BASES)}, but got {self.base!r}.")
        if self.acc_start not in ACC_STARTS:
            raise ValueError(f"Expected acc_start to be one of {list(ACC_STARTS)}, but got {self.acc_start!r}.")
        if self.gap_tolerance < 0 or self.start_betas < 2:
            raise ValueError(f"Expected gap_tolerance >= 0 and start_betas >= 2, but got {self.gap_tolerance} and {self.start_betas}.")
        if self.max_betas and self.max_betas < self.ais_betas:
            raise ValueError(f"Expected max_betas to be 0 or at least ais_betas ({self.ais_betas}), but got {self.max_betas}.")
        if self.tail_betas and self.gap_tolerance == 0:
            raise ValueError(f"Expected tail_betas 0 with gap_tolerance 0 (fixed temperatures, no agreement to reach), but got tail_betas {self.tail_betas}.")
        if self.tail_betas and self.tail_betas <= self.cap:
            raise ValueError(f"Expected tail_betas to be 0 or above the cap ({self.cap}), but got {self.tail_betas}.")

    @property
    def cap(self) -> int:
        """The most temperatures a shard's doubling reaches: ais_betas, or max_betas past it."""
        return max(self.ais_betas, self.max_betas)

    def shard_seed(self, index: int) -> int:
        return shard_seed(self.seed, index)

    def score(self, W, v, bv, bh, previous, seed: int) -> dict[str, np.ndarray]:
        return score_shard(W, v, bv, bh, self, seed, previous)


@dataclass(frozen=True)
class ControlSettings:
    """The cheap score of every frame of a split that a subsample's whole-split estimate regresses
    on (`evaluate.regression_estimate`): AIS, `runs` runs of `betas` temperatures from the frame's
    own visible biases. Its errors need not be small, only small beside the spread between
    frames, which it then takes out of the estimate's interval (docs/evaluation.md, "The whole
    split from a subsample")."""

    betas: int = CONTROL_BETAS
    runs: int = 10
    seed: int = 0
    arrays: ClassVar[dict] = CONTROL_ARRAYS

    def __post_init__(self):
        if self.betas < 2 or self.runs < 1:
            raise ValueError(f"Expected the control's temperatures >= 2 and runs >= 1, but got {self.betas} and {self.runs}.")

    def shard_seed(self, index: int) -> int:
        return derived_seed(self.seed, index, CONTROL_STREAM)

    def score(self, W, v, bv, bh, previous, seed: int) -> dict[str, np.ndarray]:
        return score_control(W, v, bv, bh, self, seed)


BASES = ("fitted", "own-bv")
ACC_STARTS = ("previous", "silence")


@dataclass(frozen=True)
class Shard:
    """Frames [start, stop) of the frames being scored, and the random key they use."""

    index: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}.npz"


def derived_seed(seed: int, *keys: int) -> int:
    """A seed of its own for each `keys` under `seed`: independent streams, the same wherever they run."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0] >> 1)


def shard_seed(seed: int, index: int) -> int:
    """The seed of shard `index`."""
    return derived_seed(seed, index)


@functools.cache
def _gibbs_chain(n_v: int, n_h: int):
    """`rbm.long_gibbs_chain` compiled once per model size (a new function per call retraces)."""
    import tensorflow as tf

    from rbmsearch.rbm import long_gibbs_chain

    rows = tf.TensorSpec([None, None], tf.float32)
    signature = [rows, tf.TensorSpec([n_v, n_h], tf.float32), rows, rows, tf.TensorSpec([], tf.int64), tf.TensorSpec([2], tf.int64)]
    return tf.function(long_gibbs_chain, input_signature=signature)


def sample_predictions(W: np.ndarray, bv: np.ndarray, bh: np.ndarray, n_samples: int, k: int, seed: int, start: np.ndarray | None = None) -> np.ndarray:
    """Draw n_samples predictions per frame by k Gibbs steps. Returns (S, N, n_v) bool.

    W (n_v, n_h); bv (N, n_v), bh (N, n_h): each frame's RBM. start: (N, n_v) where the
    chains begin; silence when None, which is what a prediction may know. The S x N chains
    run as one batch.
    """
    import tensorflow as tf

    n, (n_v, n_h) = len(bv), W.shape
    tile = lambda a: tf.constant(np.tile(a, (n_samples, 1)), tf.float32)  # noqa: E731
    v0 = tf.zeros([n_samples * n, n_v], tf.float32) if start is None else tile(start)
    key = tf.constant([seed, 0], tf.int64)
    v = _gibbs_chain(n_v, n_h)(v0, tf.constant(W, tf.float32), tile(bv), tile(bh), tf.constant(k, tf.int64), key).numpy() > 0.5
    return v.reshape(n_samples, n, n_v)


def chain_marginals(W: np.ndarray, bv: np.ndarray, bh: np.ndarray, samples: np.ndarray, seed: int) -> np.ndarray:
    """Each frame's note marginals p(v_i = 1) (N, n_v) float64 under its RBM, from model samples
    (S, N, n_v): the mean of p(v | h) with h ~ p(h | sample), a Rao-Blackwellised average. As good
    as the samples' chains mix (`acc_mixing_gap`); unlike AIS's weighted states, they do not need
    the annealing to have converged (docs/results.md, 6.12)."""
    rng = np.random.default_rng([seed, 3])
    q = np.zeros(bv.shape, np.float64)
    for sample in samples:
        p_h = 1.0 / (1.0 + np.exp(-(bh + sample.astype(np.float32) @ W)))
        h = (rng.random(p_h.shape) < p_h).astype(np.float32)
        q += 1.0 / (1.0 + np.exp(-(bv + h @ W.T).astype(np.float64)))
    return q / len(samples)


def fitted_base(bv: np.ndarray, marginals: np.ndarray, n_samples: int) -> np.ndarray:
    """Visible biases (N, n_v) of a factorial base close to each frame's RBM: the log-odds of
    the `chain_marginals` of n_samples model samples, shrunk towards sigmoid(bv) by one
    pseudo-sample. Any base keeps AIS unbiased; a closer one needs fewer temperatures
    (docs/results.md, 3.8)."""
    own = 1.0 / (1.0 + np.exp(-bv.astype(np.float64)))  # the pseudo-sample: the frame's own biases
    q = np.clip((own + n_samples * marginals) / (n_samples + 1), 1e-4, 1 - 1e-4)
    return (np.log(q) - np.log1p(-q)).astype(np.float32)


def score_shard(W: np.ndarray, v: np.ndarray, bv: np.ndarray, bh: np.ndarray, settings: EvalSettings, seed: int,
                previous: np.ndarray | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """The per-frame figures of frames v (N, n_v) under their RBMs (W, bv (N, n_v), bh (N, n_h)).

    previous (N, n_v): the frame before each (silence at a piece's start), where the predictions'
    chains start with settings.acc_start "previous"; None is silence everywhere.
    ll_ais, ll_raise (N,): log p(v_t | history) from AIS's and RAISE's log Z; marginals
    (N, n_v): p(note on) from AIS's weighted final states, chain_marginals (N, n_v) from the
    predictions' samples (`chain_marginals`); acc_counts (S, N, 3) and
    mixing_counts (2, N, 3): TP, FP, FN of the predictions sampled by the chains of acc_start and of the
    chains started at the true frames (NaN for the frames the check skips); betas: AIS's and
    RAISE's temperatures when they agreed; tail: the temperatures and the number of the frames
    whose RAISE went on past them (`_anneal_the_tail`; 0, 0 for none); sweeps: the Gibbs sweeps
    per frame all this took.
    """
    from rbmsearch import accuracy, ais

    def counts(samples: np.ndarray) -> np.ndarray:
        return np.stack([accuracy.expected_counts(v, s) for s in samples]).astype(np.float32)

    start_at = previous if settings.acc_start == "previous" else None
    samples = sample_predictions(W, bv, bh, settings.acc_samples, settings.acc_gibbs_k, seed, start=start_at)
    checked = np.arange(0, len(v), MIXING_CHECK_EVERY)  # a diagnostic: every 10th frame is enough
    mixing = np.full((MIXING_CHECK_SAMPLES, len(v), 3), np.nan, np.float32)
    truth = sample_predictions(W, bv[checked], bh[checked], MIXING_CHECK_SAMPLES, settings.acc_gibbs_k, seed + 1, start=v[checked])
    mixing[:, checked] = np.stack([accuracy.expected_counts(v[checked], s) for s in truth])
    chain_q = chain_marginals(W, bv, bh, samples, seed)
    base = fitted_base(bv, chain_q, len(samples)) if settings.base == "fitted" else None
    marginals = np.zeros(v.shape, np.float32)

    def weigh(frames: slice, states: np.ndarray, log_weights: np.ndarray) -> None:
        marginals[frames] = ais.annealed_marginals(states, log_weights)

    def forward(betas: int, rows: np.ndarray) -> np.ndarray:
        runs = annealing_runs(settings, betas)
        on_states = weigh if len(rows) == len(v) else None  # the marginals come from the whole shard's pass
        log_z = ais.ais_run(W, bv[rows], bh[rows], n_runs=runs, n_betas=betas, base_bv=None if base is None else base[rows], seed=seed, on_states=on_states).log_z
        return ais.frame_log_likelihood(v[rows], W, bv[rows], bh[rows], log_z)

    def backward(betas: int, rows: np.ndarray, draw: int = 0) -> np.ndarray:
        """RAISE's figures; each (betas, draw) its own random stream, so that passes at other temperatures are independent."""
        runs = annealing_runs(settings, betas, reverse=True)
        key = derived_seed(seed, betas, draw)
        log_z = ais.raise_run(W, bv[rows], bh[rows], v[rows], n_runs=runs, n_betas=betas, base_bv=None if base is None else base[rows], seed=key).log_z
        return ais.frame_log_likelihood(v[rows], W, bv[rows], bh[rows], log_z)

    every = np.arange(len(v))
    start = (settings.ais_betas,) * 2 if settings.gap_tolerance == 0 else (min(settings.start_betas, settings.ais_betas),) * 2
    pilot_sweeps = 0.0
    if settings.gap_tolerance > 0 and len(v) >= 2 * PILOT_FRAMES:
        # A pilot on 50 evenly spread frames finds the temperatures the shard needs, so the
        # whole shard's doublings (each a fresh annealing) start there rather than at start_betas.
        pilot = np.linspace(0, len(v) - 1, PILOT_FRAMES).round().astype(int)
        start, _, _, pilot_sweeps, _ = _anneal_until_agreed(forward, backward, pilot, start, settings)
        pilot_sweeps *= len(pilot) / len(v)
    (betas_ais, betas_raise), ll_ais, ll_raise, annealed, earlier = _anneal_until_agreed(forward, backward, every, start, settings)
    ll_raise, tail, tail_sweeps = _anneal_the_tail(backward, ll_ais, ll_raise, earlier, betas_raise, settings)
    annealed += pilot_sweeps + tail_sweeps
    sampled = (settings.acc_samples + MIXING_CHECK_SAMPLES * len(checked) / len(v)) * settings.acc_gibbs_k
    return {
        "ll_ais": ll_ais,
        "ll_raise": ll_raise,
        "marginals": marginals,
        "chain_marginals": chain_q.astype(np.float32),
        "acc_counts": counts(samples),
        "mixing_counts": mixing,
        "betas": np.array([betas_ais, betas_raise]),
        "tail": np.array(tail),
        "sweeps": np.array(annealed + sampled),  # Gibbs sweeps per frame, every annealing tried included
    }


def score_control(W: np.ndarray, v: np.ndarray, bv: np.ndarray, bh: np.ndarray, control: ControlSettings, seed: int) -> dict[str, np.ndarray]:
    """The control's per-frame log-likelihoods ll_control (N,) of frames v (N, n_v) under their
    RBMs, by a short AIS; and sweeps, the Gibbs sweeps per frame."""
    from rbmsearch import ais

    log_z = ais.ais_run(W, bv, bh, n_runs=control.runs, n_betas=control.betas, seed=seed).log_z
    return {"ll_control": ais.frame_log_likelihood(v, W, bv, bh, log_z), "sweeps": np.array(float(control.runs * (control.betas - 1)))}


def annealing_runs(settings: EvalSettings, betas: int, reverse: bool = False) -> int:
    """Runs of an AIS (reverse: RAISE) annealing with `betas` temperatures. RAISE always runs
    settings.raise_runs: with 2 runs at 16,000 temperatures it read 0.03 nats worse than with
    10. AIS runs settings.ais_runs up to settings.ais_betas; past it (up to max_betas) its runs
    shrink as the temperatures grow, to no fewer than MIN_LONG_AIS_RUNS, so a longer pass costs
    about what one at ais_betas does: on a sharp model 10 x 16,000 read as 100 x 4,000 did
    (docs/results.md, 6.14)."""
    if reverse:
        return settings.raise_runs
    if betas <= settings.ais_betas:
        return settings.ais_runs
    return max(MIN_LONG_AIS_RUNS, round(settings.ais_runs * settings.ais_betas / betas))


def _pass_sweeps(settings: EvalSettings, betas: int, reverse: bool = False) -> int:
    """Gibbs sweeps per frame of one AIS (reverse: RAISE) pass with `betas` temperatures."""
    return annealing_runs(settings, betas, reverse) * (betas - 1)


def _anneal_until_agreed(forward, backward, rows: np.ndarray, start: tuple[int, int], settings: EvalSettings):
    """AIS's and RAISE's per-frame log-likelihoods of `rows`, their temperatures doubled from
    `start` until their mean NLLs agree within settings.gap_tolerance or the cap is reached.
    RAISE's double first (a tenth of AIS's cost per temperature), up to RAISE_AHEAD times AIS's;
    then AIS's. Returns ((betas_ais, betas_raise), ll_ais, ll_raise, sweeps per frame, and RAISE's
    figures of the pass before its last, None if it ran once)."""
    cap = settings.cap
    betas_ais, betas_raise = start
    ll_ais, ll_raise = forward(betas_ais, rows), backward(betas_raise, rows)
    earlier = None
    sweeps = _pass_sweeps(settings, betas_ais) + _pass_sweeps(settings, betas_raise, reverse=True)
    while settings.gap_tolerance > 0 and abs(np.mean(ll_ais - ll_raise)) > settings.gap_tolerance:
        if betas_raise < min(cap, RAISE_AHEAD * betas_ais):
            betas_raise = min(2 * betas_raise, cap)
            earlier, ll_raise = ll_raise, backward(betas_raise, rows)
            sweeps += _pass_sweeps(settings, betas_raise, reverse=True)
        elif betas_ais < cap:
            betas_ais = min(2 * betas_ais, cap)
            ll_ais = forward(betas_ais, rows)
            sweeps += _pass_sweeps(settings, betas_ais)
        else:
            break
    return (betas_ais, betas_raise), ll_ais, ll_raise, sweeps, earlier


def _anneal_the_tail(backward, ll_ais: np.ndarray, ll_raise: np.ndarray, earlier: np.ndarray | None, betas: int, settings: EvalSettings):
    """Past the cap, RAISE on the TAIL_SHARE of frames whose RAISE reads furthest above AIS,
    annealed afresh at TAIL_STEP times the temperatures a pass, up to settings.tail_betas,
    until the shard's mean AIS and RAISE agree within settings.gap_tolerance.

    On a sharp model, RAISE from frames it finds unlikely converges slowly, and those frames
    hold the gap (docs/results.md, 6.14 and 6.15). They are chosen by an earlier RAISE pass
    (`earlier`, or a fresh one at betas / TAIL_STEP) whose random numbers no reported RAISE figure shares:
    frames chosen and kept by the same noisy figures would flatter the model (6.7). AIS's
    figures, which the choice also reads, are not rerun, so their mean is not chosen.
    Returns (ll_raise, (tail betas, tail frames), Gibbs sweeps per frame of the shard); the tail
    is (0, 0) where it did not run, (betas, 0) where no frame's earlier RAISE read above AIS.
    """
    gap = lambda ll: float(np.mean(ll_ais - ll))  # noqa: E731  # RAISE's NLL above AIS's
    if not settings.tail_betas or settings.gap_tolerance <= 0 or gap(ll_raise) <= settings.gap_tolerance:
        return ll_raise, (0, 0), 0.0
    n = len(ll_ais)
    sweeps = 0.0
    if earlier is None:  # a pass only for choosing: at a quarter of the cap, where the same frames stand out
        choosing = max(2, betas // TAIL_STEP)
        earlier = backward(choosing, np.arange(n), draw=1)
        sweeps += _pass_sweeps(settings, choosing, reverse=True)
    apart = ll_ais - earlier
    rows = np.argsort(-apart, kind="stable")[: max(1, round(TAIL_SHARE * n))]
    rows = np.sort(rows[apart[rows] > 0])
    ll_raise = ll_raise.copy()
    while len(rows) and betas < settings.tail_betas and gap(ll_raise) > settings.gap_tolerance:
        betas = min(TAIL_STEP * betas, settings.tail_betas)
        ll_raise[rows] = backward(betas, rows)
        sweeps += _pass_sweeps(settings, betas, reverse=True) * len(rows) / n
    return ll_raise, (betas, len(rows)), sweeps


def _shard_task(W, v, bv, bh, previous, settings: EvalSettings | ControlSettings, seed: int, resources: Resources | None) -> dict:
    """`settings.score` (`score_shard` or `score_control`), and where it ran; in a Ray worker
    (resources given), TF sized to the task."""
    if resources is not None:
        configure_process(resources.cpus, resources.gpus)
    start = time.perf_counter()
    result = settings.score(W, v, bv, bh, previous, seed)
    where = {"host": socket.gethostname(), "pid": os.getpid(), "seconds": time.perf_counter() - start}
    if ray_running():
        import ray

        where["node_id"] = ray.get_runtime_context().get_node_id()
    return {**result, "where": where}


class ShardStore:
    """A directory of finished shards: plan.json (what they score) and shard-NNNNN.npz, which
    hold `fields` (SHARD_ARRAYS, or a control's CONTROL_ARRAYS), the first of them per frame."""

    def __init__(self, directory: str | os.PathLike, plan: dict, fields: dict = SHARD_ARRAYS):
        self.directory = Path(directory)
        self.plan = plan
        self.fields = fields

    @classmethod
    def for_inputs(cls, root: str | os.PathLike, label: str, arrays: list[np.ndarray], plan: dict, fields: dict = SHARD_ARRAYS) -> ShardStore:
        """The store under root/ for these inputs: its name is `label` and a digest of the
        arrays (parameters, frames) and the plan (settings, shard layout), so other inputs
        never reuse its shards."""
        digest = hashlib.sha256(json.dumps(plan, sort_keys=True).encode())
        for a in arrays:
            digest.update(np.ascontiguousarray(a).tobytes())
        return cls(Path(root) / f"{label}-{digest.hexdigest()[:12]}", plan, fields)

    def load(self, shard: Shard) -> dict | None:
        """The stored result of `shard`, or None when it is missing or unreadable (then redone)."""
        path = self.directory / shard.name
        if not path.is_file():
            return None
        n = shard.stop - shard.start
        try:
            with np.load(path, allow_pickle=False) as stored:
                result = {key: stored[key] for key in self.fields}
                where = json.loads(str(stored["where"]))
            held = len(result[next(iter(self.fields))])
            if held != n or ("acc_counts" in result and result["acc_counts"].shape[1] != n):
                raise ValueError(f"holds {held} frames, not {n}")
        except Exception as e:  # any damage: the shard is simply scored again
            log.warning("%s: unreadable (%s); scoring that shard again", path, e)
            return None
        return {**result, "where": where}

    def save(self, shard: Shard, result: dict) -> None:
        make_dir(self.directory)
        if not (self.directory / "plan.json").is_file():
            write_json(self.directory / "plan.json", self.plan)
        arrays = {key: np.asarray(result[key], dtype) for key, dtype in self.fields.items()}
        where = np.array(json.dumps(result["where"]))

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a path
                np.savez(f, **arrays, where=where)

        atomic_write(self.directory / shard.name, write)


def run_shards(
    shards: list[Shard],
    inputs: Callable[[Shard], tuple],
    settings: EvalSettings | ControlSettings,
    store: ShardStore | None,
    use_ray: bool,
    resources: Resources = Resources(),
    on_done: Callable[[Shard, dict], None] | None = None,
) -> tuple[dict[int, dict], dict]:
    """Score every shard that `store` lacks, storing each as it finishes.

    inputs(shard) -> (W, v, bv, bh, previous) of its frames; settings.score scores them (the
    full score, or a control's). use_ray: one Ray task per shard with
    `resources` (the Ray that is running); else one after another in this process.
    Returns (results by shard index, counts: reused, resent).
    """
    results, todo = {}, []
    for shard in shards:
        stored = store.load(shard) if store is not None else None
        if stored is None:
            todo.append(shard)
        else:
            results[shard.index] = stored
            if on_done is not None:
                on_done(shard, stored)
    counts = {"reused": len(results), "resent": []}

    def finished(shard: Shard, result: dict) -> None:
        if store is not None:
            store.save(shard, result)
        results[shard.index] = result
        if on_done is not None:
            on_done(shard, result)

    if not use_ray:
        for shard in todo:
            finished(shard, _shard_task(*inputs(shard), settings, settings.shard_seed(shard.index), None))
        return results, counts
    _run_on_ray(todo, inputs, settings, resources, finished, counts["resent"])
    return results, counts


def _run_on_ray(todo, inputs, settings, resources: Resources, finished, resent: list[int]) -> None:
    """One Ray task per shard; a shard whose worker or node is lost is sent again."""
    import ray
    from ray.exceptions import RayTaskError

    task = ray.remote(_shard_task).options(**resources.ray_options(), max_retries=0)
    shared_W = {}

    def submit(shard: Shard):
        W, v, bv, bh, previous = inputs(shard)
        key = id(W)
        if key not in shared_W:
            shared_W[key] = ray.put(W)  # one copy of the weights for every shard
        return task.remote(shared_W[key], v, bv, bh, previous, settings, settings.shard_seed(shard.index), resources)

    pending = {submit(shard): shard for shard in todo}
    attempts = {shard.index: 1 for shard in todo}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        shard = pending.pop(ready[0])
        try:
            result = ray.get(ready[0])
        except RayTaskError:
            raise  # the scoring itself failed (bad parameters, overflow): sending it again would fail again
        except ray.exceptions.RayError as e:  # the worker or its node was lost
            if attempts[shard.index] >= SHARD_ATTEMPTS:
                raise
            attempts[shard.index] += 1
            resent.append(shard.index)
            log.warning("shard %d (frames %d-%d) was lost with its worker (%s); sending it again", shard.index, shard.start, shard.stop, type(e).__name__)
            pending[submit(shard)] = shard
            continue
        finished(shard, result)


def settings_plan(settings: EvalSettings | ControlSettings, shards: list[Shard], frames: np.ndarray) -> dict:
    """What a ShardStore's shards depend on, besides the model and the frames themselves."""
    return {"settings": asdict(settings), "arrays": sorted(settings.arrays), "shard_frames": [[s.start, s.stop] for s in shards], "frame_indices_digest": hashlib.sha256(frames.tobytes()).hexdigest()[:16]}
