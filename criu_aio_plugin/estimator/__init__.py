"""The convergence estimator: which nr_req reproduces a ring on a given kernel.

See ``converge`` for how it works; ``model`` holds the calibrated ring-sizing
model and its per-boot cache; ``plan`` turns a checkpoint's rings into verdicts;
``check`` is the extended AIO check; ``profile`` the host profile document.
"""

from criu_aio_plugin.estimator.check import AioCheckReport, run_aio_check
from criu_aio_plugin.estimator.converge import RingRequest, estimate, estimate_many
from criu_aio_plugin.estimator.model import Knowledge, ModelStore, RingModel, calibrate
from criu_aio_plugin.estimator.plan import RestorePlan, RingDecision, plan_rings
from criu_aio_plugin.estimator.profile import profile_document
from criu_aio_plugin.estimator.types import Estimate, Verdict

__all__ = [
    "AioCheckReport",
    "Estimate",
    "Knowledge",
    "ModelStore",
    "RestorePlan",
    "RingDecision",
    "RingModel",
    "RingRequest",
    "Verdict",
    "calibrate",
    "estimate",
    "estimate_many",
    "plan_rings",
    "profile_document",
    "run_aio_check",
]
