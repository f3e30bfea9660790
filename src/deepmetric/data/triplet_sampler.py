"""Class-balanced triplet batches for triplet networks (e.g. DeMAL-CNN).

Each batch holds B triplets laid out as ``[anchors..., positives..., negatives...]`` (3B
indices), so one forward pass of a single network computes all three weight-shared branches.
Anchor classes cycle through a random permutation of the classes, so every class -- the
minority class (melanoma) included -- anchors about B / C triplets of every batch, and appears
in every batch whenever B >= C.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from deepmetric.errors import DataError


class TripletBatchSampler(Sampler[list[int]]):
    """Yields ``3 * triplets_per_batch`` indices per batch: anchors, positives, negatives.

    A positive shares the anchor's label (a different item); a negative has another label, its
    class drawn uniformly from the other classes. Seeded; ``set_epoch`` changes the draw.
    """

    def __init__(self, labels: Sequence[int], triplets_per_batch: int = 8, batches_per_epoch: int = 100, seed: int = 0) -> None:
        labels_arr = np.asarray(labels)
        if labels_arr.ndim != 1 or len(labels_arr) == 0:
            raise DataError("the triplet sampler needs a non-empty 1-D list of labels")
        self.by_class = {int(c): np.flatnonzero(labels_arr == c) for c in np.unique(labels_arr)}
        singletons = [c for c, idx in self.by_class.items() if len(idx) < 2]
        if singletons:
            raise DataError(
                f"class(es) {singletons[:5]} have a single sample, so they cannot form a positive pair; "
                "add samples or drop those classes"
            )
        if len(self.by_class) < 2:
            raise DataError("triplets need at least two classes (a negative must differ from the anchor)")
        self.classes = sorted(self.by_class)
        self.triplets_per_batch, self.batches_per_epoch, self.seed, self.epoch = triplets_per_batch, batches_per_epoch, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        for _ in range(self.batches_per_epoch):
            order = np.concatenate([rng.permutation(self.classes) for _ in range(-(-self.triplets_per_batch // len(self.classes)))])
            anchors, positives, negatives = [], [], []
            for c in order[: self.triplets_per_batch]:
                a, p = rng.choice(self.by_class[int(c)], size=2, replace=False)
                others = [k for k in self.classes if k != c]
                n = rng.choice(self.by_class[int(rng.choice(others))])
                anchors.append(int(a))
                positives.append(int(p))
                negatives.append(int(n))
            yield anchors + positives + negatives
