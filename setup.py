"""Packaging that pyproject.toml cannot say: the repository's top-level ``data/`` folder is installed as the package
``ctbird._data`` (the default CT prior and the sample slices travel with the wheel; see ``ctbird/shipped.py``).
Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["ctbird", "ctbird.*", "operators", "operators.*"]), "ctbird._data"],
    package_dir={"ctbird._data": "data"},
    package_data={"ctbird": ["py.typed"], "operators": ["py.typed"], "ctbird._data": ["**/*"]},
)
