"""The warm launcher (tests/launcher.py) runs a script as a new interpreter would: same argv, ``__main__``,
``sys.path``, working directory, environment, output and exit status; its own random state."""

import json
import subprocess
import sys

from tests.conftest import warm_launcher

SCRIPT = """
import json, os, random, sys
import __main__
print(json.dumps({
    "argv": sys.argv, "path": sys.path[:2], "name": __name__, "spec": __main__.__spec__ is None,
    "cwd": os.getcwd(), "probe": os.environ.get("PROBE"), "random": random.random(),
}))
sys.exit("Error: stopped as asked")
"""


def test_a_warm_child_is_what_a_new_interpreter_would_be(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    (tmp_path / "work").mkdir()
    argv = [sys.executable, str(script), "a=1", "b=two words"]
    env = {"PROBE": "yes", "PYTHONPATH": str(tmp_path / "extra"), "PATH": "/usr/bin:/bin"}
    fresh = subprocess.run(argv, cwd=tmp_path / "work", env=env, capture_output=True, text=True)
    launcher = warm_launcher()
    assert launcher is not None, "GENLAB_TEST_FRESH=1: nothing to compare"
    warm = [launcher.run(argv, 60, tmp_path / "work", env) for _ in range(2)]
    for run in warm:
        assert run.returncode == fresh.returncode == 1
        assert run.stderr == fresh.stderr == "Error: stopped as asked\n"
    seen = [json.loads(r.stdout) for r in (fresh, *warm)]
    randoms = {s.pop("random") for s in seen}
    assert len(randoms) == 3, "each child draws its own random numbers"
    assert seen[1] == seen[2] == seen[0]
    assert seen[0]["path"] == [str(tmp_path), str(tmp_path / "extra")]
