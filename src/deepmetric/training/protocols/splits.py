"""Protocols that re-split the data: stratified k-fold and repeated random splits.

* ``kfold`` (DeMAL-CNN's protocol): sub-run ``fold_<k>`` gets ``data.params`` ``fold=k``,
  ``n_folds=protocol.folds``, ``split_seed`` (``protocol.split_seed``, default the run seed); the
  loader makes fold k the test split and the other folds the training split (stratified by class;
  speech loaders group by speaker). The loader must accept those three parameters.
* ``repeated_splits`` (the remote-sensing protocol): sub-run ``split_<r>`` uses seed
  ``seed + r`` for the run AND the split: ``data.params`` ``split_seed`` and ``test_fraction``
  when the loader takes ``split_seed`` (``scene_folder``), else ``split_by=items`` and
  ``test_fraction`` (``folder``, ``csv``: they split with the run seed).
"""

from __future__ import annotations

from pathlib import Path

from deepmetric.config import Config, load_config
from deepmetric.errors import ConfigError
from deepmetric.training.protocols.base import SubRun, loader_parameters, require_loader_params, with_data_params

__all__ = ["KFold", "RepeatedSplits"]


class KFold:
    """``protocol.folds`` stratified folds, each the test split once."""

    def plan(self, config: Config, run_dir: Path) -> list[SubRun]:
        p = config.protocol
        require_loader_params(config, {"fold", "n_folds", "split_seed"}, "kfold",
                              "use a loader with folds (ph2, isic2016, isic2017, fsdd, speech_commands, speech_csv) "
                              "or protocol.name=repeated_splits")
        seed = config.seed if p.split_seed is None else p.split_seed
        return [
            SubRun(f"fold_{k}", with_data_params(config, fold=k, n_folds=p.folds, split_seed=seed), {"fold": k})
            for k in range(p.folds)
        ]


class RepeatedSplits:
    """``protocol.repeats`` random per-class train/test splits."""

    def plan(self, config: Config, run_dir: Path) -> list[SubRun]:
        p = config.protocol
        names = loader_parameters(config)
        runs = []
        for r in range(p.repeats):
            seed = config.seed + r
            if "split_seed" in names and "test_fraction" in names:
                cfg = with_data_params(config, split_seed=seed, test_fraction=p.test_fraction)
            elif {"split_by", "test_fraction"} <= names:
                root = Path(config.data.root or ".").expanduser()
                if (root / "train").is_dir() and (root / "test").is_dir():
                    raise ConfigError(
                        f"{root} has fixed train/ and test/ folders, so repeated random splits are impossible; "
                        "point data.root at a folder with one sub-folder per class"
                    )
                cfg = with_data_params(config, split_by="items", test_fraction=p.test_fraction)
            else:
                raise ConfigError(
                    f"protocol.name=repeated_splits needs a loader that splits by a seed (parameters split_seed "
                    f"and test_fraction, or split_by and test_fraction); data.name={config.data.name} has neither; "
                    "use data.name=folder or scene_folder"
                )
            runs.append(SubRun(f"split_{r}", load_config(cfg, [f"seed={seed}"]), {"split": r, "seed": seed}))
        return runs
