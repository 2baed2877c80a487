"""The convergence estimator: which nr_req reproduces a ring on a given kernel.

See ``converge`` for how it works; ``model`` holds the calibrated ring-sizing
model and its per-boot cache; ``check`` is the extended AIO check; ``profile`` the
host profile document. A checkpoint's rings are judged by ``criu_aio_plugin.decision``.

Names are re-exported lazily: ``criu-aio swrk`` imports ``estimator.converge`` on a
restore's critical path and must not pay for the check or the profile.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing costs milliseconds at start-up (see values.py)
if TYPE_CHECKING:
    from typing import Any

    from criu_aio_plugin.estimator.check import AioCheckReport, run_aio_check
    from criu_aio_plugin.estimator.converge import RingRequest, estimate, estimate_many
    from criu_aio_plugin.estimator.model import Knowledge, ModelStore, RingModel, calibrate
    from criu_aio_plugin.estimator.profile import profile_document
    from criu_aio_plugin.estimator.types import Estimate

_EXPORTS = {
    "AioCheckReport": "check",
    "run_aio_check": "check",
    "RingRequest": "converge",
    "estimate": "converge",
    "estimate_many": "converge",
    "Knowledge": "model",
    "ModelStore": "model",
    "RingModel": "model",
    "calibrate": "model",
    "profile_document": "profile",
    "Estimate": "types",
}

__all__ = [
    "AioCheckReport",
    "Estimate",
    "Knowledge",
    "ModelStore",
    "RingModel",
    "RingRequest",
    "calibrate",
    "estimate",
    "estimate_many",
    "profile_document",
    "run_aio_check",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # __import__, not importlib.import_module (lean core: no importlib).
    __import__(f"{__name__}.{module}")
    return getattr(sys.modules[f"{__name__}.{module}"], name)
