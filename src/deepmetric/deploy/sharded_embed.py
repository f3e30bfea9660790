"""Sharded, resumable embedding of a large item list by several processes, and its reader.

``deepmetric embed RUN INPUTS... -o OUT_DIR [--nproc N] [--resume]`` (or the same command under
``torchrun``, on one or several nodes: rank and world size come from ``RANK`` / ``WORLD_SIZE``)
writes a folder of shards; ``-o file.npz`` keeps the single-file format of
:mod:`deepmetric.embeddings_io`.

Contract:

* **Items.** The items are sorted by path (:func:`sort_items`); item ``i`` is the ``i``-th of
  that order, its *global index*. Everything below is a deterministic function of ``N``.
* **Batch grid.** Items are embedded in batches of ``B`` on one global grid: batch ``b`` holds
  items ``[b B, (b + 1) B)``.
* **Shards.** Rank ``r`` of ``W`` takes the contiguous batches ``[r nb / W, (r + 1) nb / W)``
  (``nb = ceil(N / B)``, integer division): a contiguous item range (empty when ``nb < W``).
* **Chunks.** A shard is embedded ``C`` items at a time (``C`` = ``--chunk-size`` rounded up to a
  multiple of ``B``, default 10,000); each chunk is written atomically to
  ``parts/items-<start>-<stop>.npz`` when done, so a killed job loses at most one chunk per rank.
  Shard and chunk bounds lie on the batch grid, so every item is embedded in the same batch
  whatever ``W``: with the same model, device and thread count the shards are bit-identical to
  a one-process run.
* **Shard files.** When its chunks are done, rank ``r`` streams them into
  ``shard-<r>-of-<W>.npz`` (``embeddings`` float32 or float16, ``labels``, ``paths``,
  ``indices`` = global item indices; uncompressed, so every array can be memory-mapped),
  atomically, then writes its record ``shard-<r>-of-<W>.json`` (:class:`ShardRecord`) and
  deletes its parts.
* **Manifest.** ``manifest.json`` (:class:`EmbedManifest`) is written by rank 0 before any work
  (``status: in_progress``: the plan) and, once every rank is done, again with every shard's
  item range, count, size and SHA-256 (``status: complete``). All JSON files are written
  atomically (:func:`deepmetric.run_files.write_run_file`) and validated strictly when read.
* **Resume.** With ``--resume`` finished shards (size and SHA-256 checked) and finished chunks
  are skipped. The plan must equal the manifest's (model checkpoint SHA-256, inputs SHA-256,
  item count, world size, batch size, chunk size, dtype), else a one-line
  :class:`~deepmetric.errors.DataError` names the difference. Without ``--resume`` a folder that
  already holds a manifest, shards or parts is refused.
* **Reading.** :mod:`deepmetric.shard_store` (re-exported here): :func:`load_shards` returns a
  :class:`ShardSet`: memory-mapped arrays, iteration in blocks of rows, gathering of chosen rows;
  :meth:`ShardSet.from_file` gives the same view of a single ``.npz`` embeddings file.

Several nodes need a shared filesystem for ``OUT_DIR`` (rank 0 reads every shard's record);
the processes synchronise with a gloo process group (three barriers; no tensors are exchanged).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deepmetric.embeddings_io import (
    NpzStreamWriter,
    as_storage_dtype,
    check_finite_rows,
    open_npz_arrays,
)
from deepmetric.errors import DataError
from deepmetric.shard_store import (
    MANIFEST,
    EmbedManifest,
    ModelRef,
    ShardRecord,
    ShardSet,
    file_sha256,
    load_shards,
    open_embeddings,
    read_manifest,
    read_record,
)

__all__ = [
    "DEFAULT_CHUNK",
    "MANIFEST",
    "EmbedManifest",
    "EmbedPlan",
    "ModelRef",
    "ShardRecord",
    "ShardSet",
    "check_output",
    "chunk_ranges",
    "embed_shard",
    "file_sha256",
    "finalize",
    "inputs_sha256",
    "launch_local",
    "load_shards",
    "open_embeddings",
    "plan_for_images",
    "read_manifest",
    "run_sharded",
    "shard_ranges",
    "sort_items",
    "write_plan",
]

PARTS = "parts"
#: items per chunk (rounded up to a multiple of the batch size)
DEFAULT_CHUNK = 10_000
#: how long a rank waits at a barrier for the others (ranks may take hours to embed)
BARRIER_HOURS = 72

EmbedFn = Callable[[int, int], np.ndarray]


# ---------------------------------------------------------------------------------------------
# records


# ---------------------------------------------------------------------------------------------
# the plan


def sort_items(paths: Sequence[Any], labels: Sequence[Any]) -> tuple[list[str], list[Any]]:
    """``(paths, labels)`` ordered by path (then label): the global item order of a sharded run."""
    order = sorted(range(len(paths)), key=lambda i: (str(paths[i]), str(labels[i])))
    return [str(paths[i]) for i in order], [labels[i] for i in order]


def inputs_sha256(paths: Sequence[Any], labels: Sequence[Any]) -> str:
    """SHA-256 of the ordered item list (path and label of every item)."""
    digest = hashlib.sha256(f"{len(paths)}\n".encode())
    for path, label in zip(paths, labels):
        digest.update(f"{path}\t{label}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def shard_ranges(n_items: int, world_size: int, batch_size: int) -> list[tuple[int, int]]:
    """The contiguous item range of every rank: whole batches of the global grid, balanced."""
    n_batches = -(-n_items // batch_size)
    bounds = [min(n_items, (r * n_batches // world_size) * batch_size) for r in range(world_size + 1)]
    return [(bounds[r], bounds[r + 1]) for r in range(world_size)]


def chunk_ranges(start: int, stop: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` cut every ``chunk_size`` items (the last chunk may be shorter)."""
    return [(s, min(stop, s + chunk_size)) for s in range(start, stop, chunk_size)]


