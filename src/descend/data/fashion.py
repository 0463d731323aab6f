"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017): 60 000 training and 10 000 test images, 28×28 grey,
10 classes.

Where the four IDX files are looked for, first found wins:

1. the ``path`` option (a folder; from Python or the config's ``data.path``),
2. ``$DESCEND_DATA`` (a folder holding the files, or holding ``fashion-mnist/`` with them),
3. ``/usr/share/datasets/fashion-mnist`` (Debian: ``sudo apt-get install dataset-fashion-mnist``),
4. the official download, only when asked for (``download=True`` or ``DESCEND_DOWNLOAD=1``): fetched with a
   short timeout into ``<cache>/fashion-mnist`` (``$DESCEND_CACHE`` or ``~/.cache/descend``).
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from descend.data.files import cache_dir, is_file, read_idx
from descend.errors import UserError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
TIMEOUT_S = 10.0
FILES = {
    "x": "train-images-idx3-ubyte",
    "y": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
HOW_TO_INSTALL = (
    "install it with `sudo apt-get install dataset-fashion-mnist`, or set DESCEND_DATA to a "
    "folder holding its four IDX files (train/t10k-images-idx3-ubyte and -labels-idx1-ubyte, "
    ".gz or not)"
)
HOW_TO_GET = HOW_TO_INSTALL + ", or allow the official download with download=True (or DESCEND_DOWNLOAD=1)"


def _files_in(folder: Path) -> dict[str, Path] | None:
    found = {}
    for key, stem in FILES.items():
        for name in (stem + ".gz", stem):
            if is_file(folder / name):
                found[key] = folder / name
                break
        else:
            return None
    return found


def candidate_dirs(path: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched, in order (without the download cache unless it already holds the files)."""
    dirs = []
    if path is not None:
        dirs.append(Path(path).expanduser())
    env = os.environ.get("DESCEND_DATA")
    if env:
        dirs += [Path(env).expanduser(), Path(env).expanduser() / "fashion-mnist"]
    dirs += [DEBIAN_DIR, cache_dir() / "fashion-mnist"]
    return dirs


def locate(path: str | os.PathLike | None = None) -> dict[str, Path] | None:
    """The four files of the first folder that has them all, or ``None``."""
    if path is not None:
        found = _files_in(Path(path).expanduser())
        if found is None:
            raise UserError(
                f"path {str(path)!r} does not hold the Fashion-MNIST IDX files "
                f"({', '.join(FILES.values())}, .gz or not); {HOW_TO_GET}"
            )
        return found
    for folder in candidate_dirs():
        found = _files_in(folder)
        if found is not None:
            return found
    return None


def download(folder: Path, *, url: str | None = None, timeout: float = TIMEOUT_S) -> dict[str, Path]:
    """Fetch the four ``.gz`` files into ``folder``. Each is written to a temp file and renamed when complete;
    on any failure the temp files are removed and a UserError says what happened and the other ways."""
    base = url or URL
    fetched: list[Path] = []
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for stem in FILES.values():
            target = folder / (stem + ".gz")
            if target.is_file():
                continue
            fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=folder)
            try:
                with (
                    os.fdopen(fd, "wb") as f,
                    urllib.request.urlopen(base + target.name, timeout=timeout) as r,
                ):
                    f.write(r.read())
                os.replace(tmp, target)
                fetched.append(target)
            finally:
                Path(tmp).unlink(missing_ok=True)
    except (OSError, urllib.error.URLError) as e:
        for p in fetched:
            p.unlink(missing_ok=True)
        for p in created:  # deepest first: leave no empty folder behind
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        raise UserError(
            f"Fashion-MNIST download from {base} failed ({e}); instead {HOW_TO_INSTALL}"
        ) from None
    found = _files_in(folder)
    assert found is not None
    return found


def load_arrays(path: str | os.PathLike | None = None, download_ok: bool = False) -> tuple[dict, str]:
    """``({"x", "y", "x_test", "y_test"} arrays, source)``; images uint8 of shape (N, 28, 28)."""
    found = locate(path)
    if found is None:
        if not (download_ok or os.environ.get("DESCEND_DOWNLOAD") == "1"):
            raise UserError(f"dataset 'fashion_mnist' is not installed; {HOW_TO_GET}")
        found = download(cache_dir() / "fashion-mnist")
    arrays = {key: read_idx(p) for key, p in found.items()}
    for split in ("", "_test"):
        x, y = arrays["x" + split], arrays["y" + split]
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (x.shape[0],):
            raise UserError(
                f"Fashion-MNIST files in {str(found['x'].parent)!r} have unexpected shapes "
                f"{x.shape} and {y.shape}; expected (N, 28, 28) images and (N,) labels"
            )
    return arrays, f"Fashion-MNIST IDX files in {found['x'].parent}"
