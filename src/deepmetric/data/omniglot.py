"""Omniglot handwritten characters (Lake, Salakhutdinov & Tenenbaum 2015, Science), read from its zip.

The released zips (e.g. ``images_background_small1.zip``: 5 alphabets, 136 characters x 20
drawings) hold ``<top>/<alphabet>/<characterNN>/<NNNN_XX>.png``. Each *character* is a class,
named ``"<alphabet>/<characterNN>"``. Images are read straight from the zip (never extracted); the
1-bit drawings are returned as RGB (black strokes on white).

Zero-shot split (:func:`omniglot_split`): test classes are characters never seen in training.

* ``split_by="characters"`` (default): within every alphabet, ``round(n * test_fraction)``
  characters chosen with ``seed`` go to test (at least one per alphabet with two or more), so
  both sides see every alphabet but never the same character.
* ``split_by="alphabets"``: whole alphabets go to test (the stricter Omniglot
  background/evaluation protocol).

With no ``root`` the copy embedded in the package (``deepmetric/assets/omniglot``) is used.
"""

from __future__ import annotations

import os
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image

from deepmetric.data.image_dataset import ImageDataset, Transform, index_labels
from deepmetric.data.image_io import decode_image, is_image_file
from deepmetric.data.splits import split_classes, stratified_split
from deepmetric.errors import ConfigError, DataError

EMBEDDED_ZIP = "assets/omniglot/images_background_small1.zip"


def embedded_omniglot_zip() -> Path:
    """Path of the Omniglot zip shipped inside the package."""
    path = Path(str(resources.files("deepmetric") / EMBEDDED_ZIP))
    if not path.is_file():
        raise DataError(
            f"the embedded Omniglot data ({EMBEDDED_ZIP}) is missing from this installation; reinstall "
            "deepmetric or pass root=/path/to/images_background_small1.zip"
        )
    return path


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise DataError(f"Omniglot zip {path} does not exist; pass the path of images_background_small1.zip (or similar)")
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{path} is not a valid zip file ({exc}); download the Omniglot zip again") from exc


def scan_omniglot_zip(path: str | Path) -> tuple[list[str], list[str]]:
    """``(member names, character key of each)`` for every PNG drawing in the zip, sorted."""
    path = Path(path).expanduser()
    with _open_zip(path) as archive:
        members = sorted(n for n in archive.namelist() if not n.endswith("/") and is_image_file(n))
    characters = []
    for member in members:
        parts = member.split("/")
        if len(parts) < 3:
            raise DataError(
                f"{path}: member '{member}' is not in the layout <alphabet>/<character>/<image>.png; is this an Omniglot zip?"
            )
        characters.append(f"{parts[-3]}/{parts[-2]}")
    if not members:
        raise DataError(f"{path} holds no PNG images; is this an Omniglot zip?")
    return members, characters


def omniglot_split(
    characters: list[str], split: str, test_fraction: float = 0.5, seed: int = 0, split_by: str = "characters"
) -> list[str]:
    """The distinct character keys (``"alphabet/characterNN"``) of ``split`` (``train``/``test``/``all``)."""
    distinct = sorted(set(characters))
    if split in (None, "all"):
        return distinct
    if split not in ("train", "test"):
        raise ConfigError(f"unknown split '{split}'; use train, test or all")
    if split_by == "characters":
        alphabets = [c.split("/")[0] for c in distinct]
        train_idx, test_idx = stratified_split(alphabets, test_fraction, seed)
        chosen = test_idx if split == "test" else train_idx
        return [distinct[i] for i in chosen]
    if split_by == "alphabets":
        parts = split_classes([c.split("/")[0] for c in distinct], test_fraction=test_fraction, seed=seed)
        wanted = set(parts.part(split))
        return [c for c in distinct if c.split("/")[0] in wanted]
    raise ConfigError(f"unknown split_by '{split_by}'; use 'characters' or 'alphabets'")


class OmniglotDataset(ImageDataset):
    """Omniglot drawings read from the zip at ``zip_path``; classes are characters.

    Args:
        zip_path: the Omniglot zip (None: the embedded copy).
        characters: keep only these character keys (``"alphabet/characterNN"``); None keeps all.
        transform: applied to each RGB PIL image.
    """

    def __init__(
        self,
        zip_path: str | Path | None = None,
        characters: list[str] | None = None,
        transform: Transform | None = None,
    ) -> None:
        self.zip_path = Path(zip_path).expanduser() if zip_path is not None else embedded_omniglot_zip()
        members, keys = scan_omniglot_zip(self.zip_path)
        if characters is not None:
            wanted = set(characters)
            unknown = sorted(wanted - set(keys))
            if unknown:
                raise DataError(f"characters {unknown[:3]} are not in {self.zip_path}")
            kept = [i for i, k in enumerate(keys) if k in wanted]
            members, keys = [members[i] for i in kept], [keys[i] for i in kept]
        labels, class_names = index_labels(keys)
        super().__init__(labels, class_names, members, transform)
        self.alphabets = [name.split("/")[0] for name in self.class_names]
        self._archive: zipfile.ZipFile | None = None
        self._pid = -1

    def _zip(self) -> zipfile.ZipFile:
        # one handle per process: DataLoader workers must not share a file offset
        if self._archive is None or self._pid != os.getpid():
            self._archive = _open_zip(self.zip_path)
            self._pid = os.getpid()
        return self._archive

    def read(self, index: int) -> Image.Image:
        member = self.paths[index]
        return decode_image(self._zip().read(member), f"{self.zip_path}:{member}")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_archive"], state["_pid"] = None, -1
        return state


def omniglot_dataset(
    root: str | Path | None = None,
    split: str | None = "all",
    transform: Transform | None = None,
    seed: int = 0,
    test_fraction: float = 0.5,
    split_by: str = "characters",
) -> OmniglotDataset:
    """The ``split`` (``train``/``test``/``all``) of the Omniglot zip ``root`` (None: embedded copy),
    zero-shot by character; see :func:`omniglot_split`. Labels are ``0..C-1`` within the split."""
    zip_path = Path(root).expanduser() if root is not None else embedded_omniglot_zip()
    _, keys = scan_omniglot_zip(zip_path)
    chosen = omniglot_split(keys, split, test_fraction=test_fraction, seed=seed, split_by=split_by)
    return OmniglotDataset(zip_path, characters=chosen, transform=transform)
