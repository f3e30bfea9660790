"""Training: ``fit(config, run_dir)`` and its pieces (builders, optimizer groups, schedules,
checkpoints, embedding a dataset).

    from deepmetric.config import load_config
    from deepmetric.training import fit
    summary = fit(load_config("recipe.yaml", ["trainer.steps=200"]), "runs/demo")

``fit`` trains one run; ``run_protocol`` runs what the recipe's ``protocol`` section names (one
fit, k folds, repeated splits, the speaker-transfer grid), as ``deepmetric train`` does.
"""

from deepmetric.training.checkpoint import load_checkpoint, save_checkpoint
from deepmetric.training.embed import embed
from deepmetric.training.fit import fit
from deepmetric.training.protocols import run_protocol
from deepmetric.training.run_folder import RunPaths, load_trained

__all__ = ["RunPaths", "embed", "fit", "load_checkpoint", "load_trained", "run_protocol", "save_checkpoint"]
