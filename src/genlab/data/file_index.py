"""An image folder's file index: every image file listed and decoded once, the verdicts cached across starts.

Scraped folders hold corrupt files: truncated JPEGs, empty files, text saved as ``.jpg``, symlinks that point
nowhere. :func:`index_images` finds them before training (a DataLoader worker never meets one) by decoding
every file once, in threads, and caches the result in ``cache_dir`` keyed by the folder's resolved path. The
cache is reused while every directory of the folder keeps its modification time (adding, removing or renaming
a file changes its directory's), so a second start stats the directories and reads one JSON file. When it is
stale, files whose size and modification time are unchanged keep their verdict; only new or changed files
are decoded. A file overwritten in place within the same second and size is the one change not seen: touch
its folder (or delete the cache) after such an edit.

Hidden files and folders (``.name``: ``.ipynb_checkpoints``, macOS's ``._photo.jpg`` resource forks) and
``__MACOSX`` folders (left by unzipping a macOS archive) are not part of the data and are not listed.
"""

import contextlib
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from genlab.utils.files import atomic_write

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VERSION = 3  # 3: hidden files and folders left out


@dataclass
class FileIndex:
    """The image files of ``folder`` (sorted), and those that cannot be read with the reason."""

    folder: Path
    files: list[str]  # absolute paths
    bad: dict[Path, str]
    cached: bool  # True when read from the cache (nothing was decoded)


def check_image(path: Path) -> str | None:
    """Why ``path`` cannot be used as an image; None when it decodes completely."""
    if path.is_symlink() and not path.exists():
        return "a symlink that points nowhere"
    try:
        if path.stat().st_size == 0:
            return "an empty file"
        with Image.open(path) as img:
            img.load()
    except UnidentifiedImageError:
        return "not an image (PIL cannot identify its format)"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return f"truncated or corrupt ({e})"
    return None


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _walk(folder: Path) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
    """(directory -> mtime_ns, image file -> (size, mtime_ns)), paths relative to ``folder``."""
    dirs: dict[str, int] = {}
    files: dict[str, tuple[int, int]] = {}
    for top, subdirs, names in os.walk(folder):
        subdirs[:] = [d for d in subdirs if not _hidden(d)]  # os.walk descends into what is left
        rel_top = os.path.relpath(top, folder)
        dirs[rel_top] = os.stat(top).st_mtime_ns
        for name in names:
            if not _hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                path = os.path.join(top, name)
                try:
                    st = os.stat(path)
                except OSError:  # a broken symlink: listed, and refused by check_image
                    st = os.lstat(path)
                files[os.path.normpath(os.path.join(rel_top, name))] = (st.st_size, st.st_mtime_ns)
    return dirs, files


def _fresh(record: dict, folder: Path) -> bool:
    """Whether a cached index still describes ``folder``: same version and every directory unchanged."""
    if record.get("version") != VERSION or record.get("folder") != str(folder):
        return False
    try:
        return all(os.stat(folder / d).st_mtime_ns == t for d, t in record["dirs"].items())
    except OSError:
        return False


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path`` (DDP ranks starting together: one builds, the others read its cache)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): ranks build the same index each
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def index_images(folder: Path, cache_dir: str | Path | None = None, threads: int | None = None) -> FileIndex:
    """Every image file under ``folder`` (recursive, sorted) checked by :func:`check_image`; cached in
    ``cache_dir`` (None: built every time). The cache is two files: the index a start reads (the readable files,
    the unreadable ones, the directories' mtimes) and the files' sizes and mtimes, read only to rebuild."""
    folder = folder.resolve()
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"{hashlib.sha256(str(folder).encode()).hexdigest()[:16]}.json"
    with _locked(cache.with_suffix(".lock")) if cache else contextlib.nullcontext():
        record = json.loads(cache.read_text()) if cache and cache.is_file() else {}
        cached = _fresh(record, folder)
        if not cached:
            stats_file = cache.with_suffix(".stats.json") if cache else None
            previous = json.loads(stats_file.read_text()) if stats_file and stats_file.is_file() else {}
            record, stats = _build(folder, previous if record else {}, threads)
            if cache is not None:
                atomic_write(stats_file, lambda f: f.write(json.dumps(stats).encode()))
                atomic_write(cache, lambda f: f.write(json.dumps(record).encode()))
    root = str(folder)
    return FileIndex(
        folder,
        files=[f"{root}{os.sep}{rel}" for rel in record["files"]],  # strings: 100k Paths cost most of a start
        bad={folder / rel: why for rel, why in record["bad"].items()},
        cached=cached,
    )


def _build(folder: Path, previous: dict[str, list], threads: int | None) -> tuple[dict, dict]:
    """(index, per-file [size, mtime, why]): lists ``folder`` and decodes each file not in ``previous`` with the
    same size and mtime."""
    dirs, stats = _walk(folder)
    verdicts: dict[str, list] = {}
    todo = []
    for rel, (size, mtime) in stats.items():
        old = previous.get(rel)
        if old is not None and (old[0], old[1]) == (size, mtime):
            verdicts[rel] = old
        else:
            todo.append(rel)
    workers = threads or min(16, 2 * (os.cpu_count() or 1))  # decoding releases the GIL
    with ThreadPoolExecutor(workers) as pool:
        for rel, why in zip(todo, pool.map(lambda r: check_image(folder / r), todo)):
            verdicts[rel] = [*stats[rel], why]
    ordered = sorted(verdicts)
    index = {
        "version": VERSION,
        "folder": str(folder),
        "dirs": dirs,
        "files": [rel for rel in ordered if verdicts[rel][2] is None],
        "bad": {rel: verdicts[rel][2] for rel in ordered if verdicts[rel][2] is not None},
    }
    return index, verdicts
