"""Where a grid's runs execute: one after another in this process (the default), or as Ray tasks.

An executor yields `(config, result)` pairs as runs finish, in any order; the grid's driver stays the only writer
of `results.csv`, the summary and the plots. With Ray (https://docs.ray.io), each run is one task that trains in
a worker process and writes only its own files (history, TensorBoard, backup, model) under `--out`; a task lost
with its worker (killed, out of memory, machine gone) is retried by Ray and resumes from the run's backup, so
`--out` must be storage every machine sees at the same path (NFS or a similar shared file system) when the
cluster has more than one machine.

A local Ray instance shares the driver's fate: killed with SIGKILL, the driver takes Ray's GCS server, raylet and
workers with it at once, but Ray's dashboard and runtime-env agents live on for about 65 s (measured with Ray
2.60): they see the raylet die and first try to report its death to the GCS, already gone, with a timeout of
60 s fixed in Ray (`ray._private.utils.publish_error_to_driver`), then exit. No Ray setting shortens that
(`RAY_gcs_rpc_server_reconnect_timeout_s=5` measured the same, 63 s).

>>> from keras_l2t import executors, grid
>>> grid.run_grid(configs, "runs/demo", executor=executors.RayExecutor(cpus_per_run=1))
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator

from keras_l2t.running.config import RunConfig
from keras_l2t.running.experiment import run

__all__ = ["EXECUTORS", "LocalExecutor", "RayExecutor", "make"]

EXECUTORS = ("local", "ray")
# Settings a worker needs from the driver's environment (weights mirror, image cache, oneDNN, logging).
_FORWARDED = (
    "KERAS_L2T_WEIGHTS_DIR", "KERAS_L2T_CACHE", "KERAS_L2T_CACHE_SIZE", "TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL",
    "KERAS_L2T_IMPORTS", "PYTHONPATH",  # user strategies (user_modules.import_modules) and where they are
)  # fmt: skip


def run_task(config: RunConfig) -> dict:
    """One run as the grid's worker does it: forget an interrupted attempt's logs unless it left a backup.

    Args:
        config: the run (its `out` is the grid's folder).

    Returns:
        The run's result (see `experiment.run`); the backup stays for the driver to remove after the row is written.

    """
    config.paths.clear_partial()
    return run(config, keep_backup=True)


@dataclasses.dataclass
class LocalExecutor:
    """Run the grid's runs one after another in this process (`task`: what a run is, `run_task` by default)."""

    task: Callable[[RunConfig], dict] = run_task

    def runs(self, configs: Iterable[RunConfig]) -> Iterator[tuple[RunConfig, dict]]:
        """Yield (config, result) for each config, in order."""
        for config in configs:
            yield config, self.task(config)


@dataclasses.dataclass
class RayExecutor:
    """Run each run as a Ray task (pip install "keras_l2t[ray]").

    Args:
        address: None starts a local Ray instance on this machine; "auto" joins the running cluster this machine
            belongs to; "ray://host:10001" connects to a remote one.
        cpus_per_run: CPUs Ray reserves per run; TensorFlow in the worker uses as many threads.
        gpus_per_run: GPUs per run; fractions let several small runs share one GPU.
        max_retries: how many times a run lost with its worker is started again (from its backup).
        task: what a run is (`run_task`; tuning gives its trial, `tuning.run_trial`): a module-level function.

    """

    address: str | None = None
    cpus_per_run: float = 1
    gpus_per_run: float = 0
    max_retries: int = 3
    task: Callable[[RunConfig], dict] = run_task

    @property
    def parallel_runs(self) -> int:
        """How many runs go on at once (for the progress line's time estimate)."""
        ray = _import_ray()
        cpus = ray.cluster_resources().get("CPU", 1) if ray.is_initialized() else 1
        return max(1, int(cpus // self.cpus_per_run))

    def __post_init__(self):
        if not self.cpus_per_run > 0 or self.gpus_per_run < 0:
            raise ValueError(
                f"cpus_per_run must be above 0 and gpus_per_run at least 0, got {self.cpus_per_run} and "
                f"{self.gpus_per_run}."
            )

    def _task(self):
        ray = _import_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, logging_level="warning")
        threads = str(max(1, int(self.cpus_per_run)))
        environment = {name: os.environ[name] for name in _FORWARDED if name in os.environ}
        environment.update(TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS=threads, OMP_NUM_THREADS=threads)
        return ray.remote(self.task).options(
            num_cpus=self.cpus_per_run,
            num_gpus=self.gpus_per_run,
            max_retries=self.max_retries,
            runtime_env={"env_vars": environment},
        )

    def runs(self, configs: Iterable[RunConfig]) -> Iterator[tuple[RunConfig, dict]]:
        """Submit every config as a task; yield (config, result) as each finishes."""
        configs = list(configs)
        if not configs:
            return
        ray = _import_ray()
        task = self._task()
        pending = {task.remote(config): config for config in configs}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                config = pending.pop(ready[0])
                yield config, ray.get(ready[0])
        finally:  # interrupted (Ctrl-C, an error): stop the rest; their backups stay for the next call
            for reference in pending:
                ray.cancel(reference, force=True)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError(
            'The ray executor needs Ray: pip install "keras_l2t[ray]" (or run with --executor local).'
        ) from None
    return ray


def make(name: str = "local", **options) -> LocalExecutor | RayExecutor:
    """An executor by name.

    Args:
        name: "local" or "ray".
        **options: `RayExecutor` fields (address, cpus_per_run, gpus_per_run, max_retries); none for local.

    Raises:
        ValueError: unknown name, or options given to the local executor.

    """
    if name not in EXECUTORS:
        raise ValueError(f"Unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}.")
    if name == "local":
        given = {key: value for key, value in options.items() if value not in (None, 0)}
        if given:
            raise ValueError(f"{', '.join(given)} need --executor ray.")
        return LocalExecutor()
    return RayExecutor(**{key: value for key, value in options.items() if value is not None})
