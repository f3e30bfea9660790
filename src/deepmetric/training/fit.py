"""The training loop: ``fit(config, run_dir)`` trains, evaluates, checkpoints and writes the run folder.

Flow (one run folder, see docs/run_folder.md):

1. Seed everything, build model, datasets (validation carved from the training split), loss,
   optimizer (backbone / head / loss groups) and the batch sampler (P x K, or triplets).
2. Step 0: evaluate the untrained network on the selection split (``eval.split``, a candidate
   for ``best.pt``) and on the test split (the *baseline*).
3. Train for ``trainer.steps`` (or ``trainer.epochs`` x batches per epoch) optimizer steps:
   per-step seeding, warm-up + schedule, optional AMP and gradient clipping; log every
   ``log_every`` steps; evaluate every ``eval_every``; keep ``best.pt`` by ``eval.select_metric``;
   write ``last.pt`` every ``checkpoint_every``; stop early after ``early_stopping_patience``
   evaluations without improvement.
4. Evaluate the best checkpoint (chosen on the selection split) on the test split and save its
   test embeddings.

Resuming (``resume=True``) restores model, loss, optimizer, AMP scaler, step, sampler position,
evaluation history and RNG states from ``last.pt``; because every step re-seeds the RNGs from
(seed, step) and every training item from (seed, epoch, position), N steps + N resumed steps give
the same weights as 2N steps. Ctrl-C or SIGTERM finishes the current step, writes ``last.pt`` and
raises :class:`RunInterrupted` (a ``KeyboardInterrupt``).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from deepmetric.config import Config, config_to_yaml, load_config, save_config
from deepmetric.errors import ConfigError, DataError, DeepMetricError
from deepmetric.models.contracts import trained_outputs
from deepmetric.run_files import MetricsFile, write_run_file
from deepmetric.training import distributed as dist_utils
from deepmetric.training.builders import (
    Splits,
    build_datasets,
    build_loss_from_config,
    build_model,
    build_sampler,
    embedding_dim_of,
)
from deepmetric.training.checkpoint import init_weights, load_checkpoint, save_checkpoint, save_npz
from deepmetric.training.csv_log import CsvLog
from deepmetric.training.embed import class_names_of, dataset_paths, forward_batch, to_device
from deepmetric.training.eval_protocols import EvalInputs, build_eval_protocol
from deepmetric.training.evaluate import select_value
from deepmetric.training.interrupt import Interrupt, RunInterrupted
from deepmetric.training.optim import build_optimizer
from deepmetric.training.parts import PartsFile, unrecorded_warning, write_parts
from deepmetric.training.resume import RESUMABLE_CHANGES, check_resume_config, config_differences
from deepmetric.training.robust import BackboneFreeze, WeightEMA, interpolate_state, swapped_weights
from deepmetric.training.run_folder import RunPaths
from deepmetric.training.run_lock import RunLock
from deepmetric.training.schedule import apply_lr, effective_warmup, lr_factor
from deepmetric.training.seed import (
    derive_seed,
    get_rng_state,
    resolve_device,
    seed_everything,
    seed_step,
    set_rng_state,
)
from deepmetric.training.selection import fitted_sampler, item_validation_warning
from deepmetric.training.views import SeededItems, seeded_batches

__all__ = ["DEFAULT_STEPS", "RESUMABLE_CHANGES", "RunInterrupted", "config_differences", "fit"]

#: training length when neither trainer.steps nor trainer.epochs is set
DEFAULT_STEPS = 1000

def _clean(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


def _total_steps(config: Config, steps_per_epoch: int) -> int:
    if config.trainer.steps is not None:
        return config.trainer.steps
    if config.trainer.epochs is not None:
        return config.trainer.epochs * steps_per_epoch
    return DEFAULT_STEPS


def _amp_enabled(config: Config, device: torch.device) -> bool:
    amp = config.trainer.amp
    if amp == "auto":
        return device.type == "cuda"
    if amp and device.type != "cuda":
        raise ConfigError(f"trainer.amp=true needs a CUDA device, but training runs on {device}; set trainer.amp=auto")
    return bool(amp)


def resolve_workers(data: Any, device: torch.device | None = None) -> int:
    """``data.num_workers``; 'auto' = 0 when the images are cached and training runs on the CPU
    (augmenting cached pixels costs about 1 ms an image against 15 ms or more of CPU compute, and a
    worker would only take a core from the compute threads), else min(4, cores - 1)."""
    if data.num_workers != "auto":
        return int(data.num_workers)
    if data.cache != "none" and (device is None or device.type == "cpu"):
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def data_line(config: Config, workers: int, train: Any) -> str:
    """The line said at the start of training: loader workers, torch threads, the image cache."""
    from deepmetric.data.cache import cache_of

    how = "auto" if config.data.num_workers == "auto" else "data.num_workers"
    cache = cache_of(train)
    text = cache.describe() if cache is not None else "cache none"
    return (f"data: {workers} loader worker(s) ({how}, {os.cpu_count() or 1} CPU cores), "
            f"{torch.get_num_threads()} torch thread(s), {text}")


def single_item_classes(dataset: Any) -> list[str]:
    """Names (or numbers) of the classes of ``dataset`` that hold exactly one item."""
    labels = np.asarray(getattr(dataset, "labels", []), dtype=np.int64)
    if labels.size == 0:
        return []
    singles = np.flatnonzero(np.bincount(labels) == 1)
    names = class_names_of(dataset)
    return [names[c] if names is not None and c < len(names) else str(int(c)) for c in singles]


def _fitted_sampler(splits: Splits, config: Config) -> tuple[Any, str | None]:
    """The sampler section that fits the training classes: P x K batches need ``sampler.p``
    classes; when the classes held out for validation are what leaves too few, P adapts (see
    :func:`deepmetric.training.selection.fitted_sampler`), otherwise the error says what to change."""
    sampler = config.sampler
    if sampler.name != "pk" or splits.num_classes >= sampler.p:
        return sampler, None
    left = splits.num_classes
    held_out = len(set(splits.val.labels)) if splits.val is not None and splits.val_by == "classes" else 0
    if held_out and left + held_out >= sampler.p:  # the validation classes made the difference: P adapts
        return fitted_sampler(sampler, left, held_out)
    also = f" ({held_out} more are held out for validation)" if held_out else ""
    raise DataError(
        f"the training split has {left} classes{also}, fewer than sampler.p={sampler.p} classes per batch; set "
        f"sampler.p={left} or add classes"
    )


class _Run:
    """State and pieces of one training run (internal to :func:`fit`)."""

    def __init__(self, config: Config, run_dir: Path, resume: bool, progress: bool,
                 parts: PartsFile | None = None, model: nn.Module | None = None,
                 loss: nn.Module | None = None) -> None:
        self.config = config
        self.paths = RunPaths(run_dir)
        self.progress = progress
        self.main = dist_utils.is_main_process()
        self.warnings: list[str] = []
        self.device = resolve_device(config.device)
        self.amp = _amp_enabled(config, self.device)
        seed_everything(config.seed, config.deterministic)
        self.model: nn.Module = model if model is not None else build_model(config)
        self.splits: Splits = build_datasets(config, self.model, cache=True, run_dir=self.paths.root)
        self.loss: nn.Module = build_loss_from_config(
            config.loss, self.splits.num_classes, embedding_dim_of(self.model),
            outputs=trained_outputs(self.model), base=loss,
        )
        for section in ("model", "loss"):
            record = getattr(parts, section) if parts is not None else None
            message = unrecorded_warning(section, record) if record is not None else None
            if message:
                self.note(message)
        if config.model.init_from is not None and not resume:
            loaded = init_weights(self.model, self.loss, config.model.init_from, class_names_of(self.splits.train))
            if not loaded["loss_loaded"] and list(self.loss.state_dict()):
                self.note(f"model.init_from: the loss's parameters (classifier, centers) of {loaded['checkpoint']} "
                          "do not fit this run's classes; they start fresh")
        self.eval_protocol = build_eval_protocol(config.eval)
        self.workers = resolve_workers(config.data, self.device)
        if self.main:
            print(data_line(config, self.workers, self.splits.train), file=sys.stderr)
        self.model.to(self.device)
        self.loss.to(self.device)
        # several processes: every rank starts from rank 0's weights, pair losses see all ranks'
        # embeddings, gradients are summed over ranks (see training/distributed.py); rank 0 writes
        self.world_size = dist_utils.world_size()
        dist_utils.broadcast_parameters(self.model)
        dist_utils.broadcast_parameters(self.loss)
        self.train_loss: nn.Module = dist_utils.GatheredLoss(self.loss) if self.world_size > 1 else self.loss
        self.optimizer = build_optimizer(self.model, self.loss, config.optimizer)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        for message in self.splits.notes:
            self.note(message)
        sampler_config, message = _fitted_sampler(self.splits, config)
        if message:
            self.note(message)
        message = item_validation_warning(config, self.splits.val_by, self.splits.support, self.splits.test)
        if message:
            self.note(message)
        self.sampler = build_sampler(self.splits.train.labels, sampler_config, config.seed,
                                     dist_utils.rank(), self.world_size)
        self.steps_per_epoch = len(self.sampler)
        if self.steps_per_epoch == 0:
            raise DataError(
                f"the {config.sampler.name} sampler yields no batch from {len(self.splits.train)} training "
                f"items in {self.splits.num_classes} classes; lower sampler.p (now {config.sampler.p}) or "
                "sampler.k (pk), or set sampler.batches_per_epoch (triplet)"
            )
        self.total_steps = _total_steps(config, self.steps_per_epoch)
        self.counts: dict[str, int] = {}
        singles = single_item_classes(self.splits.train)
        if singles and config.sampler.name == "pk":
            self.counts["single_item_train_classes"] = len(singles)
            if config.sampler.small_class_policy == "replace":
                self.note(
                    f"{len(singles)} training class(es) have a single item (e.g. '{singles[0]}'): each forms its "
                    "positive pair with an augmented copy of itself; set sampler.small_class_policy=drop to leave "
                    "them out"
                )
        warmup = effective_warmup(config.scheduler.warmup_steps, self.total_steps)
        if warmup < config.scheduler.warmup_steps:
            self.note(f"scheduler.warmup_steps={config.scheduler.warmup_steps} is more than half of the "
                      f"{self.total_steps}-step run: warming up for {warmup} steps instead")
        self.selection = self.splits.val if config.eval.split == "val" else self.splits.test
        # progress state (everything saved in checkpoints)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.elapsed = 0.0
        self.evaluations: list[dict[str, Any]] = []
        self.baseline: dict[str, Any] | None = None
        self.best: dict[str, Any] | None = None
        self.bad_evals = 0
        self.stopped_early = False
        self.started = time.perf_counter()
        # robust fine-tuning (finetune.*, training/robust.py): LP-FT, EMA of the weights, WiSE-FT
        ft = config.finetune
        self.freeze: BackboneFreeze | None = None
        if ft.linear_probe_steps:
            self.freeze = BackboneFreeze(self.model, self.optimizer, ft.linear_probe_steps)
        if self.freeze is not None and ft.linear_probe_steps >= self.total_steps:
            self.note(f"finetune.linear_probe_steps={ft.linear_probe_steps} covers the whole {self.total_steps}-step "
                      "run: the backbone never trains")
        self.ema: WeightEMA | None = None
        if ft.ema_decay is not None:
            self.ema = WeightEMA(self.model, self.loss, ft.ema_decay, ft.ema_start_step)
        self.initial: dict[str, Tensor] | None = None
        if ft.wise_alphas is not None:
            self.initial = self._initial_weights(resume)
        if resume:
            self._restore(load_checkpoint(self.paths.last, map_location=self.device))

    # ---------------------------------------------------------------- checkpoints
    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "elapsed": self.seconds(),
            "num_classes": self.splits.num_classes,
            "class_names": class_names_of(self.splits.train) or [],
            "model": self.model.state_dict(),
            "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.amp else {},
            "scheduler": {"step": self.step, "total_steps": self.total_steps},
            "sampler": {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "seed": self.config.seed},
            "rng": get_rng_state(),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
            "history": {
                "evaluations": self.evaluations,
                "baseline": self.baseline,
                "best": self.best,
                "bad_evals": self.bad_evals,
                "stopped_early": self.stopped_early,
            },
            "config": config_to_yaml(self.config),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # the config may not change base rates
            group["base_lr"] = float(group["base_lr"])
        if self.amp and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.epoch = int(state["sampler"]["epoch"])
        self.batch_in_epoch = int(state["sampler"]["batch_in_epoch"])
        self.elapsed = float(state["elapsed"])
        history = state["history"]
        self.evaluations = list(history["evaluations"])
        self.baseline = history["baseline"]
        self.best = history["best"]
        self.bad_evals = int(history["bad_evals"])
        self.stopped_early = bool(history["stopped_early"])
        set_rng_state(state["rng"])
        if self.ema is not None:
            if "ema" not in state:
                raise DataError(f"cannot resume: '{self.paths.last}' holds no EMA of the weights although "
                                "finetune.ema_decay is set; start a new run folder")
            self.ema.load_state_dict(state["ema"])

    def _initial_weights(self, resume: bool) -> dict[str, Tensor]:
        """The step-0 model weights for WiSE-FT (CPU copies): the current ones, or checkpoints/initial.pt."""
        if not resume:
            return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        if not self.paths.initial.is_file():
            raise DataError(f"cannot resume: '{self.paths.initial}' (the step-0 weights WiSE-FT interpolates from, "
                            "finetune.wise_alphas) is missing; start a new run folder")
        return dict(load_checkpoint(self.paths.initial)["model"])

    def save_initial(self) -> None:
        """Write the step-0 weights (model and loss) to checkpoints/initial.pt when WiSE-FT needs them."""
        if self.initial is None or not self.main:
            return
        save_checkpoint({
            "step": 0, "num_classes": self.splits.num_classes,
            "class_names": class_names_of(self.splits.train) or [],
            "model": self.initial, "loss": self.loss.state_dict(), "config": config_to_yaml(self.config),
        }, self.paths.initial)

    def note(self, message: str) -> None:
        """A warning for the user: printed once (main process) and kept in metrics.json."""
        if message not in self.warnings:
            self.warnings.append(message)
            if self.main:
                print(f"warning: {message}", file=sys.stderr)

    def save_last(self) -> None:
        if self.main:
            save_checkpoint(self._state(), self.paths.last)

    def seconds(self) -> float:
        return self.elapsed + time.perf_counter() - self.started

    # ---------------------------------------------------------------- evaluation
    def eval_inputs(self, dataset: Any) -> EvalInputs:
        """What the evaluation protocol sees of ``dataset`` with the current weights."""
        return EvalInputs(
            model=self.model, loss=self.loss, dataset=dataset, config=self.config.eval, device=self.device,
            support=lambda: self.splits.support, num_workers=self.workers,
            class_names=class_names_of(dataset),
        )

    def evaluate(self, dataset: Any, split: str) -> tuple[dict[str, float], EvalInputs]:
        """The protocol's metrics of ``dataset`` and the inputs (with their cached embeddings)."""
        inputs = self.eval_inputs(dataset)
        return self.eval_protocol.evaluate(inputs), inputs

    def _better(self, value: float, than: float) -> bool:
        """Whether ``value`` of eval.select_metric beats ``than`` (strictly: ties keep the earlier)."""
        return value > than if self.config.eval.select_mode == "max" else value < than

    def _record_value(self, metrics: dict[str, Any]) -> float:
        """eval.select_metric of a recorded (cleaned) metrics dict; None counts as NaN (never best)."""
        raw = metrics.get(self.config.eval.select_metric)
        return select_value({self.config.eval.select_metric: math.nan if raw is None else float(raw)},
                            self.config.eval)

    def periodic_evaluation(self) -> None:
        """Evaluate on the selection split; update best.pt and the early-stopping counter."""
        split = self.config.eval.split
        metrics, _ = self.evaluate(self.selection, split)
        value = select_value(metrics, self.config.eval)
        record: dict[str, Any] = {"step": self.step, "split": split, "metrics": _clean(metrics)}
        weights = "raw"
        if self.ema is not None and self.ema.shadow is not None:  # the averaged weights are a candidate too
            with swapped_weights(self.model, self.loss, *self.ema.weights()):
                ema_metrics, _ = self.evaluate(self.selection, split)
            record["ema"] = _clean(ema_metrics)
            ema_value = select_value(ema_metrics, self.config.eval)
            if self._better(ema_value, value):
                value, weights = ema_value, "ema"
        self.evaluations.append(record)
        if self.best is None or self._better(value, self.best["value"]):
            self.best = {"step": self.step, "metric": self.config.eval.select_metric, "value": value,
                         **({"weights": weights} if self.ema is not None else {})}
            self.bad_evals = 0
            if self.main:
                state = self._state()
                if weights == "ema":
                    state["model"], state["loss"] = self.ema.weights()
                save_checkpoint(state, self.paths.best)
        else:
            self.bad_evals += 1
            patience = self.config.trainer.early_stopping_patience
            if patience is not None and self.bad_evals >= patience:
                self.stopped_early = True
        self.write_metrics()

    def write_metrics(self, final: dict[str, Any] | None = None) -> dict[str, Any]:
        best = None
        if self.best is not None:
            best = {**self.best, "value": self.best["value"] if math.isfinite(self.best["value"]) else None}
        record = MetricsFile(
            selection_split=self.config.eval.split,
            steps=self.step,
            total_steps=self.total_steps,
            stopped_early=self.stopped_early,
            evaluations=self.evaluations,
            baseline=self.baseline,
            best=best,
            protocol=self.config.eval.protocol,
            class_names=class_names_of(self.splits.test),
            warnings=self.warnings,
            counts=self.counts,
            **(final or {}),
        )
        if self.main:
            write_run_file(record, self.paths.metrics)
        return record.model_dump(mode="json")

    # ---------------------------------------------------------------- training
    def batches(self) -> Iterator[tuple[Any, Tensor]]:
        """Training batches from the current (epoch, batch_in_epoch) on, forever (epoch after
        epoch); item seeds depend on (seed, epoch, global batch index, position) only."""
        train = SeededItems(self.splits.train)
        seed = self.config.seed
        while True:
            self.sampler.set_epoch(self.epoch)
            epoch_batches = [list(b) for b in self.sampler]
            keyed = seeded_batches(epoch_batches, seed, self.epoch, dist_utils.rank(),
                                   self.world_size)[self.batch_in_epoch:]
            loader = DataLoader(
                train, batch_sampler=keyed, num_workers=self.workers,
                collate_fn=getattr(self.splits.train, "collate_fn", None),
                pin_memory=self.device.type == "cuda",
            )
            yield from loader
            # the consumer advanced batch_in_epoch for every batch it took
            self.epoch += 1
            self.batch_in_epoch = 0

    def train_step(self, inputs: Any, labels: Tensor) -> Tensor:
        seed_step(derive_seed(self.config.seed, "step", self.step))
        apply_lr(self.optimizer, lr_factor(self.step, self.total_steps, self.config.scheduler))
        self.model.train()
        self.loss.train()
        if self.freeze is not None:  # LP-FT: the backbone is frozen for the first linear_probe_steps steps
            self.freeze.apply(self.step)
        inputs = to_device(inputs, self.device)
        labels = torch.as_tensor(labels).long().to(self.device)
        with torch.autocast(self.device.type, enabled=self.amp):
            outputs = forward_batch(self.model, inputs)
        # the loss runs in float32: one embedding tensor, or every named output of the model
        outputs = outputs.float() if isinstance(outputs, Tensor) else {k: v.float() for k, v in outputs.items()}
        loss = self.train_loss(outputs, labels)
        if not bool(torch.isfinite(loss.detach())):
            if self.amp:  # the scaler skips the step; the next steps lower the scale
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.update(self.scaler.get_scale() / 2)
                return loss.detach()
            raise ConfigError(
                f"the training loss became {loss.item()} at step {self.step}; lower optimizer.lr, "
                "set trainer.grad_clip (e.g. 1.0), or check the data"
            )
        self.scaler.scale(loss).backward()
        if self.world_size > 1:
            dist_utils.sync_gradients(self.model.parameters(), self.loss.parameters())
        if self.config.trainer.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.trainer.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def train(self, interrupt: Interrupt) -> None:
        cfg = self.config.trainer
        log = CsvLog(self.paths.log if self.main else os.devnull, resume_step=self.step)
        bar = None
        if self.progress and self.main:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total_steps, initial=self.step, desc="training", unit="step", dynamic_ncols=True)
        running: list[Tensor] = []
        try:
            if self.step >= self.total_steps or self.stopped_early:
                return
            if self.ema is not None and self.step == 0 and self.ema.shadow is None:
                self.ema.update(0)  # finetune.ema_start_step=0: the average starts from the initial weights
            for inputs, labels in self.batches():
                loss = self.train_step(inputs, labels)
                self.step += 1
                if self.ema is not None:
                    self.ema.update(self.step)
                self.batch_in_epoch += 1
                running.append(loss)
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    mean_loss = float(torch.stack(running).float().mean())
                    running = []
                    head_lr = next((g["lr"] for g in self.optimizer.param_groups if g["name"] == "head"),
                                   self.optimizer.param_groups[0]["lr"])
                    log.write(step=self.step, epoch=self.epoch, loss=round(mean_loss, 6), lr=head_lr,
                              seconds=round(self.seconds(), 3))
                    if bar is not None:
                        bar.set_postfix(loss=f"{mean_loss:.4f}")
                if bar is not None:
                    bar.update(1)
                done = self.step >= self.total_steps
                if cfg.eval_every and self.step % cfg.eval_every == 0 and not done:
                    self.periodic_evaluation()
                if done or self.stopped_early:
                    break
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_last()
                if interrupt.requested is not None:
                    raise RunInterrupted(interrupt.requested)
        except KeyboardInterrupt as exc:
            self.save_last()
            self.write_metrics()
            signum = exc.signum if isinstance(exc, RunInterrupted) else signal.SIGINT
            raise RunInterrupted(signum, self.step, self.paths.root) from None
        except Exception:
            # Ctrl-C also reaches data-loader workers, which then exit: a step that was waiting for
            # them fails. The last completed step is consistent, so save it and stop as interrupted.
            if interrupt.requested is None:
                raise
            self.save_last()
            self.write_metrics()
            raise RunInterrupted(interrupt.requested, self.step, self.paths.root) from None
        finally:
            if bar is not None:
                bar.close()

    def _last_weights(self) -> str:
        """'raw' or 'ema': the better weights at the last evaluation (for eval.checkpoint=last)."""
        last = self.evaluations[-1] if self.evaluations else {}
        if self.ema is None or last.get("ema") is None:
            return "raw"
        better = self._better(self._record_value(last["ema"]), self._record_value(last["metrics"]))
        return "ema" if better else "raw"

    def wise_ft(self, final: dict[str, Any], step: int) -> None:
        """WiSE-FT: interpolate the model between its step-0 weights and the loaded fine-tuned ones for
        every finetune.wise_alphas, evaluate each on the selection split (eval.split), load the alpha
        with the best eval.select_metric (ties: the larger alpha) and record the table in ``final``;
        the loss's parameters stay fine-tuned. Its weights go to checkpoints/wise.pt."""
        assert self.initial is not None
        cfg = self.config.eval
        if cfg.split == "test":
            self.note("finetune.wise_alphas: the WiSE-FT mixing weight is chosen on the test split (eval.split=test), "
                      "so the test metrics are optimistic; set eval.split=val to choose it on held-out training data")
        finetuned = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        table: list[dict[str, Any]] = []
        chosen: float | None = None
        chosen_value = math.nan
        for alpha in self.config.finetune.wise_alphas or []:
            self.model.load_state_dict(interpolate_state(self.initial, finetuned, alpha))
            metrics, _ = self.evaluate(self.selection, cfg.split)
            value = select_value(metrics, cfg)
            table.append({"alpha": alpha, "value": value if math.isfinite(value) else None, "metrics": _clean(metrics)})
            if chosen is None or self._better(value, chosen_value) or (value == chosen_value and alpha > chosen):
                chosen, chosen_value = alpha, value
        assert chosen is not None  # the config requires at least one alpha
        weights = interpolate_state(self.initial, finetuned, chosen)
        self.model.load_state_dict(weights)
        final["wise"] = {"split": cfg.split, "metric": cfg.select_metric, "alpha": chosen, "table": table}
        if self.main:
            save_checkpoint({
                "step": step, "alpha": chosen, "num_classes": self.splits.num_classes,
                "class_names": class_names_of(self.splits.train) or [],
                "model": weights, "loss": self.loss.state_dict(), "config": config_to_yaml(self.config),
            }, self.paths.wise)

    def finish(self) -> dict[str, Any]:
        """Final evaluation on the selection split, test metrics of the best checkpoint, test
        embeddings. Returns the metrics.json content."""
        if self.freeze is not None:
            self.freeze.release()
        if not self.evaluations or self.evaluations[-1]["step"] != self.step:
            self.periodic_evaluation()
        self.save_last()
        final: dict[str, Any] = {}
        best_step = self.best["step"] if self.best is not None else self.step
        if self.config.eval.checkpoint == "best":
            chosen_step, chosen_weights = best_step, (self.best or {}).get("weights", "raw")
        else:
            chosen_step, chosen_weights = self.step, self._last_weights()
        if chosen_step == 0 and self.step > 0:
            self.note(
                f"the checkpoint chosen on the {self.config.eval.split} split is the untrained network (step 0): "
                f"training never improved {self.config.eval.select_metric} there, so the test metrics are the "
                "untrained network's; train longer, or use eval.checkpoint=last for the final weights"
            )
        if chosen_step != self.step or chosen_weights != "raw":
            last_metrics, _ = self.evaluate(self.splits.test, "test")
            final["test_last"] = _clean(last_metrics)
            if self.config.eval.checkpoint == "best":
                dist_utils.barrier()  # rank 0 has finished writing best.pt
                best_state = load_checkpoint(self.paths.best, map_location=self.device)
                self.model.load_state_dict(best_state["model"])
                self.loss.load_state_dict(best_state["loss"])
            elif self.ema is not None:  # eval.checkpoint=last and the averaged weights scored better
                model_state, loss_state = self.ema.weights()
                self.model.load_state_dict(model_state)
                self.loss.load_state_dict(loss_state)
        if self.initial is not None:
            self.wise_ft(final, chosen_step)
        metrics, inputs = self.evaluate(self.splits.test, "test")
        embeddings, labels = inputs.embeddings()
        test_singles = single_item_classes(self.splits.test)
        if test_singles and getattr(self.splits.test, "is_query", None) is None:
            self.counts["single_item_test_classes"] = len(test_singles)
            self.note(
                f"{len(test_singles)} test class(es) have a single item (e.g. '{test_singles[0]}'): as leave-one-out "
                "queries they have nothing to retrieve and are left out of the retrieval metrics (they stay in "
                "the gallery)"
            )
        final["test"] = _clean(metrics)
        final["test_step"] = chosen_step
        if self.ema is not None:
            final["test_weights"] = chosen_weights
        if self.main:
            save_npz(
                self.paths.test_embeddings,
                embeddings=embeddings.numpy(),
                labels=labels.numpy(),
                paths=np.asarray(dataset_paths(self.splits.test), dtype=str),
            )
            self.eval_protocol.write_artifacts(inputs, self.paths.root)
        return self.write_metrics(final)