@dataclass(frozen=True)
class EmbedPlan:
    """What a sharded embedding run writes where (see the module docstring)."""

    out_dir: Path
    items: int
    world_size: int
    batch_size: int
    chunk_size: int
    dtype: str
    model: ModelRef
    inputs_sha256: str

    @classmethod
    def create(cls, out_dir: str | Path, items: int, world_size: int, batch_size: int, chunk_size: int,
               dtype: str, model: ModelRef, inputs_sha: str) -> EmbedPlan:
        """A plan with ``chunk_size`` rounded up to a multiple of ``batch_size``."""
        if items < 1:
            raise DataError("no items to embed; pass image files or folders that hold images")
        if batch_size < 1 or chunk_size < 1 or world_size < 1:
            raise DataError(f"batch size ({batch_size}), chunk size ({chunk_size}) and process count ({world_size}) "
                            "must be >= 1")
        if dtype not in ("float32", "float16"):
            raise DataError(f"unknown --dtype '{dtype}'; use float32 or float16")
        chunk = -(-chunk_size // batch_size) * batch_size
        return cls(Path(out_dir), items, world_size, batch_size, chunk, dtype, model, inputs_sha)

    @property
    def key(self) -> str:
        """Fingerprint of the plan, stored in every chunk file."""
        text = json.dumps([self.model.sha256, self.inputs_sha256, self.items, self.world_size, self.batch_size,
                           self.chunk_size, self.dtype])
        return hashlib.sha256(text.encode()).hexdigest()

    def shard_range(self, rank: int) -> tuple[int, int]:
        return shard_ranges(self.items, self.world_size, self.batch_size)[rank]

    def chunks(self, rank: int) -> list[tuple[int, int]]:
        return chunk_ranges(*self.shard_range(rank), self.chunk_size)

    def shard_name(self, rank: int) -> str:
        return f"shard-{rank}-of-{self.world_size}"

    def part_path(self, start: int, stop: int) -> Path:
        return self.out_dir / PARTS / f"items-{start:012d}-{stop:012d}.npz"

    def manifest(self, status: str = "in_progress", shards: Sequence[ShardRecord] = (), dim: int | None = None) -> EmbedManifest:
        return EmbedManifest(status=status, items=self.items, dim=dim, dtype=self.dtype, model=self.model,
                             inputs_sha256=self.inputs_sha256, world_size=self.world_size, batch_size=self.batch_size,
                             chunk_size=self.chunk_size, shards=list(shards))


def _differences(plan: EmbedPlan, old: EmbedManifest) -> list[str]:
    out = []
    if old.model.sha256 != plan.model.sha256:
        out.append(f"the model ({old.model.run}, checkpoint {old.model.checkpoint}, sha256 {old.model.sha256[:12]}) "
                   f"differs from this run's ({plan.model.run}, checkpoint {plan.model.checkpoint}, sha256 "
                   f"{plan.model.sha256[:12]})")
    if old.inputs_sha256 != plan.inputs_sha256 or old.items != plan.items:
        out.append(f"the inputs ({old.items} items, sha256 {old.inputs_sha256[:12]}) differ from this run's "
                   f"({plan.items} items, sha256 {plan.inputs_sha256[:12]})")
    for name, flag in (("world_size", "--nproc"), ("batch_size", "--batch-size"), ("chunk_size", "--chunk-size"),
                       ("dtype", "--dtype")):
        if getattr(old, name) != getattr(plan, name):
            out.append(f"{name} was {getattr(old, name)} but is {getattr(plan, name)} now (pass {flag} {getattr(old, name)})")
    return out


def check_output(plan: EmbedPlan, resume: bool) -> EmbedManifest | None:
    """Check that ``plan.out_dir`` may be written (read-only; run on every rank). Returns the
    existing manifest, or None for a fresh folder."""
    out = plan.out_dir
    if out.exists() and not out.is_dir():
        raise DataError(f"'{out}' is a file; pass a folder for shards (or a name ending in .npz for one file)")
    if (out / MANIFEST).is_file():
        old = read_manifest(out)
        if not resume:
            raise DataError(f"'{out}' already holds embeddings ({old.status}, {old.items} items); pass --resume to "
                            "continue (finished chunks and shards are skipped) or choose a new output folder")
        problems = _differences(plan, old)
        if problems:
            raise DataError(f"cannot resume into '{out}': {problems[0]}"
                            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                            + "; embed into a new folder, or resume with the original model, inputs and options")
        return old
    leftovers = sorted(out.glob("shard-*.npz")) + sorted((out / PARTS).glob("*.npz"))
    if leftovers:
        raise DataError(f"'{out}' holds shard files ({leftovers[0].name}) but no {MANIFEST}; it is not a folder this "
                        "command can resume: choose a new output folder or delete these files")
    return None


def write_plan(plan: EmbedPlan) -> None:
    """Write the in-progress manifest (rank 0, after :func:`check_output`), unless one exists."""
    from deepmetric.run_files import write_run_file

    if not (plan.out_dir / MANIFEST).is_file():
        write_run_file(plan.manifest("in_progress"), plan.out_dir / MANIFEST)


# ---------------------------------------------------------------------------------------------
# one rank


def _part_is_done(plan: EmbedPlan, start: int, stop: int) -> bool:
    path = plan.part_path(start, stop)
    if not path.is_file():
        return False
    try:
        arrays = open_npz_arrays(path)
        key = str(arrays["key"][()]) if "key" in arrays else ""
        emb = arrays.get("embeddings")
        return key == plan.key and emb is not None and emb.ndim == 2 and emb.shape[0] == stop - start
    except (DataError, KeyError, ValueError):
        return False


def _write_part(plan: EmbedPlan, start: int, stop: int, embeddings: np.ndarray) -> None:
    from deepmetric.training.checkpoint import save_npz

    save_npz(plan.part_path(start, stop), embeddings=embeddings, key=np.asarray(plan.key))


def _record_ok(plan: EmbedPlan, rank: int, verify: bool) -> ShardRecord | None:
    name = plan.shard_name(rank)
    record_path = plan.out_dir / f"{name}.json"
    if not record_path.is_file():
        return None
    try:
        record = read_record(record_path, ShardRecord, "it is rewritten")
    except DataError:
        return None
    start, stop = plan.shard_range(rank)
    if (record.rank, record.world_size, record.start, record.stop) != (rank, plan.world_size, start, stop):
        return None
    if record.file is None:
        return record if start == stop else None
    path = plan.out_dir / record.file
    if not path.is_file() or path.stat().st_size != record.bytes:
        return None
    if verify and file_sha256(path) != record.sha256:
        print(f"warning: {path} does not match its recorded sha256; embedding the shard again", file=sys.stderr)
        return None
    return record


def _remove_stale_temporaries(plan: EmbedPlan, rank: int) -> None:
    """Delete the temporary files a killed run of this rank left (atomic writes never finished)."""
    names = [plan.part_path(*c).name for c in plan.chunks(rank)] + [f"{plan.shard_name(rank)}.npz",
                                                                    f"{plan.shard_name(rank)}.json"]
    for folder in (plan.out_dir, plan.out_dir / PARTS):
        for name in names:
            for tmp in folder.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)


