"""Embeddings on disk as one table: a folder of shards written by ``deepmetric embed -o DIR``
(or a single embeddings ``.npz``), read piece by piece and memory-mapped.

The storage format (written by :mod:`deepmetric.deploy.sharded_embed`, whose docstring gives the
contract): ``manifest.json`` (:class:`EmbedManifest`, with one :class:`ShardRecord` per rank and
the :class:`ModelRef` of the weights), ``shard-<r>-of-<W>.npz`` files holding ``embeddings``,
``labels``, ``paths`` and ``indices`` uncompressed. All JSON records are validated strictly
(:func:`read_record`: one-line :class:`~deepmetric.errors.DataError` for a missing, malformed or
hostile file).

Reading: :func:`load_shards` (a complete shard folder; sizes, optionally SHA-256, checked) and
:func:`open_embeddings` (a folder or one ``.npz``) return a :class:`ShardSet`: iteration in
blocks of rows (:meth:`ShardSet.blocks`), gathering of chosen rows (:meth:`ShardSet.take`) and,
for small sets, everything in memory (:meth:`ShardSet.to_embedding_set`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deepmetric.embeddings_io import EmbeddingSet, open_npz_arrays, validate_embedding_set
from deepmetric.errors import DataError

__all__ = [
    "MANIFEST",
    "Block",
    "EmbedManifest",
    "ModelRef",
    "ShardRecord",
    "ShardSet",
    "ShardView",
    "file_sha256",
    "load_shards",
    "open_embeddings",
    "read_manifest",
    "read_record",
]

MANIFEST = "manifest.json"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelRef(_Record):
    """The weights that made the embeddings: run folder, checkpoint name and the file's SHA-256."""

    run: str
    checkpoint: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ShardRecord(_Record):
    """One rank's shard: global items ``[start, stop)`` in ``file`` (None when empty)."""

    rank: int = Field(ge=0)
    world_size: int = Field(ge=1)
    start: int = Field(ge=0)
    stop: int = Field(ge=0)
    count: int = Field(ge=0)
    dim: int | None = Field(default=None, gt=0)
    file: str | None = Field(default=None, pattern=r"^shard-\d+-of-\d+\.npz$")
    bytes: int | None = Field(default=None, ge=0)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class EmbedManifest(_Record):
    """``OUT_DIR/manifest.json`` (see the module docstring)."""

    format: Literal[1] = 1
    status: Literal["in_progress", "complete"]
    items: int = Field(ge=1)
    dim: int | None = Field(default=None, gt=0)
    dtype: Literal["float32", "float16"]
    model: ModelRef
    inputs_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    world_size: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    chunk_size: int = Field(ge=1)
    shards: list[ShardRecord] = []


