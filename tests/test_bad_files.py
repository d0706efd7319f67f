"""Data in the wild: a folder of images of mixed sizes and modes with every kind of unreadable file trains
(``data.on_bad_file=skip``, the exact list reported) or is refused at set-up (``error``), and the folder's
checked file index is cached across starts."""

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from genlab.data import file_index
from genlab.data.file_index import index_images
from genlab.pipeline import train
from tests.conftest import QUICK, assert_user_error, compose_train, run_script

MODES = ("RGB", "L", "RGBA", "P", "CMYK")


def write_wild_folder(root: Path, n: int = 40) -> dict[str, str]:
    """``n`` images of mixed sizes and modes in two subfolders, plus one file of each unreadable kind;
    returns the unreadable ones (relative path -> kind)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        mode, size = MODES[i % len(MODES)], (int(rng.integers(12, 90)), int(rng.integers(12, 90)))
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        img = Image.fromarray(pixels).convert(mode)
        folder = root / ("a" if i % 2 else "b/deep")
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"{i:03d}.{'jpg' if mode in ('CMYK', 'L') else 'png'}")
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (root / "a" / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "a" / "empty.png").write_bytes(b"")
    (root / "b" / "notes.jpg").write_text("not an image, whatever the extension says\n")
    os.symlink(root / "nowhere.png", root / "b" / "dangling.png")
    return {
        "a/truncated.jpg": "truncated or corrupt",
        "a/empty.png": "an empty file",
        "b/notes.jpg": "not an image",
        "b/dangling.png": "a symlink that points nowhere",
    }


def folder_run(root: Path, *extra: str) -> list[str]:
    return [
        *QUICK,
        "data=image_folder",
        f"data.root={root}",
        "data.resolution=32",
        "data.batch_size=8",
        *extra,
    ]


def test_skip_trains_and_reports_the_exact_list(tmp_path, caplog):
    bad = write_wild_folder(tmp_path / "wild")
    cfg = compose_train(folder_run(tmp_path / "wild", "data.num_workers=2"), tmp_path / "run")
    train(cfg)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    rows = [line.split("\t") for line in (tmp_path / "run" / "bad_files.txt").read_text().splitlines()]
    reported = {str(Path(path).relative_to((tmp_path / "wild").resolve())): why for path, why in rows}
    assert reported.keys() == bad.keys()
    for name, kind in bad.items():
        assert reported[name].startswith(kind), (name, reported[name])
    warnings = [r.getMessage() for r in caplog.records if "unreadable image file" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("Skipping 4 unreadable image file(s)"), warnings


def test_error_refuses_at_set_up_naming_the_file(tmp_path):
    write_wild_folder(tmp_path / "wild")
    args = [*folder_run(tmp_path / "wild", "data.on_bad_file=error"), f"hydra.run.dir={tmp_path / 'run'}"]
    proc = run_script("train.py", args, tmp_path, check=False)
    assert_user_error(
        proc, "a/empty.png is an empty file (and 3 more): remove it, or set data.on_bad_file=skip"
    )
    assert not (tmp_path / "run" / "checkpoints").exists(), "refused before training"


def test_the_index_is_cached_and_only_new_files_are_decoded(tmp_path, monkeypatch):
    bad = write_wild_folder(tmp_path / "wild")
    first = index_images(tmp_path / "wild", tmp_path / "cache")
    assert not first.cached and len(first.files) == 40 and len(first.bad) == len(bad)

    decoded: list[Path] = []
    check = file_index.check_image
    monkeypatch.setattr(file_index, "check_image", lambda path: decoded.append(path) or check(path))
    second = index_images(tmp_path / "wild", tmp_path / "cache")
    assert second.cached and decoded == [] and (second.files, second.bad) == (first.files, first.bad)

    Image.new("RGB", (20, 20)).save(
        tmp_path / "wild" / "b" / "deep" / "new.png"
    )  # its folder's mtime changes
    (tmp_path / "wild" / "a" / "empty.png").unlink()
    third = index_images(tmp_path / "wild", tmp_path / "cache")
    assert not third.cached and [p.name for p in decoded] == ["new.png"]
    assert len(third.files) == 41 and len(third.bad) == len(bad) - 1
    assert (
        third.files == sorted(third.files)
        and str(tmp_path / "wild" / "b" / "deep" / "new.png") in third.files
    )


def test_hidden_files_and_macos_leftovers_are_not_data(tmp_path):
    """A folder unzipped from a macOS archive holds ``__MACOSX/`` and ``._name`` resource forks (not images);
    Jupyter leaves ``.ipynb_checkpoints/``: none is listed, flagged as unreadable, or taken for a class."""
    from genlab.data.images import ImageFolderDataModule

    for name in ("cat/1.png", "cat/2.png", "dog/1.png", "dog/2.png", ".ipynb_checkpoints/1.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    for fork in ("cat/._1.png", "__MACOSX/cat/._1.png", "__MACOSX/dog/._2.png"):
        (tmp_path / fork).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / fork).write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    index = index_images(tmp_path, None)
    assert sorted(index.files) == sorted(
        str(tmp_path.resolve() / f) for f in ("cat/1.png", "cat/2.png", "dog/1.png", "dog/2.png")
    )
    assert not index.bad
    dm = ImageFolderDataModule(
        root=str(tmp_path), resolution=8, labels=True, val_fraction=0.25, num_workers=0
    )
    dm.setup()
    assert dm.class_names == ["cat", "dog"]