def embed_shard(
    plan: EmbedPlan,
    rank: int,
    embed_fn: EmbedFn,
    paths: Sequence[str],
    labels: Sequence[Any],
    progress: bool = False,
    on_chunk: Callable[[int, int], None] | None = None,
) -> ShardRecord:
    """Embed rank ``rank``'s items (``embed_fn(start, stop) -> (stop - start, D) float array`` for
    global items ``[start, stop)``), chunk by chunk, skipping finished chunks, and write its
    shard file and record. ``on_chunk(start, stop)`` is called after each chunk is written."""
    from deepmetric.run_files import write_run_file

    done = _record_ok(plan, rank, verify=True)
    if done is not None:
        return done
    start, stop = plan.shard_range(rank)
    name = plan.shard_name(rank)
    chunks = plan.chunks(rank)
    _remove_stale_temporaries(plan, rank)
    todo = [c for c in chunks if not _part_is_done(plan, *c)]
    iterator: Any = todo
    if progress and todo:
        from tqdm.auto import tqdm

        iterator = tqdm(todo, desc=f"rank {rank}: chunks", unit="chunk", initial=len(chunks) - len(todo),
                        total=len(chunks), leave=False)
    for c_start, c_stop in iterator:
        emb = np.asarray(embed_fn(c_start, c_stop))
        if emb.ndim != 2 or emb.shape[0] != c_stop - c_start:
            raise DataError(f"the model gave embeddings of shape {emb.shape} for {c_stop - c_start} items; "
                            "it must return one row per item")
        try:
            check_finite_rows(emb, "the embeddings")
        except DataError:
            bad = int(np.flatnonzero(~np.isfinite(emb).all(axis=1))[0])
            raise DataError(f"the embedding of '{paths[c_start + bad]}' (item {c_start + bad}) holds NaN or infinite "
                            "values; check the model checkpoint (a diverged run gives NaN) and the input") from None
        _write_part(plan, c_start, c_stop, as_storage_dtype(emb, plan.dtype, f"'{paths[c_start]}' and the next items"))
        if on_chunk is not None:
            on_chunk(c_start, c_stop)
    record = ShardRecord(rank=rank, world_size=plan.world_size, start=start, stop=stop, count=stop - start)
    if chunks:
        parts = [open_npz_arrays(plan.part_path(*c))["embeddings"] for c in chunks]
        dim = int(parts[0].shape[1])
        if any(p.shape[1] != dim for p in parts):
            raise DataError(f"the chunks of {name} have different embedding sizes; delete {plan.out_dir / PARTS} and resume")
        shard_path = plan.out_dir / f"{name}.npz"
        label_arr = np.asarray(list(labels[start:stop]))
        if label_arr.dtype.kind not in "iuU":
            label_arr = label_arr.astype(str)
        path_arr = np.asarray([str(p) for p in paths[start:stop]], dtype=str)
        with NpzStreamWriter(shard_path) as writer:
            writer.write_array("embeddings", plan.dtype, (stop - start, dim), iter(parts))
            writer.write_array("labels", label_arr.dtype, label_arr.shape, [label_arr])
            writer.write_array("paths", path_arr.dtype, path_arr.shape, [path_arr])
            writer.write_array("indices", np.int64, (stop - start,), [np.arange(start, stop, dtype=np.int64)])
        del parts
        record = record.model_copy(update={"dim": dim, "file": shard_path.name, "bytes": shard_path.stat().st_size,
                                           "sha256": file_sha256(shard_path)})
    write_run_file(record, plan.out_dir / f"{name}.json")
    for c in chunks:
        plan.part_path(*c).unlink(missing_ok=True)
    try:
        (plan.out_dir / PARTS).rmdir()
    except OSError:
        pass  # other ranks still have parts
    return record


