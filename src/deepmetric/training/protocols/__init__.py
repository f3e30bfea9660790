"""Protocols (``protocol.name``): how many trainings a recipe runs, on which splits.

Registered in :data:`PROTOCOLS`; each plans :class:`~deepmetric.training.protocols.base.SubRun`
objects, run by :func:`~deepmetric.training.protocols.runner.run_protocol` (``deepmetric train``).
"""

from deepmetric.registry import Registry
from deepmetric.training.protocols.base import RunProtocol, SubRun
from deepmetric.training.protocols.runner import plan_protocol, run_protocol, sub_run_finished

#: protocol name -> "module:Class" (``single`` is a plain fit and has no planner)
PROTOCOLS = Registry(
    "protocol",
    {
        "kfold": "deepmetric.training.protocols.splits:KFold",
        "repeated_splits": "deepmetric.training.protocols.splits:RepeatedSplits",
        "speaker_transfer": "deepmetric.training.protocols.speaker_transfer:SpeakerTransfer",
    },
)

__all__ = ["PROTOCOLS", "RunProtocol", "SubRun", "plan_protocol", "run_protocol", "sub_run_finished"]
