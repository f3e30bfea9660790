"""Evidence for the Ranked List Loss (Wang et al., CVPR 2019, arXiv 1903.03238) on real data.

Compares, with the same backbone, batches and training budget (see ``evidence_osm_caa.py``,
whose runner this script reuses), on zero-shot retrieval on Olivetti (20 train / 20 unseen
people) and Omniglot small1 (unseen characters):

* contrastive (Hadsell et al. 2006; margin 1.2 = RLL's alpha, so both share the boundary),
* triplet (semi-hard mining, and all triplets; margin 0.2),
* Ranked List Loss, CVPR form (alpha 1.2, m 0.4, T_n 10, lambda 0.5),
* Ranked List Loss, TPAMI form ((1 - lambda) L_P + lambda L_N),
* Ranked List Loss with T_n = 0 (no negative weighting; the paper's SOP ablation, R@1 78.8 vs 79.8).

Reported: test Recall@1 and MAP@R of the checkpoint chosen on a validation split of the training
classes, mean +- std over seeds, next to the untrained-network baseline.

    python benchmarks/evidence_rll.py            # 3 seeds, full budget
    python benchmarks/evidence_rll.py --quick    # a few steps: checks that it runs
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evidence_osm_caa import main  # noqa: E402

RLL = {"alpha": 1.2, "margin": 0.4, "t_n": 10.0, "t_p": 0.0, "lam": 0.5}

#: method name -> loss section of the config
METHODS: dict[str, dict[str, Any]] = {
    "contrastive (m- 1.2)": {"name": "contrastive", "params": {"neg_margin": 1.2, "squared": True}},
    "triplet (semi-hard, m 0.2)": {"name": "triplet", "params": {"margin": 0.2, "mining": "semihard"}},
    "triplet (all, m 0.2)": {"name": "triplet", "params": {"margin": 0.2, "mining": "all"}},
    "RLL (CVPR)": {"name": "ranked_list", "params": {**RLL, "variant": "cvpr"}},
    "RLL (TPAMI)": {"name": "ranked_list", "params": {**RLL, "variant": "tpami"}},
    "RLL (CVPR), T_n = 0": {"name": "ranked_list", "params": {**RLL, "variant": "cvpr", "t_n": 0.0}},
}


if __name__ == "__main__":
    raise SystemExit(main(methods=METHODS, title="Ranked List Loss"))
