"""What a finished search or single trial leaves behind, and the summary it prints.

    trials.json   every trial: status, parameters, best metrics, error
    optuna.db     the trials as an Optuna study (`optuna-dashboard sqlite:///.../optuna.db`), written
                  live by rbmsearch.study on local storage (PRUNED, FAIL, real times), else here
    history.png, importance.png   Optuna's optimization history and parameter importances
    best_run/     the best checkpoint, a run directory (`rbmsearch.run`), scored on the test split
    best.json     the best trial: parameters, configuration, validation and test metrics, files
    samples/trial_<id>/   samples of the best trials (`rbmsearch.render`); index.html (`rbmsearch.gallery`)

`tune` turns Ray's results into `TrialSummary` rows and calls `report_search`; the single
trial calls `report_single`. Both write best.json through one writer. Imports Optuna, not Ray.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rbmsearch.data import Dataset
from rbmsearch.errors import GalleryError, RenderError, RunError, SearchError
from rbmsearch.files import atomic_write, write_json
from rbmsearch.space import SearchSettings, SearchSpace
from rbmsearch.storage import is_uri, upload

__all__ = ["TrialSummary", "format_table", "optuna_distributions", "report_search", "report_single", "write_optuna_study"]

log = logging.getLogger(__name__)


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
    checkpoint: Any = None  # the best checkpoint: anything with `.path` and `.to_directory(path)`

    def to_json(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "checkpoint"}
        out["checkpoint"] = getattr(self.checkpoint, "path", None)
        return out


def _format_value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


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


def optuna_distributions(space: SearchSpace) -> dict:
    """Each searched parameter's Optuna distribution."""
    import optuna

    out = {}
    for p in space.params:
        if p.type == "int":
            out[p.name] = optuna.distributions.IntDistribution(p.low, p.high, log=p.log, step=p.step or 1)
        elif p.type == "float":
            out[p.name] = optuna.distributions.FloatDistribution(p.low, p.high, log=p.log, step=p.step)
        else:
            out[p.name] = optuna.distributions.CategoricalDistribution(list(p.choices))
    return out


def write_optuna_study(path: Path | None, summaries: list[TrialSummary], space: SearchSpace, study_name: str):
    """The trials as an Optuna study, each with its best epoch's value, in memory (the plots);
    with `path`, also copied whole over that SQLite file (for optuna-dashboard; a search on a
    URI, whose study could not be written live). Returns the study in memory."""
    import optuna

    settings, memory = space.settings, optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=memory, study_name=study_name, direction="minimize" if settings.mode == "min" else "maximize")
    distributions = optuna_distributions(space)
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
    if path is not None:  # the file mirrors the experiment: rebuilt, never appended to
        atomic_write(path, lambda tmp: _copy_study(study_name, memory, tmp))
    return study


def _copy_study(name: str, source, path: Path) -> None:
    import optuna

    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    optuna.copy_study(from_study_name=name, from_storage=source, to_storage=storage)
    storage.engine.dispose()


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
                log.warning("%s skipped: %s", filename, e)
                continue
        for warning in caught:  # e.g. too few trials: the importances shown are all equal
            log.warning("%s: %s", filename, warning.message)
        ax.figure.set_size_inches(8, 5)
        ax.figure.tight_layout()
        atomic_write(out_dir / filename, lambda tmp: ax.figure.savefig(tmp, dpi=100, format="png"))
        plt.close(ax.figure)
        made[filename] = str(out_dir / filename)
    return made


