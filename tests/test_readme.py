"""The README is executable: every ``python src/...`` and ``python bench/...`` command of its code blocks
runs as written, with small-size overrides appended and data pointed at test folders.

A command that needs hardware this machine lacks (a GPU, SLURM) must compose and stop with the
project's one-line message. Placeholders: ``outputs/<gan-run>`` (``<vae-run>``, ``<diffusion-run>``,
``<gpt-run>``) is the run dir of a small training run of that family made here; ``data.root`` /
``data.path`` point at the test copy of the dataset the command names. A new README command is
tested by this module without a new test.
"""

import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from genlab.cli import quoted_overrides, trainer_overrides
from genlab.data.shards import write_shards
from genlab.families import FAMILIES as REGISTRY
from tests.conftest import (
    CONF,
    DATA,
    ROOT,
    SHARED,
    assert_user_error,
    compose_train,
    run_bounded,
    run_script,
)
from tests.datasets import (
    write_celeba,
    write_cifar10,
    write_fashion_mnist,
    write_image_folder,
    write_tiny_gpt2,
)

pytestmark = pytest.mark.slow

PLACEHOLDER = re.compile(r"outputs/<(\w+)-run>")


def model_target(name: str) -> str:
    """The class ``conf/model/<name>.yaml`` builds (a ``@package _global_`` file nests it under ``model``)."""
    node = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    return node.get("_target_") or node.model._target_


FAMILIES = {model_target(name): name for name in REGISTRY}  # model class -> family (genlab.families)
TINY = {name: [f"++{o}" for o in family.small] for name, family in REGISTRY.items()}
TINY["gpt"] += ["++model.bleu_samples=4"]
SHORT = [  # any trainer config: two short epochs
    "++trainer.max_epochs=2",
    "++trainer.max_steps=-1",
    "++trainer.val_check_interval=null",
    "++trainer.limit_train_batches=2",
    "++trainer.limit_val_batches=1",
    "++trainer.limit_test_batches=1",
    "++callbacks.progress_bar=null",
]
SMALL_FID = [
    "++metrics.num_samples=8",
    "++metrics.max_real=8",
    "++metrics.batch_size=8",
    "++metrics.every_n_epochs=1",
]
SMALL_SAMPLES = ["metrics.max_real=8", "metrics.batch_size=8"]  # eval.py samples= / export_reference=
DATA_ROOTS = {  # datamodule -> key of the test folder in its layout
    "MNISTDataModule": "mnist",
    "FashionMNISTDataModule": "fashion_mnist",
    "CIFAR10DataModule": "cifar10",
    "CelebADataModule": "celeba",
    "ImageFolderDataModule": "image_folder",
    "ParallelDataModule": "parallel",
}
HARDWARE_MESSAGES = ("CUDA GPU", "GPU(s) are visible", "needs CUDA", "sbatch")


