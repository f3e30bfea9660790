"""``protocol.name: speaker_transfer``: adapt a spoken-word model to a new speaker from n utterances per word.

The protocol of Takashima et al., Interspeech 2020 (a reconstruction): for every speaker ``t``
in ``protocol.target_speakers`` (in that order) the plan holds, in training order,

1. ``pretrain_<t>`` (when ``pretrain_finetune`` is in ``protocol.settings``): train on every
   other speaker (``data.params``: ``role=source``, ``target_speaker=t``); group
   ``"source_only, n=0"``: its test metrics are the source model on the target's held-out
   utterances, with the *source* speakers' training items as prototypes / neighbours;
2. for every ``n`` in ``protocol.shots``:

   * ``target_only_<t>_n<n>`` (``target_only`` in settings): from scratch on the target's ``n``
     utterances per word (``role=target``, ``shots=n``); group ``"target_only, n=<n>"``;
   * ``finetune_<t>_n<n>`` (``pretrain_finetune`` in settings): the same data, starting from
     ``pretrain_<t>``'s selected checkpoint (``model.init_from``), for ``protocol.finetune_steps``
     steps (null: ``trainer.steps``) at ``optimizer.lr x protocol.finetune_lr_mult``; group
     ``"pretrain_finetune, n=<n>"``.

Every sub-run shares ``held_out``, ``max_shots = max(shots)`` and ``split_seed``
(``protocol.split_seed``, null: the run seed), so the test split -- the target's ``held_out``
utterances per word -- is the same set in every sub-run of a target, never trained on, and the
n-shot training sets are nested (see :mod:`deepmetric.data.speech_splits`). Groups do not name
the speaker, so ``summary.json`` averages each (setting, n) over the target speakers.

Checkpoint selection, honestly: the target runs have 1-10 utterances per word, so there is no
room for a validation split. They train with ``data.val_fraction=0``, ``eval.checkpoint=last``
(nothing is selected: the test metrics are those of the last step), ``trainer.eval_every=0`` and
no early stopping; the trainer requires ``eval.split=test`` without a validation split, so the
only two evaluations (step 0 and the last step) are on the test split and choose nothing. The
pre-training run keeps the recipe's validation split (carved from the *source* speakers' items;
``data.val_by: items``) and ``eval.checkpoint``; with ``eval.checkpoint=best`` it must select on
``eval.split=val``, since a checkpoint chosen on the target's held-out utterances would leak
them into fine-tuning. Fine-tuning starts from the checkpoint whose test metrics the
pre-training run reports (``best.pt`` or ``last.pt``).

With ``n = 1`` a word has a single training utterance: the P x K sampler with
``sampler.small_class_policy=replace`` draws it k times and the model's training transform
(SpecAugment for ``audio_cnn``) makes the views differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepmetric.config import Config, load_config
from deepmetric.errors import ConfigError
from deepmetric.training.protocols.base import SubRun, require_loader_params, with_data_params

__all__ = ["SOURCE_GROUP", "SpeakerTransfer", "corpus_speakers"]

#: group of the pre-training runs: the source model, no target utterance trained on
SOURCE_GROUP = "source_only, n=0"
#: data.params of the speaker-disjoint split, which the transfer split replaces
_DISJOINT_PARAMS = ("test_speakers", "test_speaker_fraction")
_TRANSFER_PARAMS = {"target_speaker", "role", "shots", "held_out", "max_shots", "split_seed"}


def corpus_speakers(config: Config) -> list[str]:
    """Sorted speakers of ``config``'s whole corpus. Lists files only; no audio is decoded.

    The loader is asked for its training side with ``test_speakers=[]`` (every speaker trains);
    a corpus that fixes its sides itself (a CSV ``split`` column) refuses that, and then the
    union of its two sides is every item."""
    from deepmetric.training.builders import load_splits

    drop = ("split_by", *_DISJOINT_PARAMS)  # the official lists would drop their validation items
    params = {k: v for k, v in config.data.params.items() if k not in drop}
    try:
        sides = load_splits(_override(config, **{"data.params": {**params, "test_speakers": []}}), None, ("train",))
    except ConfigError:
        sides = load_splits(_override(config, **{"data.params": params}), None, ("train", "test"))
    found: set[str] = set()
    for side in sides.values():
        speakers = getattr(side, "speakers", None)
        if speakers is None:
            raise ConfigError(
                f"protocol.name=speaker_transfer needs speaker labels, but data.name={config.data.name} gives none; "
                "use fsdd, speech_commands or speech_csv"
            )
        found.update(str(s) for s in speakers)
    return sorted(found)


def _override(config: Config, **keys: Any) -> Config:
    """``config`` with dotted ``keys`` (``"trainer.steps"``) replaced, validated."""
    data = config.to_dict()
    for dotted, value in keys.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return load_config(data)


def _check(config: Config) -> None:
    p = config.protocol
    require_loader_params(config, _TRANSFER_PARAMS, "speaker_transfer", "use data.name fsdd, speech_commands or speech_csv")
    stray = [k for k in (*_DISJOINT_PARAMS, *sorted(_TRANSFER_PARAMS)) if k in config.data.params]
    if stray:
        raise ConfigError(
            f"protocol.name=speaker_transfer sets the split itself, but data.params sets {', '.join(stray)}; "
            "remove them (use protocol.target_speakers, shots, held_out, split_seed)"
        )
    if "pretrain_finetune" in p.settings and config.eval.checkpoint == "best" and config.eval.split != "val":
        raise ConfigError(
            "protocol speaker_transfer: the pre-training run would choose its checkpoint on the target's held-out "
            "test utterances and hand it to fine-tuning; set eval.split=val with data.val_fraction > 0, or "
            "eval.checkpoint=last"
        )


class SpeakerTransfer:
    """Plans pre-training, target-only and fine-tuning runs per target speaker (module docstring)."""

    def plan(self, config: Config, run_dir: Path) -> list[SubRun]:
        p = config.protocol
        _check(config)
        speakers = corpus_speakers(config)
        if not p.target_speakers:
            raise ConfigError(
                f"protocol.target_speakers is empty; name one or more of the corpus speakers: {', '.join(speakers[:20])}"
                + (f", ... ({len(speakers)} in all)" if len(speakers) > 20 else "")
            )
        unknown = [s for s in p.target_speakers if s not in speakers]
        if unknown:
            raise ConfigError(
                f"protocol.target_speakers {unknown} are not in the corpus; speakers are {', '.join(speakers[:20])}"
                + (f", ... ({len(speakers)} in all)" if len(speakers) > 20 else "")
            )
        if len(set(p.target_speakers)) != len(p.target_speakers):
            raise ConfigError(f"protocol.target_speakers repeats a speaker: {p.target_speakers}; list each once")
        split = {"held_out": p.held_out, "max_shots": max(p.shots),
                 "split_seed": config.seed if p.split_seed is None else p.split_seed}
        target_config = _override(config, **{
            "data.val_fraction": 0.0, "eval.split": "test", "eval.checkpoint": "last",
            "trainer.eval_every": 0, "trainer.early_stopping_patience": None,
        })
        finetune_config = _override(target_config, **{
            "optimizer.lr": config.optimizer.lr * p.finetune_lr_mult,
            **({"trainer.steps": p.finetune_steps, "trainer.epochs": None} if p.finetune_steps is not None else {}),
        })
        checkpoint = "best.pt" if config.eval.checkpoint == "best" else "last.pt"
        runs: list[SubRun] = []
        for speaker in p.target_speakers:
            pretrain_name = f"pretrain_{speaker}"
            if "pretrain_finetune" in p.settings:
                runs.append(SubRun(
                    pretrain_name,
                    with_data_params(config, target_speaker=speaker, role="source", **split),
                    {"target": speaker, "setting": "source_only", "shots": 0},
                    SOURCE_GROUP,
                ))
            for n in p.shots:
                data = {"target_speaker": speaker, "role": "target", "shots": n, **split}
                if "target_only" in p.settings:
                    runs.append(SubRun(
                        f"target_only_{speaker}_n{n}", with_data_params(target_config, **data),
                        {"target": speaker, "setting": "target_only", "shots": n}, f"target_only, n={n}",
                    ))
                if "pretrain_finetune" in p.settings:
                    init = str(Path(run_dir).resolve() / pretrain_name / "checkpoints" / checkpoint)
                    runs.append(SubRun(
                        f"finetune_{speaker}_n{n}",
                        _override(with_data_params(finetune_config, **data), **{"model.init_from": init}),
                        {"target": speaker, "setting": "pretrain_finetune", "shots": n}, f"pretrain_finetune, n={n}",
                    ))
        return runs