def render_trials(out: Path, ranked: list[tuple[str, Path]], settings: SearchSettings, data: str, seed: int) -> tuple[dict[str, list[str]], str]:
    """Samples of each (trial id, run directory) into out/samples/trial_<id>/ (out/samples/ for
    the single trial), with the training pieces and continuations beside the first (the best)
    only. Returns (trial id -> paths of its MIDI files relative to `out`, the sound the audio was made with).

    A trial whose rendering fails is reported and skipped: samples never cost a search its results.
    """
    from rbmsearch.render import render_run
    from rbmsearch.run import read_config

    done, sound = {}, ""
    # One bar for all the trials (not one per trial: a search's log stays short).
    for rank, (trial_id, run_dir) in enumerate(tqdm(ranked, desc="rendering samples", unit="trial", file=sys.stderr, disable=not settings.samples)):
        if settings.samples == 0:
            break
        try:
            steps = settings.sample_quarters * int(read_config(run_dir)[1]["steps_per_quarter"])
            folder = Path("samples") if trial_id == "single" else Path("samples") / f"trial_{trial_id}"
            comparisons = (settings.references, settings.continuations) if rank == 0 else (0, 0)  # once, beside the best
            result = render_run(run_dir, out / folder, settings.samples, steps, seed=seed, data=data, soundfont=settings.soundfont, program=settings.program, references=comparisons[0], continuations=comparisons[1])  # fmt: skip
        except (RenderError, RunError, OSError, ValueError) as e:
            log.warning("samples of trial %s skipped: %s", trial_id, e)
            continue
        done[trial_id] = [str(folder / s["midi"]) for s in result["samples"]]
        sound = sound or result["sound"]
    return done, sound


def _build_gallery(out: Path) -> Path | None:
    from rbmsearch.gallery import build_page

    try:
        return build_page(out)
    except (GalleryError, RenderError, RunError, OSError) as e:
        log.warning("gallery skipped: %s", e)
        return None


def _write_best(out: Path, run_dir: Path, run_shown: str, fields: dict, metrics: dict, test: dict, samples: list[str]) -> dict:
    """best.json in `out`; the paths in it (`run_shown`, `samples`) are as the user will find them."""
    from rbmsearch.run import read_config

    config, data = read_config(run_dir)
    report = {
        **fields,
        "config": asdict(config),
        "data": data,
        "metrics": {**metrics, **{k: v for k, v in test.items() if k != "test_eval"}},
        "test_eval": test.get("test_eval"),
        "run_dir": run_shown,
        "samples": samples,
    }
    write_json(out / "best.json", report)
    return report


def _result_lines(headline: str, shown: str, test: dict, samples_line: str | None, page: Path | None) -> list[str]:
    if test:
        headline += (f", test NLL {test['test_nll']:.3f} \u00b1 {test['test_nll_ci95']:.3f} nats/frame (RAISE {test['test_nll_raise']:.3f}), "
                     f"test ACC {test['test_acc_decoded']:.3f} best guess ({test['test_acc']:.3f} sampled)")  # fmt: skip
        if test.get("test_frames", 0) < test.get("test_frames_in_split", 0):
            headline += f", on an even subsample of {test['test_frames']:,} of the {test['test_frames_in_split']:,} test frames"
            if test.get("test_nll_whole_split") is not None:
                headline += (f"; the whole split {test['test_nll_whole_split']:.3f} \u00b1 {test['test_nll_whole_split_ci95']:.3f} "
                             "(regressed on a cheap score of every frame)")  # fmt: skip
    lines = [headline, f"best.json: {shown}/best.json"]
    if samples_line:
        lines.append(samples_line)
    if page is not None:
        view = f"python -m rbmsearch.gallery {shown}" if not is_uri(shown) else f"copy {shown} here, then python -m rbmsearch.gallery DIR"
        lines.append(f"view them: {view}   (serves the gallery on http://127.0.0.1:8000/)")
    return lines


