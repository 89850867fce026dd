"""One owner per setting: a declaration in `keras_l2t.core.settings` reaches RunConfig, the app's flags and the key."""

import dataclasses
import os
import re
import sys
from pathlib import Path

import pytest
from conftest import load_app, tiny_image_folder

from keras_l2t.core import settings, user_modules
from keras_l2t.running import config
from keras_l2t.running.results import read_results
from keras_l2t.training import strategies


def test_a_setting_declared_once_reaches_config_flags_and_key(monkeypatch):
    declared = settings.Setting("temperature", 1.0, settings.positive(), "a softmax temperature")
    monkeypatch.setitem(settings.SETTINGS, "temperature", declared)
    run_config = config.make_run_config()
    assert run_config("scratch").temperature == 1.0  # the config has the field, with its default
    with pytest.raises(ValueError, match=r"temperature \(--temperature\) must be a positive number"):
        run_config("scratch", temperature=-1.0)
    args = load_app().parse(["--dataset", "cifar10", "--temperature", "2.5"])
    assert args.temperature == 2.5  # the app has the flag
    assert run_config("scratch", temperature=2.5).key != run_config("scratch").key  # and the key sees it


def test_every_flag_setting_is_a_flag_and_a_field(capsys):
    fields = {field.name for field in dataclasses.fields(config.RunConfig)}
    assert set(settings.SETTINGS) == fields
    with pytest.raises(SystemExit):
        load_app().parse(["--help"])
    help_text = capsys.readouterr().out
    assert all(setting.option in help_text for setting in settings.SETTINGS.values() if setting.flag)
    args = load_app().parse(["--dataset", "cifar10", "--batch-size", "7"])
    assert args.batch_size == 7 and "epochs" not in args  # a flag not given stays out: the preset's value holds


def test_a_strategy_setting_enters_only_the_key_of_runs_it_concerns():
    assert config.RunConfig("fm_uniform", meta_every=5).key == config.RunConfig("fm_uniform").key
    assert config.RunConfig("l2t_ww", meta_every=5).key != config.RunConfig("l2t_ww").key
    assert config.RunConfig("feature_extraction", last_blocks=3).key == config.RunConfig("feature_extraction").key
    assert config.RunConfig("fine_tune_last", last_blocks=3).key != config.RunConfig("fine_tune_last").key


def test_settings_added_later_keep_earlier_keys():
    base = config.RunConfig("full_fine_tune")
    fields = settings.key_fields(dataclasses.asdict(base), base.resolved)
    assert not {"weight_decay", "warmup_epochs", "matching_weight", "validate_every"} & set(fields)
    assert config.RunConfig("full_fine_tune", warmup_epochs=2).key != base.key


def test_none_means_no_weights_but_augment_none_is_an_augmentation():
    args = load_app().parse(["--dataset", "cifar10", "--weights", "none", "--augment", "none"])
    assert args.weights is None and args.augment == "none"
    assert config.RunConfig("scratch", augment=args.augment).augment == "none"


def test_flags_refuse_bad_values_with_what_they_expect(capsys):
    with pytest.raises(SystemExit):
        load_app().parse(["--dataset", "cifar10", "--last-blocks", "0"])
    assert "expected a whole number of at least 1, got '0'" in capsys.readouterr().err


def test_a_strategy_declares_its_own_defaults():
    assert config.RunConfig("lp_ft").fine_tune_epochs == 10  # LP-FT's second phase
    assert config.RunConfig("feature_extraction").fine_tune_epochs == 0
    assert config.RunConfig("lp_ft", fine_tune_epochs=3).fine_tune_epochs == 3  # the user's value wins
    with pytest.raises(ValueError, match="cannot be a strategy's option"):
        strategies.Strategy("bad", "classic", "a typo in its options", 1e-3, options={"fine_tune_epoch": 3})


