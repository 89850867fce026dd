import os
import subprocess
import sys

import pytest

SHOW = "import keras_l2t, os, tensorflow; print(os.environ['TF_ENABLE_ONEDNN_OPTS'])"


@pytest.mark.parametrize(("given", "expected"), [(None, "1"), ("0", "0")])
def test_import_turns_on_onednn_unless_the_user_chose(given, expected):
    environment = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    if given is not None:
        environment["TF_ENABLE_ONEDNN_OPTS"] = given
    shown = subprocess.run([sys.executable, "-c", SHOW], env=environment, capture_output=True, text=True, check=True)
    assert shown.stdout.strip().splitlines()[-1] == expected