def report_search(experiment_dir: str, summaries: list[TrialSummary], space: SearchSpace, data_path: str, dataset: Dataset) -> tuple[dict, list[str]]:
    """End of a search: table, trials.json, Optuna study and plots, test score, best.json, samples, gallery.

    experiment_dir: STORAGE/NAME (a path or URI); for a URI, outputs are staged locally and
    uploaded at the end. `summaries` are ranked best first. Returns best.json's content and
    the lines to print. Raises SearchError when no trial finished an epoch.
    """
    from rbmsearch.evaluate import evaluate_run

    settings = space.settings
    remote = is_uri(experiment_dir)
    out = Path(tempfile.mkdtemp(prefix="rbmsearch-finish-")) if remote else Path(experiment_dir)
    names = [p.name for p in space.params]
    lines = [f"\n{len(summaries)} trials: {sum(s.status == 'TERMINATED' for s in summaries)} finished, {sum(s.status == 'ERROR' for s in summaries)} errored",  # fmt: skip
             format_table(summaries, settings, names)]
    write_json(out / "trials.json", [s.to_json() for s in summaries])
    live = not remote and (out / "optuna.db").is_file()  # written as the search ran (rbmsearch.study): kept as it is
    study = write_optuna_study(None if live else out / "optuna.db", summaries, space, Path(experiment_dir).name)
    plots = save_plots(study, out)

    best = next((s for s in summaries if s.best and s.checkpoint is not None), None)
    if best is None:
        if remote:
            upload(out, experiment_dir)
        raise SearchError(f"no trial of {experiment_dir} finished an epoch, so there is no best model; see trials.json for the errors.")
    best_run = out / "best_run"
    if best_run.exists():
        shutil.rmtree(best_run)
    best.checkpoint.to_directory(str(best_run))
    # As Ray tasks with the trials' resources when Ray is running (a search), shards kept in eval/.
    test = evaluate_run(best_run, dataset, store_root=out / "eval", resources=settings.trial_resources)
    others = [s for s in summaries if s.best and s.checkpoint is not None and s is not best][: settings.render_top - 1]
    with tempfile.TemporaryDirectory(prefix="rbmsearch-render-") as scratch:
        ranked = [(best.trial_id, best_run)]
        for s in others:
            ranked.append((s.trial_id, Path(scratch) / s.trial_id))
            s.checkpoint.to_directory(str(ranked[-1][1]))
        rendered, sound = render_trials(out, ranked, settings, data_path, space.train_config(best.params).seed)
    samples = rendered.get(best.trial_id, [])
    fields = {
        "trial_id": best.trial_id,
        "params": best.params,
        "checkpoint": best.checkpoint.path,
        "plots": {k: f"{experiment_dir}/{k}" for k in plots},
        "optuna_storage": f"sqlite:///{experiment_dir}/optuna.db",
    }
    report = _write_best(out, best_run, f"{experiment_dir}/best_run", fields, best.best, test, [f"{experiment_dir}/{p}" for p in samples])
    page = _build_gallery(out)
    if remote:
        upload(out, experiment_dir)
    samples_line = f"samples:   {experiment_dir}/samples/trial_{best.trial_id}/ (MIDI, WAV and piano rolls of the best {len(rendered)} trials in samples/; audio: {sound})" if samples else None  # fmt: skip
    lines += _result_lines(f"\nbest trial {best.trial_id}: {settings.metric} {best.best[settings.metric]:.4f}", experiment_dir, test, samples_line, page)
    lines.append(f"dashboard: optuna-dashboard {report['optuna_storage']}")
    lines.append(f"curves:    tensorboard --logdir {experiment_dir}   (every trial's reported metrics; pip install tensorboard)")
    return report, lines


def report_single(out_dir: Path, run_dir: Path, params: dict, space: SearchSpace, data_path: str, dataset: Dataset, history: list[dict]) -> tuple[dict, list[str]]:
    """The single trial's outputs, as a search would leave them: test score, samples, best.json.

    The samples and the page go into the run directory, where `rbmsearch.gallery RUN_DIR` looks.
    """
    from rbmsearch.evaluate import evaluate_run

    test = evaluate_run(run_dir, dataset, resources=space.settings.trial_resources)
    rendered, sound = render_trials(run_dir, [("single", run_dir)], space.settings, data_path, space.train_config(params).seed)
    samples = [str(run_dir / p) for p in rendered.get("single", [])]
    page = _build_gallery(run_dir) if samples else None
    read = [h for h in history if "valid_monitor" in h]  # the epochs the monitor read
    best = min(read, key=lambda h: h["valid_monitor"]) if read else {}
    report = _write_best(out_dir, run_dir, str(run_dir), {"params": params}, best, test, samples)
    headline = f"best epoch {best.get('epoch')}: valid_monitor {best.get('valid_monitor', math.nan):.4f}"
    samples_line = f"samples:   {Path(samples[0]).parent}/ (MIDI, WAV, piano rolls; audio: {sound})" if samples else None
    lines = _result_lines(headline, str(out_dir), test, samples_line, None)
    if page is not None:
        lines.append(f"view them: python -m rbmsearch.gallery {run_dir}")
    return report, lines