def test_register_adds_a_strategy_that_runs_configs_and_build(monkeypatch):
    monkeypatch.setattr(strategies, "_REGISTRY", dict(strategies._REGISTRY))
    mine = strategies.Strategy("head_only", "classic", "a user's strategy", 3e-3, "none", options={"last_blocks": 1})
    strategies.register(mine)
    assert "head_only" in strategies.names("classic") and config.RunConfig("head_only").learning_rate is None
    with pytest.raises(ValueError, match="registered already"):
        strategies.register(dataclasses.replace(mine, learning_rate=1.0))
    model = strategies.build("head_only", num_classes=2, backbone="vgg9", weights=None, input_shape=(32, 32, 3))
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(3e-3)


def test_scratch_trains_with_either_family_by_its_declaration(monkeypatch):
    assert strategies.resolve("scratch", "matching").family == "matching"
    monkeypatch.setattr(strategies, "_REGISTRY", dict(strategies._REGISTRY))
    twin = strategies.Strategy(
        "my_scratch", "classic", "random init", 1e-3, pretrained=False, families=("classic", "matching")
    )
    strategies.register(twin)
    assert strategies.resolve("my_scratch", "matching").learning_rate == strategies.MATCHING_LEARNING_RATE
    with pytest.raises(ValueError, match="trains only with the matching loop"):
        strategies.resolve("fm_uniform", "classic")


def test_user_strategy_modules_are_imported_and_passed_to_workers(tmp_path, monkeypatch):
    (tmp_path / "my_strategies.py").write_text(
        "from keras_l2t import strategies\n"
        "strategies.register(strategies.Strategy('mine', 'classic', 'from a module', 1e-3, 'none'), replace=True)\n"
    )
    monkeypatch.chdir(tmp_path)  # beside the user, not on sys.path (a script's path starts with its own folder)
    monkeypatch.setattr(sys, "path", [path for path in sys.path if path not in ("", str(tmp_path))])
    monkeypatch.setattr(strategies, "_REGISTRY", dict(strategies._REGISTRY))
    monkeypatch.delenv(user_modules.IMPORTS_VARIABLE, raising=False)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    user_modules.import_modules(["my_strategies"])
    assert "mine" in strategies.names() and os.environ[user_modules.IMPORTS_VARIABLE] == "my_strategies"
    assert os.environ["PYTHONPATH"] == str(tmp_path)  # for the workers (the Ray executor forwards it)
    del sys.modules["my_strategies"]
    monkeypatch.setattr(strategies, "_REGISTRY", dict(strategies._REGISTRY))
    strategies._REGISTRY.pop("mine")
    assert strategies.spec("mine").description == "from a module"  # a worker: imports what the environment names
    del sys.modules["my_strategies"]  # imported again by that lookup: leave no module behind for other tests
    with pytest.raises(ImportError, match="on PYTHONPATH"):
        user_modules.import_modules(["no_such_module_here"])


def test_the_readme_s_strategy_module_runs_through_the_app(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    module_text = re.search(r"```python\n(# my_strategies\.py.*?)```", readme, re.S).group(1)
    (tmp_path / "my_strategies.py").write_text(module_text)
    monkeypatch.delitem(sys.modules, "my_strategies", raising=False)  # a module of that name imported before
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [path for path in sys.path if path not in ("", str(tmp_path))])
    monkeypatch.setattr(strategies, "_REGISTRY", dict(strategies._REGISTRY))
    for variable in (user_modules.IMPORTS_VARIABLE, "PYTHONPATH"):
        monkeypatch.delenv(variable, raising=False)
    folder = tiny_image_folder(tmp_path / "data", train=8, test=2)
    arguments = ["--import", "my_strategies", "--strategies", "l2_sp_strong", "--dataset", folder, "--backbone",
                 "vgg9", "--weights", "none", "--image-size", "32", "--epochs", "1", "--batch-size", "8",
                 "--validation", "3", "--quiet", "--out", str(tmp_path / "out")]  # fmt: skip
    assert load_app().main(arguments) == 0
    results = read_results(str(tmp_path / "out"))
    assert results["strategy"].tolist() == ["l2_sp_strong"]
    assert strategies.spec("l2_sp_strong").penalties.starting_point == 0.1
    del sys.modules["my_strategies"]
