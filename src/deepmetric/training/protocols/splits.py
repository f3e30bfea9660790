"""Protocols that re-split the data: stratified k-fold and repeated random splits.

* ``kfold`` (DeMAL-CNN's protocol): sub-run ``fold_<k>`` (k = 0 .. ``protocol.folds`` - 1) gets
  ``data.params`` ``fold=k``, ``n_folds=protocol.folds`` and ``split_seed``
  (``protocol.split_seed``, default the run seed); the loader makes fold k the test split and the
  other folds the training split (stratified by class: :func:`deepmetric.data.splits.fold_indices`;
  speech loaders group by speaker). So the test folds partition the data. The loader must accept
  those three parameters (``folder``, ``csv``, ``ph2``, ``isic2016``, ``isic2017``, ...).
* ``repeated_splits`` (the remote-sensing protocol): sub-run ``split_<r>`` (r = 0 ..
  ``protocol.repeats`` - 1) uses seed ``seed + r`` for the run AND the split, with
  ``test_fraction`` of every class in test: ``data.params`` ``split_seed`` when the loader takes
  it (``scene_folder``, ``folder``, ``csv``), and ``split_by=items`` when it takes ``split_by``
  (``folder``, ``csv``: a per-class split, never a class-disjoint one).

Closed-set evaluation (``eval.protocol`` ``classification`` or ``diagnostic``) needs every class
in training, so with a validation split (``data.val_fraction > 0``) it must be carved from items
(``data.val_by=items``); both planners refuse anything else with a one-line
:class:`~deepmetric.errors.ConfigError`.
"""

from __future__ import annotations

from pathlib import Path

from deepmetric.config import Config, load_config
from deepmetric.errors import ConfigError
from deepmetric.training.protocols.base import SubRun, loader_parameters, require_loader_params, with_data_params

__all__ = ["CLOSED_SET_EVAL", "KFold", "RepeatedSplits", "check_closed_set_validation"]

#: evaluation protocols that predict the training classes (so no class may be held out)
CLOSED_SET_EVAL = ("classification", "diagnostic")


def check_closed_set_validation(config: Config, protocol: str) -> None:
    """Raise :class:`ConfigError` when a closed-set evaluation would validate on held-out classes."""
    d = config.data
    if config.eval.protocol in CLOSED_SET_EVAL and d.val_fraction > 0 and d.val_by != "items":
        raise ConfigError(
            f"protocol.name={protocol} with eval.protocol={config.eval.protocol} needs every class in training, "
            f"but data.val_by={d.val_by} holds whole classes out for validation; set data.val_by=items"
        )


class KFold:
    """``protocol.folds`` stratified folds, each the test split once."""

    def plan(self, config: Config, run_dir: Path) -> list[SubRun]:
        p = config.protocol
        check_closed_set_validation(config, "kfold")
        require_loader_params(config, {"fold", "n_folds", "split_seed"}, "kfold",
                              "use a loader with folds (folder, csv, ph2, isic2016, isic2017) "
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
        check_closed_set_validation(config, "repeated_splits")
        names = loader_parameters(config)
        if "test_fraction" not in names or not names & {"split_seed", "split_by"}:
            raise ConfigError(
                f"protocol.name=repeated_splits needs a loader that splits every class by a seed (parameters "
                f"test_fraction and split_seed or split_by); data.name={config.data.name} has not; "
                "use data.name=scene_folder, folder or csv"
            )
        runs = []
        for r in range(p.repeats):
            seed = config.seed + r
            params: dict[str, object] = {"test_fraction": p.test_fraction}
            if "split_seed" in names:
                params["split_seed"] = seed
            if "split_by" in names:
                params["split_by"] = "items"
            cfg = with_data_params(config, **params)
            runs.append(SubRun(f"split_{r}", load_config(cfg, [f"seed={seed}"]), {"split": r, "seed": seed}))
        return runs