def finalize(plan: EmbedPlan) -> EmbedManifest:
    """Collect every rank's record into the complete manifest (rank 0, after all ranks)."""
    from deepmetric.run_files import write_run_file

    records = []
    for rank in range(plan.world_size):
        record = _record_ok(plan, rank, verify=False)
        if record is None:
            raise DataError(f"shard {rank} of {plan.world_size} in '{plan.out_dir}' is missing or incomplete; every rank "
                            "must write to the same (shared) folder: re-run the command with --resume")
        records.append(record)
    dims = {r.dim for r in records if r.dim is not None}
    if len(dims) != 1:
        raise DataError(f"the shards in '{plan.out_dir}' have embedding sizes {sorted(dims)}; embed into a new folder")
    manifest = plan.manifest("complete", records, dims.pop())
    write_run_file(manifest, plan.out_dir / MANIFEST)
    return manifest


# ---------------------------------------------------------------------------------------------
# several processes


def _group(world_size: int) -> bool:
    """Join the gloo process group of a torchrun launch (True), or run alone (False)."""
    if world_size <= 1:
        return False
    from datetime import timedelta

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", timeout=timedelta(hours=BARRIER_HOURS))
    return True


def _barrier(grouped: bool) -> None:
    """Wait for every rank; a rank that died turns into a one-line error here."""
    if grouped:
        import torch.distributed as dist

        try:
            dist.barrier()
        except RuntimeError:
            raise DataError(f"rank {dist.get_rank()}: another process stopped (its message is above); fix the cause "
                            "and run the same command again with --resume") from None


