"""keras_l2t: transfer learning with Keras 3, from frozen feature extractors to L2T-ww and L2T-www.

The code lives in six layers, each importing only the ones below it (checked by import-linter, see pyproject.toml):
`running` > `analysis` > `training` > `datasets` > `networks` > `core`. The public surface is one flat name per
module: `keras_l2t.strategies` is `keras_l2t.training.strategies` (the same module object, imported on first use),
as `keras.layers` stands over `keras/src/`. `PUBLIC_MODULES` lists them.

Importing the package loads nothing heavy and changes no process-wide setting: the modules (and TensorFlow) load
when first used, so that a script can call `keras_l2t.process.configure()` before TensorFlow starts.
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

_LAYERS = {
    "core": "hardware keras_internals paths process settings user_modules",
    "networks": "applications backbones catalog nets torch_checkpoint weight_formats weights",
    "datasets": "augment data folder_cache image_files sources splits",
    "training": "baselines builders callbacks features freezing l2t matching meta_health meta_schedule meta_step optim "
    "probe regularizers strategies",
    "analysis": "accuracy_plots intervals meta_plots ranking ranking_report report sequential stats transferability",
    "running": "backup config executors experiment grid inference model_files presets results trajectories tuning "
    "tuning_data tuning_report tuning_space",
}
PUBLIC_MODULES = {name: f"keras_l2t.{layer}.{name}" for layer, names in _LAYERS.items() for name in names.split()}
_NAMES = {
    "BackboneSpec": "keras_l2t.networks.backbones",
    "L2TModel": "keras_l2t.training.l2t",
    "RunConfig": "keras_l2t.running.config",
    "export": "keras_l2t.running.inference",
    "run": "keras_l2t.running.experiment",
    "WeightsError": "keras_l2t.networks.weights",
    "WeightsUnavailableError": "keras_l2t.networks.weights",
}

__all__ = [*_NAMES, *PUBLIC_MODULES, "PUBLIC_MODULES", "__version__"]


class _PublicNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import `keras_l2t.<module>` as the module that owns it (`PUBLIC_MODULES`): one module, two names."""

    def find_spec(self, fullname, path=None, target=None):
        """A spec for a public name; None for anything else."""
        package, _, name = fullname.partition(".")
        if package == __name__ and name in PUBLIC_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        """The owning module itself (imported now if it was not)."""
        module = importlib.import_module(PUBLIC_MODULES[spec.name.partition(".")[2]])
        self.owned_spec = module.__spec__  # the import system sets __spec__ to the public name's: restored below
        return module

    def exec_module(self, module):
        """Nothing to run: the owning module ran when it was imported."""
        module.__spec__ = self.owned_spec


if not any(isinstance(finder, _PublicNames) for finder in sys.meta_path):
    sys.meta_path.insert(0, _PublicNames())  # before an editable install's finder of an older layout


def __getattr__(name: str):
    """Load a public module or name on first use (PEP 562)."""
    if name in PUBLIC_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'keras_l2t' has no attribute {name!r}")
