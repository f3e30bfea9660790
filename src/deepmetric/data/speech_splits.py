"""Train/test splits of spoken-word corpora: speaker-disjoint, fixed sides, and speaker transfer.

Every speech loader (``fsdd``, ``speech_commands``, ``speech_csv``) takes the same split
parameters, collected in :class:`SplitParams`, and asks :func:`split_indices` for the items of
one side. Inputs are two parallel lists, ``words[i]`` and ``speakers[i]``, in corpus order;
outputs are sorted item indices, so the order of a split never depends on the seed.

Modes, in order of precedence:

1. **Speaker transfer** (``target_speaker`` set; the sides of the ``speaker_transfer`` protocol,
   :mod:`deepmetric.training.protocols.speaker_transfer`). For every word the target spoke, the target's
   utterances of it (in corpus order) are permuted by one ``numpy.random.default_rng(split_seed)``
   that visits the words in sorted order; the first ``max_shots`` form the word's *pool* and the
   next ``held_out`` (``None``: all the rest) its *held-out* items. Hence for a fixed
   ``max_shots`` the held-out set is identical for every ``shots`` and never meets a pool, and
   the ``shots`` = 1 training set is a subset of the ``shots`` = 5 one, itself a subset of the
   ``shots`` = 10 one.

   * ``role="target"``: train = the first ``shots`` pool items of every word; test = held-out.
   * ``role="source"``: train = every item of every other speaker (``shots`` is ignored);
     test = the target's held-out items.

   Words the target never spoke (e.g. ``_silence_``) are absent from the target's sides; a word
   spoken fewer than ``max_shots + held_out`` times (``max_shots + 1`` with ``held_out=None``)
   is an error. A split column or official lists are ignored: the protocol defines its own sides.
2. **Fixed sides** (a loader passes ``sides``: a CSV ``split`` column, Speech Commands'
   official lists): item ``i`` is on side ``sides[i]`` (``None``: on neither side). Setting
   ``test_speakers`` / ``test_speaker_fraction`` as well is an error.
3. **Speaker-disjoint** (the default): ``test_speakers`` explicitly, or a seeded
   ``test_speaker_fraction`` of the speakers (``round(fraction x speakers)``, at least one on
   each side). Speaker ``_silence_`` (background-noise segments) is never drawn for test: it
   stays on the training side unless ``test_speakers`` names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from deepmetric.errors import ConfigError, DataError

#: the speaker of Speech Commands' background-noise segments (label ``_silence_``)
SILENCE_SPEAKER = "_silence_"
SPLITS = ("train", "test")
ROLES = ("source", "target")


@dataclass(frozen=True)
class SplitParams:
    """The split parameters every speech loader accepts (see the module docstring)."""

    test_speakers: Sequence[str] | None = None
    test_speaker_fraction: float | None = None
    split_seed: int = 0
    target_speaker: str | None = None
    shots: int | None = None
    held_out: int | None = None
    max_shots: int = 10
    role: str = "target"

    def speaker_params_set(self) -> list[str]:
        """Names of the speaker-disjoint parameters that are set (not None)."""
        return [n for n in ("test_speakers", "test_speaker_fraction") if getattr(self, n) is not None]

    def check(self) -> None:
        """Raise :class:`ConfigError` for out-of-range or conflicting values."""
        if self.role not in ROLES:
            raise ConfigError(f"unknown role '{self.role}'; use 'source' or 'target'")
        stray = [n for n in ("shots", "held_out") if getattr(self, n) is not None]
        if self.target_speaker is None and stray:
            raise ConfigError(f"{', '.join(stray)} is set but target_speaker is not; set target_speaker or remove it")
        if self.target_speaker is not None and self.speaker_params_set():
            raise ConfigError(
                f"target_speaker is set together with {', '.join(self.speaker_params_set())}; "
                "the transfer split picks its own sides, so remove the latter"
            )
        if self.test_speakers is not None and self.test_speaker_fraction is not None:
            raise ConfigError("test_speakers and test_speaker_fraction are both set; keep one of them")
        if self.test_speakers is not None and isinstance(self.test_speakers, str):
            raise ConfigError(f"test_speakers must be a list of names, got the string '{self.test_speakers}'")
        if self.test_speaker_fraction is not None and not 0.0 < self.test_speaker_fraction < 1.0:
            raise ConfigError(f"test_speaker_fraction must be in (0, 1), got {self.test_speaker_fraction}")
        if self.max_shots < 1:
            raise ConfigError(f"max_shots must be >= 1, got {self.max_shots}")
        if self.held_out is not None and self.held_out < 1:
            raise ConfigError(f"held_out must be >= 1 (or null for all the rest), got {self.held_out}")
        if self.target_speaker is not None and self.role == "target":
            if self.shots is None:
                raise ConfigError("role=target needs shots (utterances per word to train on); set e.g. shots=5")
            if not 1 <= self.shots <= self.max_shots:
                raise ConfigError(f"shots must be in [1, max_shots={self.max_shots}], got {self.shots}")


@dataclass(frozen=True)
class TransferSplit:
    """The target speaker's items: per word, a pool (first n = n shots) and held-out items."""

    pools: dict[str, list[int]]
    held_out: list[int]

    def shots(self, n: int) -> list[int]:
        """Sorted indices of the first ``n`` pool items of every word."""
        return sorted(i for pool in self.pools.values() for i in pool[:n])


