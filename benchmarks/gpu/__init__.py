"""Python plumbing for the time-boxed GPU machine (see ``docs/gpu.md``); run from the repository root.

- ``pack``: ``python -m benchmarks.gpu.pack``: the training subset and evaluation slice pack that travel
- ``radon_timing``: ``python -m benchmarks.gpu.radon_timing``: Radon backends timed on a CUDA GPU

The shell entry points that drive them on the machine live in ``scripts/gpu/``: ``session.sh`` (one prepared
session: continue training the prior, then the CT benchmark parts), ``train_prior.sh`` (time-boxed
``ctbird train-prior`` with a transportable export) and ``operator_check.sh`` (the Radon tests and timings on CUDA).
"""