def _write_report(run_dir: Path) -> None:
    import warnings

    from deepmetric.evaluation.report import write_report

    try:
        write_report(run_dir)
    except (DeepMetricError, OSError, ValueError) as exc:  # the run itself succeeded; say what failed
        warnings.warn(f"training finished but report.html could not be written ({exc}); "
                      f"run 'deepmetric report {run_dir}' to retry", stacklevel=3)


def fit(
    config: Config, run_dir: str | Path, resume: bool = False, progress: bool = True, report: bool = True,
    *, model: nn.Module | None = None, loss: nn.Module | None = None,
) -> dict[str, Any]:
    """Train ``config`` into the run folder ``run_dir`` and return the metrics summary (the
    content of ``metrics.json``: ``evaluations``, ``baseline``, ``best``, ``test``, ...).

    ``resume=True`` continues from ``run_dir/checkpoints/last.pt``; only the keys in
    :data:`RESUMABLE_CHANGES` (e.g. ``trainer.steps`` to train longer) may differ from the run's
    saved ``config.yaml``. Without ``resume`` the folder must not hold a checkpoint yet.
    Ctrl-C or SIGTERM finishes the step, writes ``last.pt`` and raises :class:`RunInterrupted` (a
    ``KeyboardInterrupt``). The run folder is locked for the duration (a second writer fails at
    once, naming the holder); leftover temporary files of a killed writer are removed; a start that
    fails leaves no new run folder behind. With ``report`` (default) the
    run folder also gets ``report.html`` and its plots (a failure there only warns: the trained
    run is complete without it).

    ``model`` / ``loss``: train these objects instead of building ``model.name`` / ``loss.name``;
    the run's config.yaml and ``parts.json`` record their class and constructor arguments so a new
    process can rebuild the run (see :mod:`deepmetric.training.parts`). Resume with the same objects.
    """
    from deepmetric.training.parts import config_with_parts

    if not isinstance(config, Config):
        config = load_config(config)
    for what, obj in (("model", model), ("loss", loss)):
        if obj is not None and not isinstance(obj, nn.Module):
            raise ConfigError(f"fit({what}=...) takes a torch.nn.Module, got {type(obj).__name__}; "
                              f"pass a module or name it in {what}.name")
    config, parts = config_with_parts(config, model, loss)
    dist_utils.init_from_env()  # launched by torchrun: join the process group
    paths = RunPaths(Path(run_dir))
    main = dist_utils.is_main_process()
    existed = paths.root.exists()
    with (RunLock(paths.root) if main else contextlib.nullcontext()):
        return _fit_locked(config, paths, resume, progress, report, main, existed, parts, model, loss)


