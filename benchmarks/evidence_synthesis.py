"""Evidence for Symmetrical Synthesis (Gu and Ko, AAAI 2020, arXiv 2001.11658) on real data.

Each of the five base losses of the paper's Table 1-3 is trained with and without the
synthesis wrapper (``loss.synthesis: symmetrical``, alpha 2, beta 1 = a mirror reflection),
with the same backbone, batches (P classes x K = 2 samples, the paper's K) and training budget
(``evidence_osm_caa.base_config``, whose runner and table this script reuses):

* contrastive (margin 1), triplet (semi-hard mining, margin 0.2), lifted structure (margin 1),
  N-pair (L2 penalty 0.02), angular (alpha 40 degrees) -- each at the library's defaults,
  untuned, identical with and without synthesis.

Zero-shot retrieval on Olivetti (20 train / 20 unseen people) and Omniglot small1 (unseen
characters). Reported: test NMI, F1 (k-means clustering, as in the paper), Recall@1 and MAP@R,
mean +- std over seeds, next to the untrained-network baseline.

    python benchmarks/evidence_synthesis.py            # 3 seeds, full budget
    python benchmarks/evidence_synthesis.py --quick    # a few steps: checks that it runs
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evidence_osm_caa import main  # noqa: E402

#: base loss name -> loss section (library defaults except the triplet's mining)
BASE_LOSSES: dict[str, dict[str, Any]] = {
    "contrastive": {"name": "contrastive", "params": {}},
    "triplet (semi-hard)": {"name": "triplet", "params": {"mining": "semihard"}},
    "lifted structure": {"name": "lifted_structure", "params": {}},
    "N-pair": {"name": "npair", "params": {}},
    "angular": {"name": "angular", "params": {}},
}

#: method name -> loss section of the config: each base loss without, then with, synthesis
METHODS: dict[str, dict[str, Any]] = {}
for _name, _loss in BASE_LOSSES.items():
    METHODS[_name] = dict(_loss)
    METHODS[f"{_name} + synthesis"] = {**_loss, "synthesis": "symmetrical"}

METRICS = ("nmi", "f1", "recall@1", "map@r")


if __name__ == "__main__":
    raise SystemExit(main(methods=METHODS, title="Symmetrical Synthesis", metrics=METRICS))
