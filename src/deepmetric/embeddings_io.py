"""Embeddings files: one ``.npz`` holding ``embeddings`` (N x D float32, or float16 when asked),
``labels`` (N) and ``paths`` (N strings, the source of each row).

``deepmetric embed`` writes them, ``deepmetric search`` and the report read them, and the
trainer stores the test split's embeddings in the same format (``test_embeddings.npz``).
Loading validates the file, so a gallery whose labels or paths do not line up with its
embeddings fails with a :class:`~deepmetric.errors.DataError` that says how to fix it instead of
silently returning wrong neighbours. A NaN or infinite embedding is reported with the file and
its first bad row.

Large files are never read whole when that is not needed: :func:`open_npz_arrays` memory-maps
every array stored uncompressed in an ``.npz`` (``numpy.savez`` and :class:`NpzStreamWriter`
store them so), and :class:`NpzStreamWriter` writes an ``.npz`` array by array, block by block,
atomically (temporary file + ``os.replace``), so a shard of any size is written in bounded
memory.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from deepmetric.errors import DataError

REQUIRED_KEYS = ("embeddings", "labels")
#: the storage types of embeddings a file may hold (loading always gives float32)
EMBEDDING_DTYPES = ("float32", "float16")
_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class EmbeddingSet:
    """Embeddings with one label and one source path per row."""

    embeddings: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) int or str
    paths: list[str]  # N entries ("" when unknown)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return int(self.embeddings.shape[1])


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def validate_embedding_set(
    embeddings: Any, labels: Any, paths: Any | None = None, source: str = "embeddings"
) -> EmbeddingSet:
    """Check shapes and values and return a normalised :class:`EmbeddingSet`.

    Raises :class:`DataError` when embeddings are not a finite 2-D array, or when the number of
    labels or paths differs from the number of embeddings.
    """
    emb = _as_numpy(embeddings)
    lab = _as_numpy(labels)
    fix = "re-create it with `deepmetric embed` (or `save_embeddings`) so every row has its label and path"
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise DataError(
            f"{source}: embeddings must be a non-empty 2-D array (N x D), got shape {tuple(emb.shape)}; {fix}"
        )
    if not np.issubdtype(emb.dtype, np.number) or np.issubdtype(emb.dtype, np.complexfloating):
        raise DataError(f"{source}: embeddings must be real numbers, got dtype {emb.dtype}; {fix}")
    check_finite_rows(emb, source)
    if emb.dtype.itemsize > 4 and float(np.max(np.abs(emb))) > float(np.finfo(np.float32).max):
        row = int(np.flatnonzero((np.abs(emb) > np.finfo(np.float32).max).any(axis=1))[0])
        raise DataError(
            f"{source}: row {row} holds values beyond the float32 range (|x| > 3.4e38); divide the embeddings "
            "by their largest absolute value before saving (cosine search ignores the scale)"
        )
    emb = emb.astype(np.float32, copy=False)
    if lab.ndim != 1:
        raise DataError(f"{source}: labels must be 1-D (one per embedding), got shape {tuple(lab.shape)}; {fix}")
    if lab.shape[0] != emb.shape[0]:
        raise DataError(
            f"{source}: {emb.shape[0]} embeddings but {lab.shape[0]} labels, they do not match; {fix}"
        )
    if paths is None:
        path_list = [""] * emb.shape[0]
    else:
        path_arr = _as_numpy(paths)
        if path_arr.ndim != 1:
            raise DataError(f"{source}: paths must be 1-D (one per embedding), got shape {tuple(path_arr.shape)}; {fix}")
        path_list = [str(p) for p in path_arr.tolist()]
        if len(path_list) != emb.shape[0]:
            raise DataError(
                f"{source}: {emb.shape[0]} embeddings but {len(path_list)} paths, they do not match; {fix}"
            )
    if lab.dtype.kind in "US" or lab.dtype == object:
        lab = lab.astype(str)
    elif lab.dtype.kind not in "iu":
        if lab.dtype.kind == "f" and np.all(np.isfinite(lab)) and np.all(lab == np.round(lab)):
            lab = lab.astype(np.int64)
        else:
            raise DataError(f"{source}: labels must be integers or strings, got dtype {lab.dtype}; {fix}")
    return EmbeddingSet(emb, lab, path_list)


def check_finite_rows(embeddings: np.ndarray, source: str, first_row: int = 0, item_offset: int | None = None) -> None:
    """Raise :class:`DataError` naming ``source`` and the first row holding NaN or +-inf.

    ``first_row`` is added to the reported row (a block of a larger file); ``item_offset``, when
    given, also reports the global item number (a shard of a larger collection).
    """
    if embeddings.dtype.kind not in "fc" or embeddings.size == 0:
        return
    finite = np.isfinite(embeddings)
    if finite.all():
        return
    bad_rows = np.flatnonzero(~finite.all(axis=tuple(range(1, embeddings.ndim))))
    row = first_row + int(bad_rows[0])
    item = "" if item_offset is None else f" (item {item_offset + row})"
    more = f" (and {len(bad_rows) - 1} more row{'s' if len(bad_rows) > 2 else ''})" if len(bad_rows) > 1 else ""
    raise DataError(
        f"{source}: row {row}{item} holds NaN or infinite values{more}; check the model checkpoint "
        "(a diverged run gives NaN) and re-embed"
    )


def as_storage_dtype(embeddings: np.ndarray, dtype: str, source: str) -> np.ndarray:
    """``embeddings`` converted to the storage ``dtype`` (``"float32"`` or ``"float16"``); raises
    :class:`DataError` when a value does not fit float16 (|x| > 65504) instead of storing inf."""
    if dtype not in EMBEDDING_DTYPES:
        raise DataError(f"unknown embeddings dtype '{dtype}'; use one of {', '.join(EMBEDDING_DTYPES)}")
    if dtype == "float16" and embeddings.size and float(np.max(np.abs(embeddings))) > _FLOAT16_MAX:
        row = int(np.flatnonzero((np.abs(embeddings) > _FLOAT16_MAX).any(axis=1))[0])
        raise DataError(
            f"{source}: row {row} holds values beyond the float16 range (|x| > 65504); use --dtype float32 "
            "or a model that normalises its embeddings"
        )
    return np.ascontiguousarray(embeddings, dtype=np.dtype(dtype))


def save_embeddings(
    path: str | Path, embeddings: Any, labels: Any, paths: Any | None = None, dtype: str = "float32"
) -> Path:
    """Validate and write an embeddings file; returns its path (``.npz`` is appended if missing).
    ``dtype="float16"`` halves the file (values beyond float16's range are refused)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    data = validate_embedding_set(embeddings, labels, paths, source=str(path))
    stored = as_storage_dtype(data.embeddings, dtype, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, embeddings=stored, labels=data.labels, paths=np.asarray(data.paths, dtype=str))
    return path


def load_embeddings(path: str | Path) -> EmbeddingSet:
    """Read and validate an embeddings file written by :func:`save_embeddings`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"embeddings file '{path}' not found; create it with `deepmetric embed RUN IMAGES -o {path.name}`"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            missing = [k for k in REQUIRED_KEYS if k not in keys]
            if missing:
                raise DataError(
                    f"embeddings file '{path}' lacks {', '.join(repr(k) for k in missing)} "
                    f"(has {', '.join(sorted(keys)) or 'nothing'}); re-create it with `deepmetric embed`"
                )
            embeddings, labels = npz["embeddings"], npz["labels"]
            paths = npz["paths"] if "paths" in keys else None
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(
            f"'{path}' is not a readable .npz embeddings file ({type(exc).__name__}); "
            "re-create it with `deepmetric embed`"
        ) from exc
    return validate_embedding_set(embeddings, labels, paths, source=f"embeddings file '{path}'")


# ---------------------------------------------------------------------------------------------
# memory-mapped reading and streamed writing of .npz files


def _member_offset(handle: BinaryIO, info: zipfile.ZipInfo) -> int:
    """Byte offset of the data of the stored (uncompressed) zip member ``info``."""
    handle.seek(info.header_offset)
    header = handle.read(zipfile.sizeFileHeader)
    fields = struct.unpack(zipfile.structFileHeader, header)
    if fields[0] != zipfile.stringFileHeader:
        raise ValueError("bad local file header")
    return info.header_offset + zipfile.sizeFileHeader + fields[10] + fields[11]


def _mapped_member(path: Path, handle: BinaryIO, info: zipfile.ZipInfo) -> np.ndarray | None:
    """The ``.npy`` member ``info`` as a read-only memory map, or None when it cannot be mapped."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    start = _member_offset(handle, info)
    handle.seek(start)
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    else:
        return None
    if dtype.hasobject or fortran:
        return None
    if int(np.prod(shape)) == 0:
        return np.empty(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=handle.tell(), shape=shape)


def open_npz_arrays(path: str | Path, mmap: bool = True) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` file ``path``, by name.

    With ``mmap=True`` arrays stored uncompressed are read-only memory maps (only the pages a
    caller touches are read); compressed or object arrays are read into memory. Raises
    :class:`DataError` for a missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"embeddings file '{path}' not found; create it with `deepmetric embed`")
    arrays: dict[str, np.ndarray] = {}
    try:
        with open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                name = info.filename[: -len(".npy")]
                mapped = _mapped_member(path, handle, info) if mmap else None
                if mapped is None:
                    with archive.open(info) as member:
                        mapped = np.lib.format.read_array(member, allow_pickle=False)
                arrays[name] = mapped
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, struct.error) as exc:
        raise DataError(
            f"'{path}' is not a readable .npz embeddings file ({type(exc).__name__}); re-create it with "
            "`deepmetric embed`"
        ) from exc
    return arrays


class NpzStreamWriter:
    """Write an uncompressed ``.npz`` array by array, each from blocks of rows, atomically.

    Use as a context manager: the file appears at ``path`` (``os.replace`` of a temporary file in
    the same folder, after fsync) only when the block exits without an error; on an error the
    temporary file is removed and an earlier ``path`` is kept. The arrays can later be
    memory-mapped with :func:`open_npz_arrays`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._tmp: str | None = None
        self._handle: BinaryIO | None = None
        self._zip: zipfile.ZipFile | None = None

    def __enter__(self) -> NpzStreamWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self._handle = os.fdopen(fd, "w+b")
        self._zip = zipfile.ZipFile(self._handle, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True)
        return self

    def write_array(self, name: str, dtype: Any, shape: tuple[int, ...], blocks: Iterable[np.ndarray]) -> None:
        """Write array ``name`` of ``shape`` and ``dtype`` from ``blocks`` (C-ordered pieces
        along the first axis whose rows add up to ``shape[0]``)."""
        assert self._zip is not None, "use NpzStreamWriter as a context manager"
        dtype = np.dtype(dtype)
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
        rows = 0
        with self._zip.open(f"{name}.npy", mode="w", force_zip64=True) as out:
            np.lib.format.write_array_header_2_0(out, header)
            for block in blocks:
                block = np.ascontiguousarray(block, dtype=dtype)
                if block.shape[1:] != tuple(shape[1:]):
                    raise ValueError(f"block of shape {block.shape} does not fit array '{name}' of shape {shape}")
                rows += block.shape[0]
                if block.size:
                    out.write(memoryview(block.reshape(-1)).cast("B"))
        if rows != shape[0]:
            raise ValueError(f"array '{name}' got {rows} rows but was declared with {shape[0]}")

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._zip is not None and self._handle is not None and self._tmp is not None
        try:
            self._zip.close()
            self._handle.flush()
            if exc_type is None:
                os.fsync(self._handle.fileno())
            self._handle.close()
            if exc_type is None:
                mask = os.umask(0)
                os.umask(mask)
                os.chmod(self._tmp, 0o666 & ~mask)
                os.replace(self._tmp, self.path)
        finally:
            if Path(self._tmp).exists():
                Path(self._tmp).unlink()
