"""Data: datasets per source format, seeded splits, the P x K sampler, image transforms.

Every image dataset yields ``(image_tensor, label)`` and exposes ``labels``, ``paths``,
``class_names`` (see :mod:`deepmetric.data.image_dataset`). Loaders by source:

* :func:`folder_dataset` -- ``root/<class>/<image>``;
* :func:`csv_dataset` -- a CSV manifest (path, label, optional split/is_query/is_gallery/camera/sequence);
* :func:`cub200_dataset`, :func:`cars196_dataset`, :func:`sop_dataset`, :func:`inshop_dataset` --
  the official benchmark archives with their standard class-disjoint splits;
* :func:`omniglot_dataset` (zip, embedded demo copy by default), :func:`olivetti_dataset` (.npz).

Audio, tracklet and other task-specific loaders live in their own modules
(``deepmetric.data.speech``, ``deepmetric.data.tracklets``, ...).
"""

from deepmetric.data.benchmarks import cars196_dataset, cub200_dataset, inshop_dataset, sop_dataset
from deepmetric.data.folder import ImageFolderDataset, folder_dataset
from deepmetric.data.image_dataset import ImageDataset, ImageFileDataset, index_labels
from deepmetric.data.image_io import IMAGE_EXTENSIONS, load_image
from deepmetric.data.manifest import CSVManifestDataset, csv_dataset
from deepmetric.data.olivetti import OlivettiDataset, olivetti_dataset
from deepmetric.data.omniglot import OmniglotDataset, embedded_omniglot_zip, omniglot_dataset
from deepmetric.data.samplers import PKSampler
from deepmetric.data.splits import ClassSplit, split_classes, split_indices, stratified_split
from deepmetric.data.transforms import build_eval_transform, build_train_transform

__all__ = [
    "IMAGE_EXTENSIONS",
    "CSVManifestDataset",
    "ClassSplit",
    "ImageDataset",
    "ImageFileDataset",
    "ImageFolderDataset",
    "OlivettiDataset",
    "OmniglotDataset",
    "PKSampler",
    "build_eval_transform",
    "build_train_transform",
    "cars196_dataset",
    "csv_dataset",
    "cub200_dataset",
    "embedded_omniglot_zip",
    "folder_dataset",
    "index_labels",
    "inshop_dataset",
    "load_image",
    "olivetti_dataset",
    "omniglot_dataset",
    "sop_dataset",
    "split_classes",
    "split_indices",
    "stratified_split",
]