def readme_commands() -> list[list[str]]:
    """Every ``python src/...`` / ``python bench/...`` command in the README's bash blocks, as argv."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        for line in block.splitlines():
            for part in line.split("#")[0].split("&&"):
                argv = shlex.split(part)
                argv = argv[1:] if argv[:1] == ["srun"] else argv  # SLURM's launcher: absent here
                if argv[:1] == ["python"] and argv[1].startswith(("src/", "bench/")):
                    commands.append(argv[1:])
    return commands


COMMANDS = readme_commands()


def test_the_readme_holds_the_commands_it_promises():
    scripts = {c[0] for c in COMMANDS}
    assert {"src/train.py", "src/eval.py", "src/sample.py"} <= scripts and len(COMMANDS) > 40
    assert ["src/train.py"] in COMMANDS and any("trainer.devices=2" in c for c in COMMANDS)


@pytest.fixture(scope="module")
def places(tmp_path_factory, fid_weights) -> dict:
    """Test folders in each dataset's layout and one small run per family (1 epoch, so commands resume)."""
    root = tmp_path_factory.mktemp("readme")
    if not (DATA / "MNIST").is_dir() or not (DATA / "multi30k").is_dir():
        pytest.skip(f"{DATA} lacks MNIST or multi30k: set GENLAB_SHARED")
    write_celeba(root / "celeba" / "img_align_celeba", n=48)  # 2 val images: one per DDP rank
    data = {
        "mnist": DATA,
        "fashion_mnist": write_fashion_mnist(root / "fashion"),
        "cifar10": write_cifar10(root / "cifar", per_batch=8),
        "celeba": root / "celeba",
        "image_folder": write_image_folder(root / "folder", per_folder=10),  # 2 val images for FID
        # ... and one corrupt file, as scraped folders have: data.on_bad_file=skip (default) leaves it out
        "parallel": DATA / "multi30k",
    }
    run_args = {
        "gan": ["model=gan"],
        "vae": ["model=vae"],
        # sampler=ddpm: T steps; labelled data, so class-conditional (per_class=, labels=, guidance=)
        "diffusion": ["model=diffusion", "model.timesteps=50", "data.resolution=16", "data.labels=true"],
        "gpt": ["model=gpt", "data=text_file", f"data.path={DATA / 'tinyshakespeare' / 'input.txt'}"],
    }
    (root / "folder" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    shards = (
        root / "shards"
    )  # what `src/shard.py ... out=shards/mnist` writes, smaller: 11 shards of 100 per split
    shard_args = [f"data.root={DATA}", f"out={shards / 'mnist'}", "shard_size=100", "max_samples=1100"]
    write_shards(compose_train([*shard_args, "splits=[train,val]"], root / "shard-cfg", "shard"))
    runs = {}
    for family, args in run_args.items():
        small = [*TINY[family], *SHORT, "++trainer.max_epochs=1"] + (SMALL_FID if family != "gpt" else [])
        small += [f"metrics.fid.weights_path={fid_weights}"] if family != "gpt" else []
        run = root / f"{family}-run"
        from genlab.pipeline import train

        train(compose_train([*args, *small, "callbacks.progress_bar=null"], run))
        runs[family] = run
    from genlab.export import export_run

    export_run(compose_train([f"ckpt_path={runs['gan']}"], root / "export-cfg", "export"))  # <gan-run>/export
    book = (DATA / "tinyshakespeare" / "input.txt").read_text()[:100_000]
    files = image_files(root / "files", fid_weights)
    files["<gpt2-folder>"] = write_tiny_gpt2(root / "gpt2", book, n_positions=256)  # model.init_from offline
    jsonl = root / "corpus.jsonl"  # the book's speeches as records, as a corpus exports them
    speeches = [{"id": i, "text": speech} for i, speech in enumerate(book.split("\n\n"))]
    jsonl.write_text("".join(json.dumps(record) + "\n" for record in speeches))
    return {
        "data": data,
        "runs": runs,
        "weights": fid_weights,
        "files": files,
        "shards": shards,
        "jsonl": jsonl,
    }


def image_files(folder: Path, weights: Path) -> dict[str, Path]:
    """What ``<samples-folder>``, ``<samples.npz>`` and ``<stats.npz>`` stand for: 8 MNIST test images as PNGs
    and as an .npz, and the statistics of 8 MNIST validation images (written by ``export_reference``)."""
    from genlab.data.images import MNISTDataModule
    from genlab.metrics.inception import to_uint8
    from genlab.pipeline import evaluate

    dm = MNISTDataModule(root=str(DATA), resolution=32, channels=1)
    dm.setup("test")
    pixels = to_uint8(torch.stack([dm.test_set[i] for i in range(8)]))[:, 0].numpy()
    (folder / "samples").mkdir(parents=True)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / "samples" / f"{i}.png")
    np.savez(folder / "samples.npz", arr_0=pixels)
    stats = folder / "stats.npz"
    args = [
        f"export_reference={stats}",
        "data=mnist",
        f"data.root={DATA}",
        f"metrics.fid.weights_path={weights}",
    ]
    evaluate(compose_train([*args, *SMALL_SAMPLES], folder / "export", config_name="eval"))
    return {
        "<samples-folder>": folder / "samples",
        "<samples.npz>": folder / "samples.npz",
        "<stats.npz>": stats,
    }


def composed(overrides: list[str]) -> DictConfig:
    """conf/train.yaml with a command's overrides (read as src/train.py reads them), sweep lists and Hydra's
    own keys left out."""
    plain = [o for o in overrides if not o.startswith(("-", "hydra")) and not re.search(r"=[^\[]*,", o)]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        typed = quoted_overrides(plain)
        return compose("train", overrides=trainer_overrides(typed, CONF / "trainer" / "default.yaml"))


