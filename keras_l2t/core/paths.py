"""The layout of an output folder: the one place that knows where a grid and each of its runs write.

    <out>/results.csv                       one row per finished run (`keras_l2t.running.results`)
    <out>/summary.md, accuracy_vs_samples.png, learning_curves.png    the report (`keras_l2t.analysis.report`)
    <out>/tb/<run><phase>/                  TensorBoard: Keras' curves, validation/ (early-stop point), meta/
    <out>/history/<run><phase>.csv          per-epoch history
    <out>/backup/<run>/<train|fine_tune>/   the backup of a run in progress (removed when its row is safe)
    <out>/models/<run>.keras                the run's validation-best model, with its metadata (`inference`)
    <out>/confusion/<run>.json              its confusion matrix on the test set (rows: true class)

`<phase>` is "" for a run's (first) training phase and "-fine_tune" for the two-phase recipe's second.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

FINE_TUNE = "-fine_tune"


@dataclasses.dataclass(frozen=True)
class GridPaths:
    """The files of a comparison's output folder.

    Args:
        out: the folder.

    """

    out: str

    @property
    def results(self) -> str:
        """The results table."""
        return os.path.join(self.out, "results.csv")

    @property
    def summary(self) -> str:
        """The markdown summary."""
        return os.path.join(self.out, "summary.md")

    @property
    def accuracy_plot(self) -> str:
        """Test accuracy against samples per class."""
        return os.path.join(self.out, "accuracy_vs_samples.png")

    @property
    def learning_curves_plot(self) -> str:
        """Every run's learning curves."""
        return os.path.join(self.out, "learning_curves.png")

    @property
    def confusion_plot(self) -> str:
        """The confusion matrix of the run validation picks."""
        return os.path.join(self.out, "confusion_matrix.png")

    @property
    def per_class_plot(self) -> str:
        """Test accuracy per class of an imbalanced grid's strategies."""
        return os.path.join(self.out, "per_class_accuracy.png")

    @property
    def tensorboard(self) -> str:
        """The TensorBoard root (`tensorboard --logdir` this)."""
        return os.path.join(self.out, "tb")

    @property
    def history(self) -> str:
        """The folder of per-epoch CSV histories."""
        return os.path.join(self.out, "history")

    @property
    def models(self) -> str:
        """The folder of kept models."""
        return os.path.join(self.out, "models")

    def run(self, name: str) -> RunPaths:
        """The files of one run in this folder."""
        return RunPaths(self.out, name)


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """The files of one run.

    Args:
        out: the output folder.
        name: the run's name (`RunConfig.name`).

    """

    out: str
    name: str

    def tensorboard(self, phase: str = "") -> str:
        """The run's TensorBoard folder for a phase."""
        return os.path.join(self.out, "tb", self.name + phase)

    def history(self, phase: str = "") -> str:
        """The per-epoch CSV history of a phase."""
        return os.path.join(self.out, "history", self.name + phase + ".csv")

    def trajectory(self, phase: str = "") -> str:
        """The chosen target weights after each epoch of a phase (`trajectories.WeightTrajectory`)."""
        return os.path.join(self.out, "trajectories", self.name + phase + ".csv")

    @property
    def gamma(self) -> str:
        """L2T-www's which maps of a few validation images at chosen epochs (`trajectories.GammaSnapshots`)."""
        return os.path.join(self.out, "gamma", self.name + ".npz")

    @property
    def model(self) -> str:
        """The run's kept model."""
        return os.path.join(self.out, "models", self.name + ".keras")

    @property
    def confusion(self) -> str:
        """The run's test confusion matrix (JSON: class names, counts; rows are true classes)."""
        return os.path.join(self.out, "confusion", self.name + ".json")

    @property
    def backup_root(self) -> str:
        """The run's backups (one folder per phase); present only while the run is unfinished."""
        return os.path.join(self.out, "backup", self.name)

    def backup(self, phase: str = "") -> str:
        """The backup folder of a phase."""
        return os.path.join(self.backup_root, phase.strip("-") or "train")

    def clear_partial(self) -> None:
        """Remove the logs of an interrupted run that left no backup (one with a backup resumes and keeps them)."""
        if os.path.isdir(self.backup_root):
            return
        for phase in ("", FINE_TUNE):
            shutil.rmtree(self.tensorboard(phase), ignore_errors=True)
            for path in (self.history(phase), self.trajectory(phase)):
                if os.path.exists(path):
                    os.remove(path)
        if os.path.exists(self.gamma):
            os.remove(self.gamma)
