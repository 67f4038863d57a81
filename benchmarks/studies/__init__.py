"""One-off studies behind ctbird's defaults, each ``python -m benchmarks.studies.<name>`` from the repository root.

- ``convergence``: BIRD's PSNR against iterations per latent optimizer, rate and schedule (``docs/results/convergence``)
- ``margins``: where BIRD loses, slice by slice, against the field of view (``docs/results/margins``)
- ``timing``: BIRD's seconds per iteration by batch size and gradient mode (``docs/results/timing``)
- ``tune_dps``: DPS's guidance step on training slices (``docs/results/tuning``)
"""
