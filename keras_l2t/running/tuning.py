"""Tuning each strategy on validation with Optuna, the same budget for every strategy, never reading the test split.

Optuna's ask-and-tell interface (https://optuna.readthedocs.io) proposes settings (TPE, seeded); each trial is a
`RunConfig` (the base config with the proposed settings) that runs through the grid's executors like any run, so
trials go one after another here or as Ray tasks. The study lives in `<out>/tuning.db` (SQLite, one study per
strategy, named after it): a tuning stopped in any way resumes where it was, and `optuna-dashboard
sqlite:///<out>/tuning.db` shows it. Trials load their data with `training_source`, which cannot open a test split.

>>> from keras_l2t import presets, tuning
>>> base = presets.get_config("quick")["parts"]["matching"]
>>> study = tuning.tune(base, "fm_uniform", trials=8, out="runs/tuning")
>>> tuning.best_settings(study)
{'learning_rate': 0.02, ...}
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import shutil

import keras

from keras_l2t.running import executors, experiment
from keras_l2t.running.config import RunConfig, parse_samples
from keras_l2t.running.results import lock
from keras_l2t.running.tuning_data import load_tuning_data, training_source
from keras_l2t.running.tuning_space import Parameter, import_optuna, parse_space, resolve_space, search_space

__all__ = ["Parameter", "best_settings", "parse_space", "run_trial", "search_space", "training_source", "tune"]

TUNING_SEED_OFFSET = 1000  # trials use seed 1000 + seed: their subset and validation differ from seeds 0, 1, ...
_FINISHED = ("COMPLETE", "PRUNED")  # trials that count towards the budget


def run_trial(config: RunConfig, callbacks=()) -> dict:
    """One trial as an executor runs it: `executors.run_task` on `load_tuning_data`, the backup kept for the caller.

    Args:
        config: the trial's run.
        callbacks: Keras callbacks for `fit` (the local executor's `Report`, which feeds the pruner).

    Returns:
        The run's result (`experiment.run`), `test_accuracy` None.

    """
    config.paths.clear_partial()
    return experiment.run(config, load_tuning_data(config), keep_backup=True, callbacks=callbacks)


class Report(keras.callbacks.Callback):
    """Report each validated epoch's accuracy to an Optuna trial and stop the run when the pruner says so.

    Args:
        trial: the trial (from `study.ask()`).

    """

    def __init__(self, trial):
        super().__init__()
        self.trial, self.offset, self.pruned, self.reported = trial, 0, False, False

    def on_epoch_end(self, epoch, logs=None):
        if logs and "val_accuracy" in logs and math.isfinite(logs["val_accuracy"]):
            self.trial.report(float(logs["val_accuracy"]), self.offset + epoch + 1)
            self.reported = True
            if self.trial.should_prune():
                self.pruned, self.model.stop_training = True, True

    def on_train_end(self, logs=None):
        self.offset += self.params["epochs"]  # a fine-tuning phase reports after the first phase's epochs


# a trial's figures kept with it in the study (meta_health: L2T runs, whether their meta-networks moved)
TRIAL_FIGURES = ("validation_accuracy", "best_epoch", "epochs_run", "wall_seconds", "diverged_epoch", "meta_health")


def trial_config(base, strategy: str, out: str, seed: int = 0) -> RunConfig:
    """The base of a strategy's trials: the base settings, seed `TUNING_SEED_OFFSET + seed`, under `<out>/trials/`.

    Args:
        base: a `RunConfig`, or a dict of its fields (a preset part: its strategies, seeds and description are
            ignored, its first N is used; its `per_strategy` settings of this strategy apply, and trials replace
            the parameters they search).
        strategy: the strategy tuned.
        out: the tuning folder.
        seed: the tuning's seed.

    Returns:
        The config each trial replaces its parameters in.

    """
    fields = dataclasses.asdict(base) if isinstance(base, RunConfig) else dict(base)
    fields.update((fields.pop("per_strategy", None) or {}).get(strategy, {}))  # a preset's own settings of it
    for name in ("strategy", "strategies", "seeds", "seed", "description", "out", "verbose", "keep_model"):
        fields.pop(name, None)
    samples = fields.pop("samples_per_class", None)
    samples = samples[0] if isinstance(samples, (list, tuple)) else samples
    family = fields.pop("family", None)
    return RunConfig(
        strategy,
        samples_per_class=parse_samples(samples),
        family=family if strategy == "scratch" else None,  # as `grid.expand`: the others train in their own
        seed=TUNING_SEED_OFFSET + seed,
        out=os.path.join(out, "trials", strategy),
        verbose=0,
        keep_model=False,
        **fields,
    )


def _study(out: str, strategy: str, seed: int, warmup_steps: int, trials: int):
    """The strategy's study in `<out>/tuning.db`, created or loaded: TPE after a third of the trials drawn at random.

    Optuna's default of 10 random trials would leave a budget of 8 random search; the random draws are the same
    for every strategy of one seed (common random numbers). The median pruner stops a trial whose validation
    accuracy is below the median of earlier trials at the same epoch, from half its epochs on (warm-up and early
    instability are not judged) and after 3 complete trials.
    """
    optuna = import_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        storage=f"sqlite:///{os.path.abspath(os.path.join(out, 'tuning.db'))}",
        study_name=strategy,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(  # constant liar: trials running at once (Ray) are not proposed alike
            seed=seed, n_startup_trials=min(10, max(2, trials // 3)), constant_liar=True
        ),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup_steps),
        load_if_exists=True,
    )


def _recover(study, echo) -> None:
    """A trial left running by a kill is marked failed and queued again with the same parameters.

    Its run then resumes from its backup (same settings, same run), so no finished epoch is trained twice.
    """
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        echo(f"{study.study_name}: trial {trial.number} was interrupted; queued again with the same settings")


def finished_trials(study) -> list:
    """The trials that count towards the budget: complete or pruned."""
    return [trial for trial in study.get_trials(deepcopy=False) if trial.state.name in _FINISHED]


def tune(base, strategy: str, trials: int, out: str, executor=None, space=None, seed: int = 0, echo=print):
    """Tune one strategy on validation: `trials` trials in all (a resumed study runs only those left).

    Args:
        base: the runs' settings: a `RunConfig` or a dict of its fields (e.g. a preset part).
        strategy: the strategy tuned.
        trials: the budget, in trials of the base config's epochs each (pruned trials stop earlier).
        out: the tuning folder (`tuning.db`, `trials/<strategy>/` with each trial's history and logs).
        executor: `executors.LocalExecutor` (default: trials one at a time, pruned at validated epochs) or
            `executors.RayExecutor` (as many trials at once as it runs; whole trials, reported afterwards).
        space: overrides of the strategy's search space (`parse_space`).
        seed: seeds the sampler and the trials' data (`TUNING_SEED_OFFSET + seed`).
        echo: where progress lines go.

    Returns:
        The `optuna.Study` (`best_settings` gives its choice).

    """
    config = trial_config(base, strategy, out, seed)
    parameters = resolve_space(config, space, echo)
    if not parameters:
        raise ValueError(f"Nothing to tune for {strategy}: its search space is empty.")
    distributions = {parameter.name: parameter.distribution() for parameter in parameters}
    executor = executor or executors.LocalExecutor()
    os.makedirs(out, exist_ok=True)
    with lock(out):
        study = _study(out, strategy, seed, warmup_steps=config.epochs // 2, trials=trials)
        study.set_user_attr("budget", {"trials": trials, "epochs": config.epochs})
        _recover(study, echo)
        while (left := trials - len(finished_trials(study))) > 0:
            batch = [study.ask(distributions) for _ in range(min(left, getattr(executor, "parallel_runs", 1)))]
            _run_batch(study, batch, config, executor, echo)
    return study


def _run_batch(study, batch: list, config: RunConfig, executor, echo) -> None:
    """Run a batch of asked trials through the executor and tell each its result as it finishes."""
    from optuna.trial import TrialState

    runs = {}  # run key -> (trial, its Report)
    for trial in batch:
        run = dataclasses.replace(config, **trial.params)
        trial.set_user_attr("run", run.name)
        runs[run.key] = (trial, Report(trial))
    if isinstance(executor, executors.RayExecutor):  # whole trials in workers, reported afterwards
        executor = dataclasses.replace(executor, task=run_trial)
    else:  # one trial, reporting to its trial as it trains
        executor = dataclasses.replace(executor, task=functools.partial(run_trial, callbacks=[runs[run.key][1]]))
    for run, result in executor.runs([dataclasses.replace(config, **trial.params) for trial in batch]):
        trial, reporter = runs[run.key]
        for name in TRIAL_FIGURES:
            trial.set_user_attr(name, result.get(name))
        if reporter.pruned:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            if not reporter.reported:  # a Ray trial: its validated epochs, from its history
                _report_history(trial, run)
            study.tell(trial, result["validation_accuracy"])
        shutil.rmtree(run.paths.backup_root, ignore_errors=True)  # after the tell: a kill loses no finished trial
        settings = ", ".join(f"{name} {value:.3g}" for name, value in trial.params.items())
        state = "pruned" if reporter.pruned else f"validation {result['validation_accuracy']:.3f}"
        echo(f"{study.study_name} trial {trial.number}: {settings}: {state}, {result['wall_seconds']:.0f} s")


def _report_history(trial, run: RunConfig) -> None:
    history = experiment._read_history(run.paths.history())
    for epoch, value in enumerate(history.get("val_accuracy", []), start=1):
        if math.isfinite(value):
            trial.report(value, epoch)


def best_settings(study) -> dict:
    """The settings of a study's best complete trial.

    Raises:
        ValueError: no trial has completed yet.

    """
    if not any(trial.state.name == "COMPLETE" for trial in study.get_trials(deepcopy=False)):
        raise ValueError(f"Study {study.study_name!r} has no complete trial yet; run tune() first.")
    return dict(study.best_trial.params)


def tune_grid(base, strategy_names, trials: int, out: str, executor=None, space=None, seed: int = 0, echo=print):
    """Tune several strategies with the same budget (see `tune`); returns strategy name -> study."""
    tuned = functools.partial(tune, base, trials=trials, out=out, executor=executor, space=space, seed=seed, echo=echo)
    return {name: tuned(name) for name in strategy_names}