def _remove_temporaries(paths: RunPaths) -> None:
    """Partial files of an interrupted atomic write (``.NAME.XXXX.tmp``) of an earlier process."""
    for folder in (paths.root, paths.checkpoints):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


def _fit_locked(
    config: Config, paths: RunPaths, resume: bool, progress: bool, report: bool, main: bool, existed: bool,
    parts: PartsFile, model: nn.Module | None = None, loss: nn.Module | None = None,
) -> dict[str, Any]:
    if resume:
        if not paths.last.is_file():
            raise ConfigError(
                f"cannot resume: '{paths.last}' does not exist; train without --resume (resume=False) first"
            )
        if not paths.config.is_file():
            raise ConfigError(
                f"cannot resume: '{paths.config}' is missing, so the run's settings cannot be checked; restore it "
                "or start a new run folder"
            )
        changes = check_resume_config(paths.config, config)
    elif paths.last.is_file():
        raise ConfigError(
            f"run folder '{paths.root}' already holds a checkpoint; resume it (--resume / resume=True) "
            "or choose a new run folder"
        )
    dist_utils.barrier()  # every rank has checked the folder before rank 0 writes into it
    if main:
        _remove_temporaries(paths)
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    fill = getattr(torch.utils, "deterministic", None)
    previous_fill = getattr(fill, "fill_uninitialized_memory", None)
    try:
        try:
            run = _Run(config, paths.root, resume, progress, parts, model, loss)
        except BaseException:
            if main and not existed:  # a failed start leaves no half-made run folder behind
                shutil.rmtree(paths.root, ignore_errors=True)
            raise
        if main:
            paths.checkpoints.mkdir(parents=True, exist_ok=True)
            save_config(config, paths.config)
            write_parts(parts, paths.root)
            if resume:
                print(f"resuming {paths.root} from step {run.step} of {run.total_steps}", file=sys.stderr)
                for key, (before, after) in changes.items():
                    print(f"  changed on resume: {key} {before} -> {after}", file=sys.stderr)
        with Interrupt() as interrupt:  # first Ctrl-C / SIGTERM: finish the step, save last.pt, stop
            if not resume:
                run.save_initial()
                run.periodic_evaluation()  # step 0: the untrained network is a candidate too
                if config.eval.baseline:
                    if config.eval.split == "test":
                        baseline = run.evaluations[0]["metrics"]
                    else:
                        metrics, _ = run.evaluate(run.splits.test, "test")
                        baseline = _clean(metrics)
                    run.baseline = {"step": 0, "split": "test", "metrics": baseline}
                run.write_metrics()
                run.save_last()
            run.train(interrupt)
        summary = run.finish()
        if report and run.main:
            _write_report(paths.root)
        return summary
    finally:  # leave the process's global determinism setting as it was
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        if previous_fill is not None:  # seed_everything turns it off for speed: give it back
            fill.fill_uninitialized_memory = previous_fill