def _name_list(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def transfer_split(
    words: Sequence[str], speakers: Sequence[str], target: str, max_shots: int, held_out: int | None, split_seed: int
) -> TransferSplit:
    """Pools of ``max_shots`` and ``held_out`` held-out items per word of speaker ``target``."""
    if target not in set(speakers):
        raise DataError(f"target speaker '{target}' is not in the corpus; speakers are {_name_list(set(speakers))}")
    need = max_shots + (held_out if held_out is not None else 1)
    rng = np.random.default_rng(split_seed)
    pools: dict[str, list[int]] = {}
    rest: list[int] = []
    for word in sorted(set(words)):
        items = [i for i, (w, s) in enumerate(zip(words, speakers)) if w == word and s == target]
        if not items:
            continue
        if len(items) < need:
            raise DataError(
                f"speaker '{target}' has {len(items)} utterances of word '{word}' but the transfer split needs "
                f"{need} (max_shots={max_shots} + held_out={held_out if held_out is not None else 1}); "
                "lower max_shots or held_out"
            )
        order = [items[j] for j in rng.permutation(len(items))]
        pools[word] = order[:max_shots]
        rest += order[max_shots:] if held_out is None else order[max_shots:max_shots + held_out]
    return TransferSplit(pools, sorted(rest))


def speaker_disjoint_test_speakers(
    speakers: Sequence[str], test_speakers: Sequence[str] | None, fraction: float | None, split_seed: int
) -> set[str]:
    """The test side's speakers: ``test_speakers`` (checked against the corpus) or a seeded
    ``fraction`` of the sorted speakers other than :data:`SILENCE_SPEAKER`."""
    present = set(speakers)
    drawable = sorted(present - {SILENCE_SPEAKER})
    if test_speakers is not None:
        unknown = sorted(set(test_speakers) - present)
        if unknown:
            raise DataError(
                f"test speaker(s) {unknown} not in the corpus; speakers are {_name_list(drawable)} "
                "(set data.params.test_speakers or test_speaker_fraction)"
            )
        if not set(drawable) - set(test_speakers):
            raise DataError("test_speakers names every speaker, leaving none to train on; move one to training")
        return set(test_speakers)
    if len(drawable) < 2:
        raise DataError(f"a speaker-disjoint split needs >= 2 speakers, the corpus has {len(drawable)}: {drawable}")
    n_test = min(len(drawable) - 1, max(1, round(float(fraction) * len(drawable))))
    order = np.random.default_rng(split_seed).permutation(len(drawable))
    return {drawable[j] for j in order[:n_test]}


def split_indices(
    words: Sequence[str],
    speakers: Sequence[str],
    split: str,
    params: SplitParams,
    sides: Sequence[str | None] | None = None,
    default_test_speakers: Sequence[str] | None = None,
    default_fraction: float = 0.2,
) -> list[int]:
    """Sorted indices of side ``split`` ("train" or "test"); see the module docstring for the modes.

    ``default_test_speakers`` (else ``default_fraction``) applies when neither
    ``test_speakers`` nor ``test_speaker_fraction`` is set.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'; use 'train' or 'test'")
    params.check()
    if params.target_speaker is not None:
        return _transfer_side(words, speakers, split, params)
    if sides is not None:
        if params.speaker_params_set():
            raise ConfigError(
                f"{', '.join(params.speaker_params_set())} is set but the data fixes the split itself "
                "(a split column or the official lists); remove it, or drop the column / set split_by=speaker"
            )
        return [i for i, side in enumerate(sides) if side == split]
    test_speakers, fraction = params.test_speakers, params.test_speaker_fraction
    if test_speakers is None and fraction is None:
        test_speakers, fraction = default_test_speakers, (None if default_test_speakers else default_fraction)
    chosen = speaker_disjoint_test_speakers(speakers, test_speakers, fraction, params.split_seed)
    return [i for i, s in enumerate(speakers) if (s in chosen) == (split == "test")]


def _transfer_side(words: Sequence[str], speakers: Sequence[str], split: str, params: SplitParams) -> list[int]:
    target = str(params.target_speaker)
    parts = transfer_split(words, speakers, target, params.max_shots, params.held_out, params.split_seed)
    if split == "test":
        return parts.held_out
    if params.role == "source":
        return [i for i, s in enumerate(speakers) if s != target]
    return parts.shots(int(params.shots or 0))
