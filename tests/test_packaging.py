"""The shipped prior and samples travel with the package: found through ``ctbird._data``, not the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRIOR_FILES = ("unet/config.json", "unet/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json",
               "model_index.json", "README.md")

_REPORT = (
    "import json, ctbird, operators\n"
    "from ctbird.priors import default_prior_path\n"
    "from ctbird.shipped import sample_names, sample_path\n"
    "print(json.dumps({'ctbird': ctbird.__file__, 'operators': operators.__file__, 'prior': str(default_prior_path()),"
    " 'sample': str(sample_path()), 'samples': sample_names()}))\n"
)


def _resolve_from(site: Path, cwd: Path) -> dict:
    """What an interpreter with only ``site`` in front of its path finds, started in ``cwd``."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("CTBIRD_DEFAULT_PRIOR", None)
    out = subprocess.run([sys.executable, "-c", _REPORT], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _check_installed_layout(site: Path, cwd: Path) -> None:
    found = _resolve_from(site, cwd)
    for key in ("ctbird", "operators", "prior", "sample"):
        assert Path(found[key]).is_relative_to(site), (key, found[key])  # not the repository's data/
    prior = Path(found["prior"])
    assert prior == site / "ctbird" / "_data" / "priors" / "ctbird-ct-256"
    assert all((prior / name).is_file() for name in PRIOR_FILES)
    assert Path(found["sample"]).name == "chest_tcga_0000.dcm" and "head_ge_13.dcm" in found["samples"]


def test_installed_layout_finds_prior_and_samples_through_the_package(tmp_path):
    """ctbird/_data as a wheel lays it out (here a link to data/), imported from another folder."""
    site = tmp_path / "site"
    for package in ("ctbird", "operators"):
        shutil.copytree(REPO / package, site / package, ignore=shutil.ignore_patterns("__pycache__"))
    (site / "ctbird" / "_data").symlink_to(REPO / "data", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    _check_installed_layout(site, tmp_path / "elsewhere")


def test_source_checkout_uses_the_data_folder():
    from ctbird.priors import default_prior_path
    from ctbird.shipped import sample_path, shipped_path

    assert shipped_path() == REPO / "data"
    assert default_prior_path() == REPO / "data" / "priors" / "ctbird-ct-256"
    assert sample_path("head_ge_13.dcm") == REPO / "data" / "samples" / "head_ge_13.dcm"


def test_unknown_sample_lists_the_samples():
    from ctbird.errors import InputError
    from ctbird.shipped import sample_path

    with pytest.raises(InputError, match="chest_tcga_0000.dcm"):
        sample_path("no-such.dcm")


@pytest.mark.slow
def test_wheel_carries_prior_and_samples(tmp_path):
    """Build the wheel (no isolation: setuptools of this environment), unpack it and resolve from outside the repo."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(REPO)], check=True, cwd=tmp_path)
    wheel, = (tmp_path / "dist").glob("ctbird-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    assert {f"ctbird/_data/priors/ctbird-ct-256/{name}" for name in PRIOR_FILES} <= names
    assert {"ctbird/_data/samples/chest_tcga_0000.dcm", "ctbird/py.typed", "operators/py.typed"} <= names
    packages = {path.parent.relative_to(REPO).as_posix() for root in ("ctbird", "operators")
                for path in (REPO / root).rglob("__init__.py")}
    assert {f"{package}/__init__.py" for package in packages} <= names  # every subpackage is shipped
    assert not any(name.startswith(("tests/", "benchmarks/", "docs/")) for name in names)
    _check_installed_layout(tmp_path / "site", tmp_path)
    # the installed CLI reconstructs the shipped sample from another folder (FBP: the cheap method)
    sample = _resolve_from(tmp_path / "site", tmp_path)["sample"]
    (tmp_path / "elsewhere").mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "ctbird", "reconstruct", sample, "--views", "30", "--method", "fbp", "--out",
                    str(tmp_path / "out")], cwd=tmp_path / "elsewhere", env=env, check=True, capture_output=True)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["input"] == sample and metrics["methods"]["fbp"]["psnr"] > 20.0
