"""The convergence estimator: which nr_req reproduces a ring on a given kernel.

See ``converge`` for how it works; ``model`` holds the calibrated ring-sizing
model and its per-boot cache; ``plan`` turns a checkpoint's rings into verdicts;
``check`` is the extended AIO check.
"""
