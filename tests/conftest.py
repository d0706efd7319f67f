"""Shared fixtures: real Hydra composition of conf/, real data from ../shared, run helpers."""

import contextlib
import functools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from genlab.families import CONDITIONAL_FAMILIES, FAMILIES, IMAGE_FAMILIES

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED = Path(os.environ.get("GENLAB_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data"
FID_WEIGHTS = SHARED / "weights" / "fid_inception_v3_2015_12_05.pth"

os.environ["GENLAB_ROOT"] = str(ROOT)
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("GENLAB_FID_WEIGHTS", None)  # tests pass the weights explicitly

# Under pytest-xdist (`-n 2`, as CI runs) the workers share the cores: each process, and every process it
# starts, gets its share of threads (oversubscribed OpenMP threads spin and slow both workers down).
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    THREADS = max(1, (os.cpu_count() or 1) // WORKERS)
    os.environ["OMP_NUM_THREADS"] = str(THREADS)
    torch.set_num_threads(THREADS)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found: set GENLAB_SHARED to the shared data folder")
    return path


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    return _require(DATA / "MNIST").parent


@pytest.fixture(scope="session")
def fid_weights() -> Path:
    return _require(FID_WEIGHTS)


def compose_train(overrides: list[str], tmp_path: Path, config_name: str = "train") -> DictConfig:
    """Compose conf/<config_name>.yaml as src/train.py would, writing into ``tmp_path``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.cache_dir = str(tmp_path / "cache")
    return cfg


def abort_group(pid: int) -> None:
    """SIGABRT to the process group ``pid`` leads (``PYTHONFAULTHANDLER`` dumps each process's stacks), then
    SIGKILL five seconds later."""
    os.killpg(pid, signal.SIGABRT)
    time.sleep(5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


class WarmLauncher:
    """Runs ``python <script> ...`` commands as children of one warm interpreter (tests/launcher.py) that has
    imported torch, torchvision, torchmetrics and Lightning once: each command skips their 8-12 s import.
    ``GENLAB_TEST_FRESH=1`` starts every command as a new interpreter instead."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("launcher.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        self.pending = b""
        assert self.receive(None) == {"ready": True}

    def receive(self, deadline: float | None) -> dict | None:
        """The launcher's next reply; None if ``deadline`` (monotonic) passes first."""
        while b"\n" not in self.pending:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.proc.stdout], [], [], wait)[0]:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError("the warm launcher exited")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def run(self, argv: list[str], timeout: float, cwd: Path, env: dict) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
            request = {"argv": argv, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)}
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
            pid = self.receive(None)["pid"]
            done = self.receive(time.monotonic() + timeout)
            if done is None:
                abort_group(pid)
                self.receive(None)
                pytest.fail(
                    f"{' '.join(argv)} ran past {timeout} s; its stacks:\n"
                    f"{out.read_text()[-3000:]}\n{err.read_text()[-20000:]}"
                )
            return subprocess.CompletedProcess(argv, done["returncode"], out.read_text(), err.read_text())


WARM_SETTINGS = {"PYTHONPATH", "PYTHONFAULTHANDLER"}  # the warm launcher's children apply these themselves


def same_interpreter_settings(env: dict) -> bool:
    """Whether ``env`` sets the interpreter's start-up options (``PYTHON*``, e.g. ``PYTHONPROFILEIMPORTTIME``)
    as the warm launcher started with, so that one of its children is what a new interpreter would be."""
    keys = {k for k in {*env, *os.environ} if k.startswith("PYTHON")} - WARM_SETTINGS
    return all(env.get(k) == os.environ.get(k) for k in keys)


@functools.cache
def warm_launcher() -> WarmLauncher | None:
    return None if os.environ.get("GENLAB_TEST_FRESH") == "1" else WarmLauncher()


def run_bounded(argv: list[str], timeout: int, **popen) -> subprocess.CompletedProcess:
    """``subprocess.run(argv, capture_output=True, text=True)`` that, past ``timeout`` seconds, fails with
    every Python stack of the command's processes (its DDP ranks included): each is sent SIGABRT, which
    ``PYTHONFAULTHANDLER`` turns into a dump of its threads on the shared stderr, then the group is killed.
    A ``python <script>.py`` command runs from the warm launcher (:class:`WarmLauncher`)."""
    env = {**popen.pop("env", os.environ), "PYTHONFAULTHANDLER": "1"}
    script = argv[0] == sys.executable and argv[1].endswith(".py") and set(popen) <= {"cwd"}
    launcher = warm_launcher() if script and same_interpreter_settings(env) else None
    if launcher is not None:
        return launcher.run(argv, timeout, Path(popen.get("cwd", os.getcwd())), env)
    with subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **popen,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            abort_group(proc.pid)
            stdout, stderr = proc.communicate()
            pytest.fail(
                f"{' '.join(argv)} ran past {timeout} s; its stacks:\n{stdout[-3000:]}\n{stderr[-20000:]}"
            )
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def run_script(
    script: str,
    args: list[str],
    tmp_path: Path,
    timeout: int = 600,
    env: dict | None = None,
    check: bool = True,
    cwd: Path = ROOT,
):
    """Run ``python src/<script> args`` as a user would (from ``cwd``, by default the checkout); returns the
    CompletedProcess (check: exit 0)."""
    full_env = {**os.environ, "GENLAB_CACHE": str(tmp_path / "cache"), **(env or {})}
    proc = run_bounded([sys.executable, str(ROOT / "src" / script), *args], timeout, cwd=cwd, env=full_env)
    assert not check or proc.returncode == 0, (
        f"{script} {args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    return proc


# Small networks of the image families and of the GPT (genlab.families), shared by the tests that train real runs.
SMALL = {name: list(FAMILIES[name].small) for name in IMAGE_FAMILIES}
TINY_GPT = list(FAMILIES["gpt"].small)

# Small, quick settings shared by the training tests (a few batches of digits, no FID).
QUICK = [
    "trainer=cpu",
    "trainer.max_epochs=2",
    "+trainer.limit_train_batches=4",
    "+trainer.limit_val_batches=1",
    "model.generator.width=16",
    "model.discriminator.width=16",
    "metrics=null",
    "optimized_metric=null",
    "callbacks.progress_bar=null",
    "callbacks.sample_accuracy.classifier_steps=30",  # conditional runs: a quick classifier, few samples
    "callbacks.sample_accuracy.num_samples=20",
]


LABELLED = "+labels"  # a family's class-conditional variant: "gan+labels" trains on (image, label) pairs
VARIANTS = [*FAMILIES, *(name + LABELLED for name in CONDITIONAL_FAMILIES)]  # every family, both ways


def quick_run(name: str) -> list[str]:
    """A few batches of family ``name``'s smallest model on its quickest data (two epochs, no FID);
    ``<family>+labels`` is the family's class-conditional variant."""
    family = FAMILIES[name.removesuffix(LABELLED)]
    extra = ["callbacks.text_samples.max_new_tokens=4"] if family.modality == "text" else []
    extra += ["data.labels=true"] if name.endswith(LABELLED) else []
    return [
        f"model={family.name}",
        *family.data,
        *family.small,
        *[q for q in QUICK if not q.startswith("model.")],
        *extra,
    ]


def assert_user_error(proc, message: str) -> None:
    """A user error as a user sees it: non-zero exit, one ``Error:`` line holding ``message``, no traceback."""
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"expected a failure:\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and message in errors[0], (
        f"expected one 'Error: ...{message}...' line:\n{output[-3000:]}"
    )


@contextlib.contextmanager
def local_server(
    argv: Callable[[int], list[str]], ready_path: str = "/", timeout: float = 60
) -> Iterator[str]:
    """A real server process, ``argv(port)``, on a free 127.0.0.1 port: yields its base URL once ``ready_path``
    answers 200, and stops it at the end."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(  # its own process group: its workers (MLflow's gunicorn) stop with it
        argv(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if urllib.request.urlopen(url + ready_path, timeout=1).status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail(f"{argv(port)[:4]} did not start")
                time.sleep(0.2)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
