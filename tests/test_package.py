import os
import subprocess
import sys

import pytest

BARE = "import keras_l2t, os, sys; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), 'tensorflow' in sys.modules)"
CONFIGURED = (
    "from keras_l2t import process; process.configure(); import os, tensorflow; "
    "print(os.environ['TF_ENABLE_ONEDNN_OPTS'])"
)


def _python(code: str, given: str | None = None) -> str:
    environment = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    if given is not None:
        environment["TF_ENABLE_ONEDNN_OPTS"] = given
    shown = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True)
    return shown.stdout.strip().splitlines()[-1]


def test_import_changes_no_process_setting_and_loads_no_tensorflow():
    assert _python(BARE) == "None False"


@pytest.mark.parametrize(("given", "expected"), [(None, "1"), ("0", "0")])
def test_configure_turns_on_onednn_unless_the_user_chose(given, expected):
    assert _python(CONFIGURED, given) == expected


def test_public_names_load_on_first_use():
    import keras_l2t

    assert keras_l2t.RunConfig.__name__ == "RunConfig" and keras_l2t.running.grid.__name__ == "keras_l2t.running.grid"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        keras_l2t.nope  # noqa: B018