def run_sharded(
    plan: EmbedPlan,
    rank: int,
    embed_fn_factory: Callable[[], EmbedFn],
    paths: Sequence[str],
    labels: Sequence[Any],
    resume: bool = False,
    progress: bool = False,
    on_chunk: Callable[[int, int], None] | None = None,
) -> EmbedManifest | None:
    """One rank of a sharded run: check the folder, write the plan (rank 0), embed this rank's
    shard, wait for all ranks and write the complete manifest (rank 0, returned; None elsewhere).
    ``embed_fn_factory`` builds the embedding function (loads the model) after the checks."""
    grouped = _group(plan.world_size)
    try:
        check_output(plan, resume)
        _barrier(grouped)
        if rank == 0:
            write_plan(plan)
        _barrier(grouped)
        embed_shard(plan, rank, embed_fn_factory(), paths, labels, progress=progress, on_chunk=on_chunk)
        _barrier(grouped)
        return finalize(plan) if rank == 0 else None
    finally:
        if grouped:
            import torch.distributed as dist

            dist.destroy_process_group()


def launch_local(nproc: int, command: Sequence[str], debug: bool = False, threads: int | None = None) -> int:
    """Re-run ``deepmetric COMMAND...`` under torchrun with ``nproc`` processes on this machine.

    The processes' own messages are passed through; torchrun's report of a failed process (a
    Python traceback of the launcher) is left out unless ``debug``, and replaced by one line."""
    import re
    import subprocess

    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "deepmetric.cli", *(["--debug"] if debug else []), *command]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(threads or 1))
    print(f"launching {nproc} processes: {' '.join(argv)}", file=sys.stderr)
    launcher_report = re.compile(r"^([EW]\d{4} .*torch/distributed/elastic|Traceback \(most recent call last\))")
    with subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, errors="replace", env=env) as proc:
        assert proc.stderr is not None
        silenced = False
        for line in proc.stderr:
            silenced = silenced or (not debug and bool(launcher_report.match(line)))
            if not silenced:
                sys.stderr.write(line)
        code = proc.wait()
    if code != 0 and not debug:
        print(f"deepmetric {command[0]}: error: {nproc} processes were launched and at least one failed (its message "
              "is above); fix the cause and run the same command again with --resume", file=sys.stderr)
    return code


