"""The dataset registry (``data.name``): name -> loader, see the loader contract below.

**Loader contract.** A loader is called as
``fn(root=..., split="train" | "test", transform=..., seed=..., **data.params)`` -- each of
``root``, ``split``, ``transform`` and ``seed`` only if its signature has a parameter of that
name -- and returns a ``torch.utils.data.Dataset`` whose items are ``(input, label, ...)`` with
``.labels`` (one int per item) and optionally ``.paths``, ``.class_names``, ``.collate_fn`` and
``.is_query`` (bool per item: the test split is then evaluated as queries against the rest as
gallery), ``.cameras`` / ``.persons`` (re-ID) and ``.speakers`` (speech). A loader without a
``split`` parameter may instead return a mapping ``{"train": dataset, "test": dataset}``.
``data.params`` keys are checked against the signature. Loaders that accept ``fold``,
``n_folds`` and ``split_seed`` support the k-fold protocol; loaders that accept ``split_seed``
and ``test_fraction`` support repeated random splits.

``data.name`` may also be an import path ``package.module:function`` to your own loader.
"""

from __future__ import annotations

from deepmetric.registry import Registry

__all__ = ["DATASETS", "SAMPLERS"]

DATASETS = Registry(
    "dataset",
    {
        "folder": "deepmetric.data.folder:folder_dataset",
        "csv": "deepmetric.data.manifest:csv_dataset",
        "omniglot": "deepmetric.data.omniglot:omniglot_dataset",
        "olivetti": "deepmetric.data.olivetti:olivetti_dataset",
        "cub200": "deepmetric.data.benchmarks:cub200_dataset",
        "cars196": "deepmetric.data.benchmarks:cars196_dataset",
        "sop": "deepmetric.data.benchmarks:sop_dataset",
        "inshop": "deepmetric.data.benchmarks:inshop_dataset",
        "brazilian_coffee": "deepmetric.data.brazilian_coffee:brazilian_coffee_dataset",
        "scene_folder": "deepmetric.data.scene_split:scene_folder_dataset",
        "ph2": "deepmetric.data.lesions:ph2_dataset",
        "isic2016": "deepmetric.data.lesions:isic2016_dataset",
        "isic2017": "deepmetric.data.lesions:isic2017_dataset",
        "fsdd": "deepmetric.data.speech:fsdd_dataset",
        "speech_commands": "deepmetric.data.speech:speech_commands_dataset",
        "speech_csv": "deepmetric.data.speech:speech_csv_dataset",
        "mars": "deepmetric.data.reid_datasets:mars_dataset",
        "prid2011": "deepmetric.data.reid_datasets:prid2011_dataset",
        "ilidsvid": "deepmetric.data.reid_datasets:ilidsvid_dataset",
        "market1501": "deepmetric.data.reid_datasets:market1501_dataset",
        "tracklet_csv": "deepmetric.data.reid_datasets:tracklet_csv_dataset",
    },
)

#: ``sampler.name`` -> batch sampler class. ``pk``: (labels, p, k, seed, small_class_policy[, rank,
#: world_size]); ``triplet``: (labels, triplets_per_batch, batches_per_epoch, seed), batches laid
#: out [anchors; positives; negatives]; both with ``set_epoch(epoch)`` and ``len()``
SAMPLERS = Registry(
    "sampler",
    {
        "pk": "deepmetric.data.samplers:PKSampler",
        "triplet": "deepmetric.data.triplet_sampler:TripletBatchSampler",
    },
)