def point_at_run(arg: str, places: dict) -> str:
    """``outputs/<family-run>[/checkpoints/<file>]`` -> that run made here (its file of the same kind)."""
    if not (match := PLACEHOLDER.search(arg)):
        return arg
    key, _, value = arg.partition("=")
    path = Path(PLACEHOLDER.sub(str(places["runs"][match.group(1)]), value))
    if not path.exists():
        path = next(path.parent.glob(re.sub(r"\d+", "*", path.name)))
    return f"{key}={path}"


def point_at_files(arg: str, places: dict) -> str:
    """``<samples-folder>``, ``<samples.npz>``, ``<stats.npz>``, ``<gpt2-folder>`` -> files made here."""
    for placeholder, path in places["files"].items():
        arg = arg.replace(placeholder, str(path))
    return arg


def point_at_shards(arg: str, places: dict, tmp_path: Path) -> str:
    """``out=shards/...`` -> this test's folder; ``"shards/..."`` shard patterns -> the shards made here."""
    if arg.startswith("out=shards/"):
        return f"out={tmp_path / arg.removeprefix('out=')}"
    return arg.replace('"shards/', f'"{places["shards"]}/')


def point_at_test_data(arg: str, cfg: DictConfig | None, places: dict) -> str:
    """``data.root`` / ``data.path`` -> the test copy of the dataset the command names."""
    if arg.startswith("data.root=") and cfg is not None:
        return f"data.root={places['data'][DATA_ROOTS[cfg.data._target_.rsplit('.', 1)[-1]]]}"
    if arg.startswith("data.path="):
        return f"data.path={places['jsonl'] if arg.endswith('.jsonl') else DATA / 'tinyshakespeare' / 'input.txt'}"
    return arg.replace("../shared", str(SHARED))


def needs_absent_hardware(args: list[str], cfg: DictConfig | None) -> bool:
    if "hydra/launcher=slurm" in args and shutil.which("sbatch") is None:
        return True
    if cfg is None or torch.cuda.is_available():
        return False
    strategy = str(cfg.trainer.get("strategy") or "")
    return cfg.trainer.accelerator in ("gpu", "cuda") or "FSDP" in strategy


def needs_network(args: list[str]) -> bool:
    """Pretrained weights by Hub name (no local folder): this machine, like CI, is offline."""
    names = [a.split("=", 1)[1] for a in args if a.startswith("model.init_from=")]
    return any(not Path(name).exists() for name in names)


def family_of(args: list[str], cfg: DictConfig | None) -> str | None:
    for arg in args:
        if match := PLACEHOLDER.search(arg):
            return match.group(1)
    return FAMILIES[cfg.model._target_] if cfg is not None else None


def small_overrides(script: str, args: list[str], cfg: DictConfig | None, family: str) -> list[str]:
    """What makes the command small: sizes, epochs, sample counts; nothing that changes what it does."""
    if script == "src/train.py":
        extra = [*TINY[family], *SHORT]
        extra += SMALL_FID if cfg.get("metrics") is not None else []
        extra += ["++callbacks.text_samples.max_new_tokens=4"] if cfg.callbacks.get("text_samples") else []
        extra += ["++hydra.sweeper.n_trials=2"] if any(a.startswith("hparams_search=") for a in args) else []
        return extra
    if script == "src/eval.py" and any(a.startswith(("samples=", "export_reference=")) for a in args):
        return SMALL_SAMPLES
    if script == "src/eval.py":
        extra = ["++trainer.limit_val_batches=2", "++trainer.limit_test_batches=2"]
        if family != "gpt":
            extra += ["num_samples=8", "+overrides.metrics.max_real=8", "+overrides.metrics.batch_size=8"]
        extra += ["+overrides.model.iw_samples=20"] if any("iw_samples" in a for a in args) else []
        return extra
    if script == "src/export.py":
        return []
    if script == "src/shard.py":
        return ["max_samples=300"]
    return ["num_samples=4", "max_new_tokens=8", "batch_size=4"]  # src/sample.py