def read_record(path: Path, model: type[_Record], fix: str) -> Any:
    from deepmetric.messages import safe_text, schema_problem

    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise DataError(f"'{safe_text(path)}' does not exist; {fix}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DataError(f"'{safe_text(path)}' is not valid JSON ({type(exc).__name__}); {fix}") from None
    if not isinstance(data, dict):
        raise DataError(f"'{safe_text(path)}' must hold a JSON object; {fix}")
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        raise DataError(f"'{safe_text(path)}' does not match its schema: {schema_problem(exc)}; {fix}") from None


def read_manifest(folder: str | Path) -> EmbedManifest:
    """The validated ``manifest.json`` of a shard folder; one-line :class:`DataError` otherwise."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise DataError(f"'{folder}' holds no {MANIFEST}; it is not a folder written by `deepmetric embed RUN INPUTS -o "
                        f"{folder}` (pass an embeddings .npz file or such a folder)")
    return read_record(folder / MANIFEST, EmbedManifest, "re-run the `deepmetric embed` command with --resume")


def file_sha256(path: str | Path, block: int = 1 << 22) -> str:
    """SHA-256 of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while data := handle.read(block):
            digest.update(data)
    return digest.hexdigest()


@dataclass(frozen=True)
class ShardView:
    """Global items ``[start, stop)`` stored in ``path`` (an embeddings ``.npz``)."""

    path: Path
    start: int
    stop: int

    def arrays(self) -> dict[str, np.ndarray]:
        """The shard's arrays, memory-mapped where stored uncompressed."""
        return open_npz_arrays(self.path)


@dataclass(frozen=True)
class Block:
    """Rows ``[start, start + len)`` of a :class:`ShardSet` (embeddings in their stored dtype)."""

    start: int
    embeddings: np.ndarray
    labels: np.ndarray
    paths: np.ndarray
    source: str
    first_row: int


class ShardSet:
    """Embeddings stored in one or more ``.npz`` files, read piece by piece (never all at once
    unless :meth:`to_embedding_set` is called)."""

    def __init__(self, folder: Path, shards: list[ShardView], dim: int, dtype: str,
                 manifest: EmbedManifest | None = None) -> None:
        self.folder = folder
        self.shards = shards
        self.dim = dim
        self.dtype = dtype
        self.manifest = manifest

    def __len__(self) -> int:
        return self.shards[-1].stop if self.shards else 0

    @property
    def location(self) -> Path:
        """Where the set was opened from: the shard folder (with a manifest), else the first
        (for :meth:`from_file`, the only) embeddings file."""
        return self.folder if self.manifest is not None else self.shards[0].path

    @classmethod
    def from_file(cls, path: str | Path) -> ShardSet:
        """A single embeddings ``.npz`` (see :mod:`deepmetric.embeddings_io`) seen as one shard."""
        path = Path(path)
        arrays = open_npz_arrays(path)
        fix = "re-create it with `deepmetric embed`"
        if "embeddings" not in arrays or "labels" not in arrays:
            raise DataError(f"embeddings file '{path}' lacks 'embeddings' or 'labels'; {fix}")
        emb, lab = arrays["embeddings"], arrays["labels"]
        if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0 or emb.dtype.kind not in "fiu":
            raise DataError(f"embeddings file '{path}': embeddings must be a non-empty 2-D array of numbers, got "
                            f"shape {emb.shape} of {emb.dtype}; {fix}")
        n = emb.shape[0]
        for name in ("labels", "paths"):
            arr = arrays.get(name)
            if arr is not None and (arr.ndim != 1 or arr.shape[0] != n):
                raise DataError(f"embeddings file '{path}': {n} embeddings but {arr.shape[0] if arr.ndim else 0} "
                                f"{name}, they do not match; {fix}")
        integral_floats = lab.dtype.kind == "f" and bool(np.all(np.isfinite(lab)) and np.all(lab == np.round(lab)))
        if lab.dtype.kind not in "iuU" and not integral_floats:
            raise DataError(f"embeddings file '{path}': labels must be integers or strings, got {lab.dtype}; {fix}")
        return cls(path.parent, [ShardView(path, 0, n)], int(emb.shape[1]), str(emb.dtype))

    def blocks(self, rows: int = 65_536) -> Iterator[Block]:
        """Consecutive blocks of at most ``rows`` rows, shard by shard, in global order."""
        for shard in self.shards:
            arrays = shard.arrays()
            emb = arrays["embeddings"]
            n = emb.shape[0]
            labels = arrays.get("labels")
            if labels is not None and labels.dtype.kind == "f":  # integral floats (checked on open): integers
                labels = np.asarray(labels).astype(np.int64)
            paths = arrays.get("paths")
            for lo in range(0, n, rows):
                hi = min(n, lo + rows)
                yield Block(shard.start + lo, np.asarray(emb[lo:hi]),
                            np.asarray(labels[lo:hi]) if labels is not None else np.full(hi - lo, "", dtype=str),
                            np.asarray(paths[lo:hi]) if paths is not None else np.full(hi - lo, "", dtype=str),
                            shard.path.name, lo)
            del arrays, emb, labels, paths

    def embedding_arrays(self) -> list[np.ndarray]:
        """Each shard's ``embeddings`` array, in shard order: read-only memory maps where stored
        uncompressed (``np.memmap``), else read into memory. Hand them to :meth:`take` to gather
        rows many times without reopening the files."""
        arrays = []
        for shard in self.shards:
            emb = shard.arrays().get("embeddings")
            if emb is None or emb.ndim != 2 or emb.shape != (shard.stop - shard.start, self.dim):
                raise DataError(f"shard '{shard.path}' holds no {shard.stop - shard.start} x {self.dim} 'embeddings' "
                                "array; re-create it with `deepmetric embed`")
            arrays.append(emb)
        return arrays

    def take(self, indices: np.ndarray, arrays: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Embeddings (stored dtype) of the global rows ``indices`` (any order), reading only
        those rows (``arrays``: :meth:`embedding_arrays`, opened once; default: open each shard
        that holds a requested row)."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), self.dim), dtype=np.dtype(self.dtype))
        for number, shard in enumerate(self.shards):
            mask = (indices >= shard.start) & (indices < shard.stop)
            if mask.any():
                local = indices[mask] - shard.start
                order = np.argsort(local, kind="stable")
                emb = arrays[number] if arrays is not None else shard.arrays()["embeddings"]
                rows = np.empty((len(local), self.dim), dtype=out.dtype)
                rows[order] = emb[local[order]]
                out[mask] = rows
        return out

    def take_column(self, name: str, indices: np.ndarray) -> list[Any]:
        """Values of column ``name`` (``labels`` or ``paths``) at the global rows ``indices``
        (``""`` where a file has no such column)."""
        out: list[Any] = [""] * len(indices)
        for shard in self.shards:
            column = None
            for j, row in enumerate(np.asarray(indices, dtype=np.int64).tolist()):
                if shard.start <= row < shard.stop:
                    column = shard.arrays().get(name) if column is None else column
                    out[j] = column[row - shard.start].item() if column is not None else ""
        return out

    def column_dtype(self, name: str) -> np.dtype:
        """The dtype that holds column ``name`` (``labels`` or ``paths``) of every shard."""
        kinds = []
        for shard in self.shards:
            arr = shard.arrays().get(name)
            kinds.append(arr.dtype if arr is not None else np.dtype("<U1"))
        if all(k.kind in "iuf" for k in kinds):
            return np.dtype(np.int64)
        width = max((k.itemsize // 4 if k.kind == "U" else 20) for k in kinds)
        return np.dtype(f"<U{max(1, width)}")

    def to_embedding_set(self) -> EmbeddingSet:
        """Everything in memory, validated (float32): for sets that fit in memory."""
        parts = list(self.blocks(rows=1 << 62))
        emb = np.concatenate([b.embeddings for b in parts]) if parts else np.empty((0, self.dim), np.float32)
        labels = np.concatenate([b.labels.astype(self.column_dtype("labels")) for b in parts])
        paths = np.concatenate([b.paths.astype(str) for b in parts])
        return validate_embedding_set(emb, labels, paths, source=str(self.folder))


def load_shards(folder: str | Path, verify: bool = False) -> ShardSet:
    """The complete shard folder ``folder`` (see the module docstring). Checks every shard's
    size (and SHA-256 with ``verify``); raises :class:`DataError` for an unfinished or damaged
    folder."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest.status != "complete" or manifest.dim is None:
        raise DataError(f"the embedding into '{folder}' has not finished; run the same `deepmetric embed` command "
                        "again with --resume")
    views = []
    expected = 0
    for record in sorted(manifest.shards, key=lambda r: r.start):
        if record.start != expected:
            raise DataError(f"'{folder / MANIFEST}' leaves items {expected}-{record.start} in no shard; re-embed into a new folder")
        expected = record.stop
        if record.file is None:
            continue
        path = folder / record.file
        if not path.is_file():
            raise DataError(f"shard '{path}' listed in {MANIFEST} is missing; restore it or re-run the embed command "
                            "with --resume")
        if path.stat().st_size != record.bytes or (verify and file_sha256(path) != record.sha256):
            raise DataError(f"shard '{path}' does not match its size/sha256 in {MANIFEST} (damaged or replaced); delete "
                            "it and its .json record, then re-run the embed command with --resume")
        views.append(ShardView(path, record.start, record.stop))
    if expected != manifest.items:
        raise DataError(f"'{folder / MANIFEST}' covers {expected} of {manifest.items} items; re-embed into a new folder")
    return ShardSet(folder, views, manifest.dim, manifest.dtype, manifest)


def open_embeddings(source: str | Path) -> ShardSet:
    """A :class:`ShardSet` over a shard folder or a single embeddings ``.npz`` file."""
    path = Path(source)
    if path.is_dir():
        return load_shards(path)
    if not path.is_file():
        raise DataError(f"'{path}' not found; pass an embeddings .npz or a shard folder written by `deepmetric embed`")
    return ShardSet.from_file(path)
