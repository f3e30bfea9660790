"""Shared test settings.

The suite is dominated by small tensors, for which intra-op threading costs more than it saves
(and, on a machine shared with other processes, can make small convolutions many times slower):
every test runs single-threaded. Multi-process tests set their own threads in the workers.
"""

import torch

torch.set_num_threads(1)