def without(args: list[str], keys: list[str]) -> list[str]:
    """``args`` minus the ones that set any of ``keys`` (replaced by the small overrides)."""
    names = {k.lstrip("+").split("=")[0] for k in keys}
    return [a for a in args if a.split("=")[0].lstrip("+") not in names]


# Marked `long` (CI leaves them out; `python -m pytest -m long` runs them as written): the benchmarks' --quick runs,
# and commands whose feature a faster test covers in CI (named beside each), to keep CI within its time.
COVERED_ELSEWHERE = {
    "-m": "tests/test_sweeps.py (multirun summaries, DDP jobs)",
    "hparams_search=": "tests/test_sweeps.py (Optuna, its resume, under DDP), tests/test_configs.py (every config)",
    "logger=mlflow": "tests/test_mlflow.py (a real MLflow server)",
    "model.loss=wgan_gp": "tests/test_gan.py",
    "model.loss=hinge": "tests/test_gan.py",
    "metrics.prc.enabled=true": "tests/test_eval_suite.py",
    "model.schedule=cosine": "tests/test_families.py, tests/test_samplers.py",
    "model.likelihood=bernoulli": "tests/test_families.py",
    "data.on_bad_file=skip": "tests/test_bad_files.py (and every image_folder command here: a corrupt file)",
    "+overrides.model.iw_samples=100": "the iw_samples=5000 command",
}


def long_command(command: list[str]) -> bool:
    bench = command[0].startswith("bench/") and command[1:] != ["--check"]
    return bench or any(arg == key or arg.startswith(key) for arg in command for key in COVERED_ELSEWHERE)


@pytest.mark.parametrize(
    "command",
    [pytest.param(c, marks=pytest.mark.long) if long_command(c) else c for c in COMMANDS],
    ids=[" ".join(c)[:90] for c in COMMANDS],
)
def test_readme_command_runs_as_written(command, places, tmp_path):
    script, args = command[0], command[1:]
    if script.startswith("bench/"):
        proc = run_bounded([sys.executable, script, *args, "--quick"], 900, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return
    family = family_of(args, None)  # of a ``<family-run>`` placeholder, read before it is replaced
    args = [point_at_shards(point_at_files(point_at_run(a, places), places), places, tmp_path) for a in args]
    cfg = composed(args) if script == "src/train.py" else None
    args = [point_at_test_data(a, cfg, places) for a in args]
    args = [a.replace("sqlite:///outputs/", f"sqlite:///{tmp_path}/") for a in args]  # a fresh Optuna study
    family = family or family_of(args, cfg)
    small = small_overrides(script, args, cfg, family)
    run, sweep = tmp_path / "run", tmp_path / "sweep"
    argv = [*without(args, small), *small, f"hydra.run.dir={run}", f"hydra.sweep.dir={sweep}"]
    env = {"GENLAB_FID_WEIGHTS": str(places["weights"]), "HYDRA_FULL_ERROR": "", "HF_HUB_OFFLINE": "1"}
    proc = run_script(script.removeprefix("src/"), argv, tmp_path, env=env, check=False, timeout=900)
    if needs_absent_hardware(args, cfg):
        assert_user_error(proc, "")
        assert any(m in proc.stderr for m in HARDWARE_MESSAGES), proc.stderr[-2000:]
        return
    if needs_network(args):
        assert_user_error(proc, "Hugging Face Hub is unreachable")
        return
    assert proc.returncode == 0, f"{' '.join(argv)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert "HINT: Did you call" not in proc.stdout + proc.stderr, "Lightning's hint at a family's own metric"
    assert_command_output(script, sweep if (sweep / "summary.json").exists() else run)


def assert_command_output(script: str, out: Path) -> None:
    """What the command promises on disk: metrics (every sweep job completed), samples."""
    if (out / "summary.json").exists():
        jobs = json.loads((out / "summary.json").read_text())
        assert jobs and all(job["status"] == "completed" for job in jobs), jobs
    elif script == "src/export.py":
        assert "Exported" in (out / "export.log").read_text()
    elif script == "src/shard.py":
        assert "samples in" in (out / "shard.log").read_text()
    elif script in ("src/train.py", "src/eval.py"):
        assert json.loads((out / "metrics.json").read_text()), "metrics.json written"
    else:
        assert list(out.glob("grid.png")) or list(out.glob("samples.*")), list(out.iterdir())