def rank_and_world() -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` from torchrun's environment, ``(0, 1)`` outside it."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


# ---------------------------------------------------------------------------------------------
# images (the `deepmetric embed` command)


def model_ref(source: str | Path) -> ModelRef:
    """The :class:`ModelRef` of a run folder or checkpoint (hashes the checkpoint file)."""
    from deepmetric.inference import resolve_model_source

    run_dir, which = resolve_model_source(source)
    return ModelRef(run=str(run_dir), checkpoint=which, sha256=file_sha256(run_dir / "checkpoints" / f"{which}.pt"))


def image_embed_fn(model: Any, paths: Sequence[str], batch_size: int) -> EmbedFn:
    """``embed_fn(start, stop)`` embedding the image files ``paths[start:stop]`` with ``model``'s
    evaluation transform, in batches of ``batch_size`` from ``start``."""
    from deepmetric.data.image_dataset import ImageFileDataset
    from deepmetric.training import embed

    transform = model.eval_transform() if callable(getattr(model, "eval_transform", None)) else None

    def embed_range(start: int, stop: int) -> np.ndarray:
        dataset = ImageFileDataset(list(paths[start:stop]), [0] * (stop - start), ["item"], transform=transform)
        embeddings, _ = embed(model, dataset, batch_size=batch_size, progress=False)
        return embeddings.numpy()

    return embed_range


def plan_for_images(
    model_source: str | Path, inputs: Sequence[str | Path], out_dir: str | Path, world_size: int,
    batch_size: int = 64, chunk_size: int = DEFAULT_CHUNK, dtype: str = "float32",
) -> tuple[EmbedPlan, list[str], list[Any]]:
    """The plan of embedding the images found in ``inputs`` into ``out_dir``, and the sorted
    ``(paths, labels)`` of the items."""
    from deepmetric.inference import collect_images

    files, labels = collect_images(list(inputs))
    paths, labels = sort_items([str(p) for p in files], labels)
    plan = EmbedPlan.create(out_dir, len(paths), world_size, batch_size, chunk_size, dtype, model_ref(model_source),
                            inputs_sha256(paths, labels))
    return plan, paths, labels


def embed_images_to_shards(
    model_source: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    batch_size: int = 64,
    chunk_size: int = DEFAULT_CHUNK,
    dtype: str = "float32",
    resume: bool = False,
    device: str = "auto",
    progress: bool = False,
) -> EmbedManifest | None:
    """``deepmetric embed RUN INPUTS -o OUT_DIR`` for this process (rank and world size from the
    environment); returns the complete manifest on rank 0, None on the other ranks."""
    from deepmetric.inference import load_model

    rank, world = rank_and_world()
    plan, paths, labels = plan_for_images(model_source, inputs, out_dir, world, batch_size, chunk_size, dtype)

    def factory() -> EmbedFn:
        chosen = device
        if device == "auto" and world > 1:
            import torch

            chosen = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
        model, _, _ = load_model(model_source, chosen)
        return image_embed_fn(model, paths, batch_size)

    return run_sharded(plan, rank, factory, paths, labels, resume=resume, progress=progress and rank == 0)
