"""A warm interpreter for the tests' ``python <script> ...`` commands.

Each command of the suite is a fresh ``python src/...`` process, and on a CI host its first 8-12 s are
spent importing torch, torchvision, torchmetrics and Lightning: most of a small run. This process
imports those libraries once, then forks one child per command. The child is what ``python <script>``
would be: its own process and session, the command's argv, working directory and environment,
stdout and stderr to files, ``sys.path`` the script's folder then ``PYTHONPATH``, fresh random seeds;
it runs the script as ``__main__`` and exits as the interpreter does. genlab itself is not imported here, so each command
imports it as a user's process does. DDP ranks, sweeps' job processes and the tests that time or kill a
process still start real interpreters.

Protocol, one JSON line each way on stdin / stdout: ``{"argv", "cwd", "env", "stdout", "stderr"}`` ->
``{"pid"}`` when the child starts, then ``{"returncode"}`` when it ends (negative: killed by that signal).
"""

import contextlib
import json
import os
import sys

START_ENV = dict(os.environ)
REQUESTS, REPLIES = os.dup(0), os.dup(1)

import numpy  # noqa: E402
import pytorch_lightning  # noqa: E402, F401
import torch  # noqa: E402, F401
import torchmetrics  # noqa: E402, F401
import torchvision  # noqa: E402, F401
from hydra import main  # noqa: E402, F401

#: What importing those libraries put in the environment (e.g. Lightning's PYTORCH_NVML_BASED_CUDA_CHECK):
#: a fresh process gets it from its own imports.
IMPORTED_ENV = {k: v for k, v in os.environ.items() if START_ENV.get(k) != v}


def run_child(request: dict) -> None:
    """In the forked child: become ``python <argv[1:]>`` and never return."""
    import atexit
    import faulthandler
    import random
    import runpy
    import threading

    os.setsid()
    os.close(REQUESTS)
    os.close(REPLIES)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update({**request["env"], **IMPORTED_ENV})
    random.seed()
    numpy.random.seed()
    if os.environ.get("PYTHONFAULTHANDLER"):
        faulthandler.enable()
    script = request["argv"][1]
    sys.argv = request["argv"][1:]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    sys.path[1:1] = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exit:
        if exit.code is None or isinstance(exit.code, int):
            code = exit.code or 0
        else:
            print(exit.code, file=sys.stderr)
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def reply(message: dict) -> None:
    os.write(REPLIES, (json.dumps(message) + "\n").encode())


def serve() -> None:
    reply({"ready": True})
    with os.fdopen(REQUESTS, "r", closefd=False) as requests:
        for line in requests:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                try:
                    run_child(json.loads(line))
                finally:
                    os._exit(1)
            reply({"pid": pid})
            _, status = os.waitpid(pid, 0)
            reply({"returncode": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    serve()
