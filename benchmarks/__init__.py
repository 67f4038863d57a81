"""ctbird's benchmarks: run from the repository root as ``python -m benchmarks.<name>`` (not installed with ctbird).

- ``benchmarks.ct``: sparse-view CT, FBP/SIRT/TV/DPS/BIRD on held-out slices (``docs/results/ct``)
- ``benchmarks.photo``: BIRD's five restoration tasks (``docs/results/photo``)
- ``benchmarks.phantom``: classical baselines on Shepp-Logan (``docs/results/phantom``)
- ``benchmarks.prior_report``: the shipped prior's page (``docs/prior.md``)
- ``benchmarks.studies``: one-off measurements behind the defaults (convergence, margins, timing, tune_dps)
- ``benchmarks.gpu``: GPU-machine plumbing (session and training scripts, slice packs, Radon timings)
- ``benchmarks.common``: what they share; the only module a benchmark imports from another

Each writes a markdown page and its JSON (with the command that made them) under ``docs/results/<topic>/``;
a user error ends in one ``error:`` line and exit status 2.
"""
