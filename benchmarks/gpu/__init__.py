"""Plumbing for the time-boxed GPU machine (see ``docs/gpu.md``); run from the repository root.

- ``session.sh``: one prepared GPU session: continue training the prior, then the CT benchmark parts
- ``train_prior.sh``: time-boxed ``ctbird train-prior`` with a transportable export
- ``operator_check.sh``: the Radon tests and timings on CUDA (ASTRA's CUDA build)
- ``pack``: ``python -m benchmarks.gpu.pack``: the training subset and evaluation slice pack that travel
- ``radon_timing``: ``python -m benchmarks.gpu.radon_timing``: Radon backends timed on a CUDA GPU
"""
