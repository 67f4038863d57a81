"""End-to-end runs of the ``benchmarks`` package (``python -m benchmarks.ct --quick`` and the others; CPU, tiny prior).

Each benchmark runs in a subprocess on synthetic phantom slices (no shared data needed) with a 32 x 32
random-weight prior saved in ``tmp_path``; the tests check the JSON records (methods, metrics, finite
values, run record) and that the markdown tables and figures exist. The numbers of a random prior mean
nothing; the classical baselines must still beat chance.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.common import load_ct_slices, slice_stack
from ctbird.config import RESTORE_SETUP, BirdConfig, RefineConfig
from benchmarks.studies.margins import slice_features

REPO = Path(__file__).resolve().parents[1]
SIZE = 32


@pytest.fixture
def save_prior(tiny_unet_config_factory, bird_scheduler_config):
    """``f(path, channels=1) -> path``: a random-weight 32 x 32 prior saved as a diffusers folder."""
    from ctbird.priors import DiffusionPrior

    def save(path: Path, channels: int = 1) -> Path:
        config = tiny_unet_config_factory(channels, SIZE)
        DiffusionPrior.from_config(config, bird_scheduler_config, seed=0).save_pretrained(path)
        return path

    return save


def _launch(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m <module> ARGS`` in ``cwd``, the repository importable as from its root."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=240)


def _run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    completed = _launch(module, *args, cwd=cwd)
    assert completed.returncode == 0, f"{module} failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    return completed


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_benchmark_ct_quick(tmp_path, save_prior):
    prior = save_prior(tmp_path / "prior")
    out = tmp_path / "out"
    _run("benchmarks.ct", "--quick", "--synthetic", "--size", str(SIZE), "--prior", str(prior), "--device", "cpu",
         "--tag", "test", "--out-dir", str(out), "--methods", "fbp,sirt,bird-raw,bird", cwd=tmp_path)
    payload = json.loads((out / "test.json").read_text())
    assert payload["settings"]["metric_data_range_hu"] == [-1000.0, 1000.0]
    assert payload["run"]["command"].startswith("python -m benchmarks.ct --quick")
    assert {"torch", "diffusers", "astra-toolbox"} <= set(payload["run"]["versions"])
    assert payload["run"]["ctbird_commit"] and payload["run"]["device"]
    assert len(payload["slices"]) == 2
    rows = {(r["geometry"], r["views"], r["noise"], r["method"]): r for r in payload["results"]}
    assert set(rows) == {("parallel", 30, "noiseless", m) for m in ("fbp", "sirt", "bird-raw", "bird")}
    for row in rows.values():
        for key in ("psnr_mean", "psnr_std", "ssim_mean", "rmse_hu_mean", "seconds_mean", "nfe_mean"):
            assert _finite(row[key]), (row["method"], key, row[key])
        assert len(row["per_slice"]) == 2
    assert rows[("parallel", 30, "noiseless", "fbp")]["nfe_mean"] == 0
    # --quick: 3 iterations at delta_t 250 (4 DDIM steps), plus the decode that scores the result
    assert rows[("parallel", 30, "noiseless", "bird-raw")]["nfe_mean"] == (3 + 1) * 4
    # bird-raw is the BIRD stage of bird: the same UNet work, then the refinement's steps
    refine_steps = BirdConfig().refine_from_t // BirdConfig().refine_delta_t + 1
    assert rows[("parallel", 30, "noiseless", "bird")]["nfe_mean"] == (3 + 1) * 4 + refine_steps
    # the per-slice section states BIRD's margin over each other method, from the per-slice values
    margin = [b["psnr"] - f["psnr"] for b, f in zip(rows[("parallel", 30, "noiseless", "bird")]["per_slice"],
                                                     rows[("parallel", 30, "noiseless", "fbp")]["per_slice"])]
    page = (out / "test.md").read_text()
    assert f"BIRD above on {sum(m > 0 for m in margin)} of 2 slices" in page.split("- BIRD − fbp:")[1].split("\n")[0]
    # 30 noiseless views of a smooth phantom: SIRT is well above chance and beats plain FBP
    assert rows[("parallel", 30, "noiseless", "sirt")]["psnr_mean"] > 25.0
    assert rows[("parallel", 30, "noiseless", "sirt")]["psnr_mean"] > rows[("parallel", 30, "noiseless", "fbp")]["psnr_mean"]
    markdown = (out / "test.md").read_text()
    assert "| method | 30 views |" in markdown and "| bird-raw |" in markdown and "[-1000, 1000]" in markdown
    for name in ("test_grid.png", "test_psnr_vs_views.png", "test_psnr_vs_seconds.png"):
        assert (out / "figures" / name).stat().st_size > 1000


def test_benchmark_ct_ablation(tmp_path, save_prior):
    prior = save_prior(tmp_path / "prior")
    out = tmp_path / "out"
    _run("benchmarks.ct", "--ablation", "--synthetic", "--size", str(SIZE), "--max-slices", "1", "--iters", "1",
         "--ablation-delta-t", "100,250", "--prior", str(prior), "--device", "cpu", "--tag", "test",
         "--out-dir", str(out), "--no-figures", cwd=tmp_path)
    payload = json.loads((out / "ablation_test.json").read_text())
    rows = {r["delta_t"]: r for r in payload["ablation"]}
    assert set(rows) == {100, 250}
    assert rows[100]["ddim_steps"] == 10 and rows[250]["ddim_steps"] == 4
    assert rows[100]["nfe_mean"] == 2 * 10 and rows[250]["nfe_mean"] == 2 * 4
    assert all(_finite(r[k]) for r in rows.values() for k in ("psnr_mean", "ssim_mean", "seconds_mean"))
    page = out / "ablation_test.md"
    written = page.read_text()
    assert "| delta_t | DDIM steps |" in written and "reconstruction clipped to the prior's HU window" in written
    page.unlink()  # the ablation page, too, is a pure function of its JSON
    _run("benchmarks.ct", "--rerender", str(out / "ablation_test.json"), cwd=tmp_path)
    assert page.read_text() == written


def test_benchmark_ct_ablation_sweeps_up_to_the_default_step():
    from benchmarks.ct import ABLATION_DELTA_T
    from ctbird.config import BirdConfig

    assert ABLATION_DELTA_T[-1] == BirdConfig().delta_t and list(ABLATION_DELTA_T) == sorted(ABLATION_DELTA_T)


def test_benchmark_ct_batches_match_single_slice_runs(tmp_path, save_prior):
    prior = save_prior(tmp_path / "prior")
    per_slice = {}
    for batch in ("1", "2"):
        out = tmp_path / f"out{batch}"
        _run("benchmarks.ct", "--synthetic", "--size", str(SIZE), "--max-slices", "2", "--views", "18",
             "--geometry", "parallel", "--noise", "none", "--methods", "fbp,bird-raw,bird", "--iters", "2",
             "--delta-t", "250", "--batch-size", batch, "--prior", str(prior), "--device", "cpu", "--tag", "b",
             "--out-dir", str(out), "--no-figures", cwd=tmp_path)
        payload = json.loads((out / "b.json").read_text())
        assert payload["settings"]["batch_size"] == int(batch)
        per_slice[batch] = {r["method"]: r["per_slice"] for r in payload["results"]}
    for method in ("fbp", "bird-raw", "bird"):
        single, batched = per_slice["1"][method], per_slice["2"][method]
        assert [row["slice"] for row in batched] == [row["slice"] for row in single]
        assert batched[0]["nfe"] == single[0]["nfe"]
        # every item of a batch is seeded as its single run, with its sinogram scaled by the spacing: equal up to the
        # float reduction order of batched calls
        for b, s in zip(batched, single):
            assert abs(b["psnr"] - s["psnr"]) < 0.05, method
    assert per_slice["2"]["fbp"][1]["psnr"] == pytest.approx(per_slice["1"]["fbp"][1]["psnr"], abs=1e-6)


def write_slice_pack(path: Path, slices: list[tuple[str, np.ndarray, float]]) -> None:
    from ctbird.stacks import write_slice_stack

    write_slice_stack(path, slice_stack(slices))


def test_slice_pack_round_trip(tmp_path):
    from ctbird.errors import InputError
    from ctbird.stacks import read_slice_stack

    slices = load_ct_slices(None, 3, SIZE, synthetic=True)
    pack = tmp_path / "pack.npz"
    write_slice_pack(pack, slices)
    assert read_slice_stack(pack).images.dtype == np.int16  # a ctbird.stacks file, HU as whole numbers
    loaded = load_ct_slices(pack, None, SIZE, synthetic=False)
    assert [s[0] for s in loaded] == [s[0] for s in slices]
    for (_, hu, spacing), (_, ref, ref_spacing) in zip(loaded, slices):
        assert spacing == ref_spacing and hu.dtype == np.float32
        assert np.abs(hu - ref).max() <= 0.5  # HU rounded to integers
    assert [s[0] for s in load_ct_slices(pack, 2, SIZE, synthetic=False)] == [slices[0][0], slices[2][0]]
    with pytest.raises(InputError, match="not --size"):
        load_ct_slices(pack, None, 2 * SIZE, synthetic=False)
    # a stack without labels (e.g. the training stack) names its slices by position
    np.savez(tmp_path / "bare.npz", images=np.full((2, SIZE, SIZE), -3000, np.int16), pixel_spacing_mm=np.ones(2))
    bare = load_ct_slices(tmp_path / "bare.npz", None, SIZE, synthetic=False)
    assert [label for label, _, _ in bare] == ["bare.npz[0]", "bare.npz[1]"]
    assert bare[0][1].min() == -1024.0  # clipped to the prior's window, as DICOM slices are


def test_benchmark_ct_excludes_the_slices_of_an_earlier_run(tmp_path):
    pack = tmp_path / "pack.npz"
    write_slice_pack(pack, load_ct_slices(None, 4, SIZE, synthetic=True))
    common = ("--data", str(pack), "--size", str(SIZE), "--views", "8", "--geometry", "parallel", "--noise", "none",
              "--methods", "fbp", "--device", "cpu", "--no-figures", "--out-dir", str(tmp_path))
    _run("benchmarks.ct", *common, "--max-slices", "2", "--tag", "first", cwd=tmp_path)
    first = json.loads((tmp_path / "first.json").read_text())["slices"]
    _run("benchmarks.ct", *common, "--exclude-slices-of", str(tmp_path / "first.json"), "--tag", "second",
         cwd=tmp_path)
    second = json.loads((tmp_path / "second.json").read_text())["slices"]
    assert first == ["shepp-logan", "shepp-logan-rot"]  # the evenly spread pair: first and last
    # one simulation and one scoring: the library's, as ctbird reconstruct uses them
    from ctbird import reconstruct
    from ctbird.metrics import score_ct
    from ctbird.simulate import simulate
    from ctbird.units import EVAL_HU_RANGE

    (label, hu, spacing), = [s for s in load_ct_slices(pack, None, SIZE, synthetic=False) if s[0] == "shepp-logan"]
    acquisition = simulate(hu, views=8, image_size=SIZE, pixel_spacing_mm=spacing, seed=1000)
    image = reconstruct(acquisition.sinogram, acquisition.geometry, image_size=SIZE, pixel_spacing_mm=spacing,
                        method="fbp").image[0, 0]
    recorded = json.loads((tmp_path / "first.json").read_text())["results"][0]["per_slice"][0]
    expected = score_ct(image, hu, data_range=EVAL_HU_RANGE)
    assert recorded["slice"] == label
    assert {key: recorded[key] for key in expected} == pytest.approx(expected, rel=1e-6)
    assert second == ["shepp-logan-lr", "shepp-logan-ud"]  # all the others, none of the first run's
    # the markdown is a pure function of the JSON: --rerender writes the same page again
    page = tmp_path / "second.md"
    written = page.read_text()
    assert "### parallel beam, noiseless, 8 views: PSNR (dB)" in written and "| shepp-logan-ud |" in written
    page.unlink()
    _run("benchmarks.ct", "--rerender", str(tmp_path / "second.json"), cwd=tmp_path)
    assert page.read_text() == written


def test_timing_study_reports_both_modes(tmp_path, save_prior):
    prior = save_prior(tmp_path / "prior")
    out = tmp_path / "out"
    _run("benchmarks.studies.timing", "--device", "cpu", "--size", str(SIZE), "--batch-sizes", "1,2", "--iters", "1",
         "--delta-t", "500", "--prior", str(prior), "--tag", "t", "--out-dir", str(out), cwd=tmp_path)
    payload = json.loads((out / "bird_t.json").read_text())
    rows = {(r["grad_mode"], r["batch"]): r for r in payload["rows"]}
    assert set(rows) == {(m, b) for m in ("detached", "exact") for b in (1, 2)}
    for row in rows.values():
        assert row["seconds_per_iter"] > 0 and row["nfe"] == (1 + 1) * 2
        assert row["default_run_seconds_per_slice"] == pytest.approx(row["default_run_seconds"] / row["batch"])
    assert "| grad mode | batch |" in (out / "bird_t.md").read_text()


def test_convergence_study_scores_the_latent_during_the_run(tmp_path, save_prior):
    prior = save_prior(tmp_path / "prior")
    out = tmp_path / "out"
    _run("benchmarks.studies.convergence", "--size", str(SIZE), "--iters", "4", "--every", "2", "--delta-t", "500",
         "--optimizers", "adam,normalized-gd", "--prior", str(prior), "--device", "cpu", "--tag", "t",
         "--out-dir", str(out), cwd=tmp_path)
    payload = json.loads((out / "t.json").read_text())
    assert set(payload["curves"]) == {"adam", "normalized-gd"}
    for rows in payload["curves"].values():
        assert [r["iteration"] for r in rows] == [1, 2, 4]
        assert [r["nfe"] for r in rows] == [2, 4, 8]  # 2 DDIM steps per iteration; scoring not counted
        assert all(_finite(r["psnr"]) and _finite(r["loss"]) for r in rows)
    # the same start, different steps: each row scores the iterate after its step, so the runs differ from row 1
    assert payload["curves"]["adam"][0]["loss"] != payload["curves"]["normalized-gd"][0]["loss"]
    assert payload["curves"]["adam"][-1]["loss"] != payload["curves"]["normalized-gd"][-1]["loss"]
    assert set(payload["references"]) == {"fbp", "sirt", "tv"}
    assert payload["references"]["sirt"]["psnr"] > payload["references"]["fbp"]["psnr"] - 3.0
    assert (out / "figures" / "t.png").stat().st_size > 1000


def test_convergence_study_compares_rates_and_schedules(tmp_path, save_prior):
    prior = save_prior(tmp_path / "prior")
    out = tmp_path / "out"
    _run("benchmarks.studies.convergence", "--size", str(SIZE), "--iters", "3", "--every", "3", "--delta-t", "500",
         "--optimizers", "normalized-gd", "--lr-latent", "0.003,0.012", "--latent-lr-schedule", "constant,cosine",
         "--prior", str(prior), "--device", "cpu", "--tag", "t", "--out-dir", str(out), "--no-figures", cwd=tmp_path)
    payload = json.loads((out / "t.json").read_text())
    labels = [f"normalized-gd, lr {lr}, {s}" for lr in ("0.003", "0.012") for s in ("constant", "cosine")]
    assert list(payload["curves"]) == labels
    assert payload["settings"]["lr_latent"] == [0.003, 0.012]
    first = {row["loss"] for rows in payload["curves"].values() for row in rows if row["iteration"] == 1}
    assert len(first) == 2  # one start; the first step depends on the rate only (both schedules start at it)
    last = [rows[-1]["loss"] for rows in payload["curves"].values()]
    assert len(set(last)) == 4  # the rate and the schedule both change the iterates
    assert "| normalized-gd, lr 0.012, cosine | 3 |" in (out / "t.md").read_text()


def test_benchmark_photo_quick_ct_domain(tmp_path, save_prior):
    prior = save_prior(tmp_path / "prior")
    out = tmp_path / "out"
    _run("benchmarks.photo", "--quick", "--domain", "ct", "--synthetic", "--size", str(SIZE), "--prior", str(prior),
         "--device", "cpu", "--tag", "test", "--out-dir", str(out), cwd=tmp_path)
    payload = json.loads((out / "test.json").read_text())
    assert payload["settings"]["metric_data_range"] == 1.0
    results = {r["task"]: r for r in payload["results"]}
    assert set(results) == {"gaussian-deblur", "motion-deblur", "sr", "denoise", "inpaint"}
    for task, row in results.items():
        for key in ("psnr_mean", "ssim_mean", "input_psnr_mean", "seconds_mean", "nfe_mean"):
            assert _finite(row[key]), (task, key, row[key])
        warm = 2 if RESTORE_SETUP[task]["warm_start"] else 0  # the warm start's DDIM inversion
        refine = RefineConfig.for_task(task)  # the DDS refinement's chain (its samples batched)
        chain = (refine.t0 // refine.step + 1) * (1 + refine.kernel_refits)
        searched = refine.start == "bird" or task not in ("denoise", "inpaint")  # else restore skips BIRD's search
        assert row["nfe_mean"] == ((2 + 1) * 2 + warm) * searched + chain  # --quick: 2 iterations at delta_t 500
        assert row["iters"] == 2 * searched
        assert _finite(row["bird_psnr_mean"]) if searched else "bird_psnr_mean" not in row  # BIRD's own image
        assert len(row["per_image"]) == 2
    for task in ("gaussian-deblur", "motion-deblur"):
        assert 0.0 <= results[task]["kernel_error_mean"] <= 2.0
        assert _finite(results[task]["initial_kernel_error_mean"])
    assert "kernel_error_mean" not in results["denoise"]
    markdown = (out / "test.md").read_text()
    assert "| task | iters | PSNR (dB) |" in markdown and "| motion-deblur |" in markdown
    assert (out / "figures" / "test_grid.png").stat().st_size > 1000


def test_benchmark_photo_reads_rgb_folder(tmp_path, save_prior):
    from PIL import Image

    data = tmp_path / "photos"
    data.mkdir()
    rng = torch.Generator().manual_seed(0)
    for i in range(2):
        pixels = (torch.rand(48, 40, 3, generator=rng) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(data / f"img{i}.png")
    prior = save_prior(tmp_path / "prior", channels=3)
    out = tmp_path / "out"
    _run("benchmarks.photo", "--quick", "--domain", "faces", "--data", str(data), "--size", str(SIZE), "--tasks",
         "denoise,sr", "--prior", str(prior), "--device", "cpu", "--tag", "rgb", "--out-dir", str(out), "--no-figures",
         cwd=tmp_path)
    payload = json.loads((out / "rgb.json").read_text())
    assert payload["images"] == ["img0.png", "img1.png"]
    assert payload["settings"]["prior_channels"] == 3
    assert [r["task"] for r in payload["results"]] == ["denoise", "sr"]
    assert all(_finite(r["psnr_mean"]) and _finite(r["input_psnr_mean"]) for r in payload["results"])


def test_benchmark_photo_merges_runs_and_later_runs_supersede(tmp_path, save_prior):
    prior = save_prior(tmp_path / "prior")
    out = tmp_path / "out"
    common = ["--quick", "--domain", "ct", "--synthetic", "--size", str(SIZE), "--prior", str(prior), "--device", "cpu",
              "--out-dir", str(out), "--no-figures"]
    for task, extra in (("inpaint", []), ("denoise", []), ("inpaint", ["--iters", "1"]), ("denoise", ["--max-images", "1"])):
        tag = task + ("-rerun" if extra == ["--iters", "1"] else "-one" if extra else "")
        _run("benchmarks.photo", *common, "--tasks", task, "--tag", tag, *extra, cwd=tmp_path)
    _run("benchmarks.photo", "--merge", str(out / "inpaint.json"), str(out / "denoise.json"), str(out / "inpaint-rerun.json"),
         "--tag", "both", "--out-dir", str(out), cwd=tmp_path)
    payload = json.loads((out / "both.json").read_text())
    rerun = json.loads((out / "inpaint-rerun.json").read_text())
    assert [r["task"] for r in payload["results"]] == ["denoise", "inpaint"]  # the benchmark's task order
    assert payload["results"][1] == rerun["results"][0]  # the later run of a task wins
    assert payload["tasks_from"] == {"inpaint": "inpaint-rerun.json", "denoise": "denoise.json"}
    assert [r["command"].split("--tag ")[1].split()[0] for r in payload["runs"]] == ["denoise", "inpaint-rerun"]
    markdown = (out / "both.md").read_text()
    assert markdown.count("- Command: `python -m benchmarks.photo") == 2 and "inpaint from inpaint-rerun.json" in markdown
    denoise = payload["results"][0]["per_image"]
    wins = sum(row["psnr"] > row["input_psnr"] for row in denoise)
    assert f"| denoise | {wins}/2 |" in markdown and "noise-level error" in markdown
    completed = _launch("benchmarks.photo", "--merge", str(out / "inpaint.json"), str(out / "denoise-one.json"),
                        "--tag", "x", "--out-dir", str(out), cwd=tmp_path)
    assert completed.returncode != 0 and "other images" in completed.stderr and not (out / "x.json").exists()


def test_benchmark_photo_needs_a_prior_for_photographs(tmp_path):
    completed = _launch("benchmarks.photo", "--domain", "faces", cwd=tmp_path)
    assert completed.returncode == 2
    assert "--prior" in completed.stderr and "photographs" in completed.stderr


def _disk_slices(radii: list[float]) -> list[tuple[str, np.ndarray, float]]:
    """Water disks (0 HU) of the given radii (pixels) in air (-1000 HU) on the SIZE grid, 1 mm pixels."""
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    return [(f"disk-{radius:g}", np.where(np.hypot(yy, xx) <= radius, 0.0, -1000.0).astype(np.float32), 1.0)
            for radius in radii]


def test_margins_study_relates_each_margin_to_the_field_of_view(tmp_path):
    radii = [4, 8, 12, 20]  # the last disk runs off the grid's edge
    slices = _disk_slices(radii)
    pack = tmp_path / "pack.npz"
    write_slice_pack(pack, slices)
    features = [slice_features(hu, spacing) for _, hu, spacing in slices]
    assert features[0]["border_contact"] == 0 and features[-1]["border_contact"] > 0.5
    assert features[1]["tissue_fraction"] == pytest.approx(np.pi * 8**2 / SIZE**2, rel=0.1)
    assert features[0]["fov_mm"] == SIZE
    # a benchmark record where BIRD's margin over SIRT shrinks as the disk grows, and its margin over FBP is flat
    labels = [label for label, _, _ in slices]
    bird, sirt = [30.0, 29.0, 27.0, 24.0], [25.0, 25.0, 25.0, 25.0]

    def result(method, psnr):
        return {"geometry": "parallel", "noise": "noiseless", "views": 8, "method": method,
                "per_slice": [{"slice": label, "psnr": value} for label, value in zip(labels, psnr)]}

    run = {"run": {"command": "python -m benchmarks.ct --tag fake"},
           "settings": {"data": str(pack), "image_size": SIZE},
           "results": [result("bird", bird), result("sirt", sirt), result("fbp", [b - 3 for b in bird]),
                       result("bird-raw", [b - 1 for b in bird])]}
    (tmp_path / "run.json").write_text(json.dumps(run))
    train = tmp_path / "train.npz"
    np.savez(train, images=np.stack([hu for _, hu, _ in _disk_slices([6, 10])]).astype(np.int16),
             pixel_spacing_mm=np.ones(2, np.float32))
    _run("benchmarks.studies.margins", str(tmp_path / "run.json"), "--train", str(train), "--tag", "t", "--out-dir",
         str(tmp_path), cwd=tmp_path)
    payload = json.loads((tmp_path / "t.json").read_text())
    margins = {(row["slice"], row["baseline"]): row for row in payload["margins"]}
    assert {baseline for _, baseline in margins} == {"sirt", "fbp"}  # bird-raw is BIRD, not a baseline
    assert [margins[(label, "sirt")]["margin_db"] for label in labels] == [5.0, 4.0, 2.0, -1.0]
    # the smallest disk has less tissue than both training disks, the largest more
    assert margins[("disk-4", "sirt")]["tissue_fraction_train_rank"] == 0
    assert margins[("disk-20", "sirt")]["tissue_fraction_train_rank"] == 1
    rho = {(c["baseline"], c["feature"]): c["spearman"] for c in payload["correlations"]}
    assert rho[("sirt", "tissue_fraction")] == pytest.approx(-1.0)
    assert math.isnan(rho[("fbp", "fov_mm")])  # every slice has the same field of view: undefined, shown as a dash
    page = (tmp_path / "t.md").read_text()
    assert page.index("| disk-20 |") < page.index("| disk-4 |")  # worst margin over SIRT first
    assert "| sirt | -1.00 (p < 0.001) |" in page
    assert (tmp_path / "figures" / "t.png").stat().st_size > 1000


def test_margins_study_refuses_a_run_without_bird(tmp_path):
    run = {"run": {"command": "x"}, "settings": {"data": "synthetic", "image_size": SIZE},
           "results": [{"geometry": "parallel", "noise": "noiseless", "views": 8, "method": "fbp", "per_slice": []}]}
    (tmp_path / "run.json").write_text(json.dumps(run))
    completed = _launch("benchmarks.studies.margins", str(tmp_path / "run.json"), "--tag", "t", "--out-dir", str(tmp_path),
                        cwd=tmp_path)
    assert completed.returncode != 0 and "no 'bird' results" in completed.stderr
    assert "Traceback" not in completed.stderr and not (tmp_path / "t.md").exists()


@pytest.mark.parametrize("module, args, message", [
    ("benchmarks.ct", ["--data", "no-such-folder", "--methods", "fbp"], "CT data folder no-such-folder not found"),
    ("benchmarks.ct", ["--views", "0"], "--views must be positive"),
    ("benchmarks.photo", ["--domain", "ct", "--data", "no-such-folder", "--prior", "no-such-prior"], "prior"),
    ("benchmarks.phantom", ["--views", "0"], "--views >= 1"),
    ("benchmarks.studies.convergence", ["--slice", "no-such.dcm", "--iters", "1"], "no-such.dcm"),
    ("benchmarks.studies.tune_dps", ["--slice", "no-such.npz:0", "--zeta", "x"], "--zeta takes numbers"),
])
def test_benchmarks_report_user_errors_in_one_line(tmp_path, module, args, message):
    completed = _launch(module, *args, "--device", "cpu", "--out-dir", str(tmp_path), cwd=tmp_path)
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr and message in completed.stderr.splitlines()[-1]
    assert not list(tmp_path.glob("*.md"))


def test_tune_dps_scores_each_guidance_step(tmp_path, save_prior):
    prior = save_prior(tmp_path / "prior")
    stack = tmp_path / "stack.npz"
    np.savez(stack, images=np.stack([hu for _, hu, _ in _disk_slices([6, 10])]).astype(np.int16),
             pixel_spacing_mm=np.full(2, 1.5, np.float32))
    _run("benchmarks.studies.tune_dps", "--slice", f"{stack}:0", "--slice", f"{stack}:1", "--zeta", "0.5,2", "--steps", "2",
         "--views", "8", "--size", str(SIZE), "--prior", str(prior), "--device", "cpu", "--tag", "t",
         "--out-dir", str(tmp_path), cwd=tmp_path)
    payload = json.loads((tmp_path / "dps_t.json").read_text())
    settings = [(r["method"], r["relative_zeta"], r["steps"]) for r in payload["results"]]
    assert settings == [("fbp", None, None), ("sirt", None, None), ("dps", 0.5, 2), ("dps", 2.0, 2)]
    for row in payload["results"]:
        assert [s["slice"] for s in row["per_slice"]] == ["stack.npz[0]", "stack.npz[1]"]
        assert all(_finite(s["psnr"]) for s in row["per_slice"])
        assert all(s["nfe"] == (2 if row["method"] == "dps" else 0) for s in row["per_slice"])
    dps = {r["relative_zeta"]: r["psnr_mean"] for r in payload["results"] if r["method"] == "dps"}
    assert dps[0.5] != dps[2.0]  # the guidance step reaches the result
    assert "| dps | 0.5 | 2 |" in (tmp_path / "dps_t.md").read_text()


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``[(module, [names])]`` of every ``import``/``from ... import`` in a Python file."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def test_benchmarks_share_code_only_through_common_and_public_names():
    modules = sorted((REPO / "benchmarks").rglob("*.py"))
    assert modules
    for path in modules:
        for module, names in _imports(path):
            if module.startswith("benchmarks"):
                assert module == "benchmarks.common", f"{path.relative_to(REPO)} imports {module}"
            if module.startswith(("ctbird", "operators")):
                private = {(module, name) for name in names if name.startswith("_")}
                assert not private, f"{path.relative_to(REPO)} imports private names {sorted(private)}"


def test_no_file_edits_sys_path():
    import re

    edit = re.compile(r"sys\.path\s*(\.(insert|append|extend|remove)\b|\[|\+?=)")
    files = [p for folder in ("benchmarks", "ctbird", "operators", "tests") for p in (REPO / folder).rglob("*.py")]
    offenders = [str(p.relative_to(REPO)) for p in files if edit.search(p.read_text(encoding="utf-8"))]
    assert not offenders, f"sys.path edited in {offenders}"


def test_benchmark_phantom_writes_page_json_and_figure(tmp_path):
    out = tmp_path / "out"
    _run("benchmarks.phantom", "--size", str(SIZE), "--views", "18", "--sirt-iters", "50", "--tv-iters", "100",
         "--threads", "1", "--out-dir", str(out), cwd=tmp_path)
    report = json.loads((out / "baselines.json").read_text())
    results = report["results"]
    assert report["command"].startswith("python -m benchmarks.phantom --size 32")
    assert {"FBP (ram-lak)", "SIRT (50 it)", "TV (100 it)"} <= set(results)
    assert all(_finite(row["psnr_db"]) and 0 < row["ssim"] <= 1 for row in results.values())
    # 18 noiseless views of a piecewise-constant phantom: the iterative methods beat plain FBP
    assert results["SIRT (50 it)"]["psnr_db"] > results["FBP (ram-lak)"]["psnr_db"]
    assert results["TV (100 it)"]["psnr_db"] > results["FBP (ram-lak)"]["psnr_db"]
    page = (out / "baselines.md").read_text()
    assert "| TV (100 it) |" in page and report["command"] in page
    assert (out / "figures" / "baselines.png").stat().st_size > 1000


def test_gpu_pack_keeps_every_patient_in_the_stack_format(tmp_path):
    from benchmarks.gpu.pack import pack
    from ctbird.errors import InputError
    from ctbird.stacks import SliceStack, read_slice_stack, write_slice_stack

    source = tmp_path / "train.npz"
    images = np.arange(6 * 4 * 4, dtype=np.int16).reshape(6, 4, 4)
    write_slice_stack(source, SliceStack(images=images, patient=np.array(["a", "a", "b", "b", "c", "c"]),
                                         pixel_spacing_mm=np.linspace(0.5, 1.0, 6)))
    info = pack(source, tmp_path / "out" / "subset.npz", stride=2, offset=1)
    subset = read_slice_stack(tmp_path / "out" / "subset.npz")
    assert info["slices"] == 3 and info["patients"] == 3
    np.testing.assert_array_equal(subset.images, images[1::2])
    np.testing.assert_allclose(subset.pixel_spacing_mm, np.linspace(0.5, 1.0, 6)[1::2])
    assert "Slices 1, 3, 5, ... of train.npz (6 slices)" in subset.description
    with pytest.raises(InputError, match="lost patients"):
        pack(source, tmp_path / "lost.npz", stride=4, offset=0)


def test_gpu_pack_parts_carry_the_whole_stack_within_half_a_step(tmp_path):
    from benchmarks.gpu.pack import pack_parts, unpack_part
    from ctbird.errors import InputError
    from ctbird.stacks import SliceStack, read_slice_stack, write_slice_stack

    source = tmp_path / "train.npz"
    rng = np.random.default_rng(0)
    images = rng.integers(-1024, 3072, size=(7, 8, 8)).astype(np.int16)
    write_slice_stack(source, SliceStack(images=images, patient=np.array(list("aabbccc")),
                                         pixel_spacing_mm=np.linspace(0.5, 1.0, 7)))
    written = pack_parts(source, tmp_path / "parts", parts=2, hu_step=2)
    assert [path.name for path, _ in written] == ["train_part1.npz.xz", "train_part2.npz.xz"]
    unpacked = [unpack_part(path, tmp_path / "staged") for path, _ in written]
    assert [slices for _, slices in unpacked] == [4, 3]
    stacks = [read_slice_stack(target) for target, _ in unpacked]
    assert [len(stack) for stack in stacks] == [4, 3]
    for k, stack in enumerate(stacks):  # part k holds slices k, k + 2, ... with their metadata
        assert np.abs(stack.images.astype(int) - images[k::2]).max() <= 1
        assert np.all(stack.images % 2 == 0)
        np.testing.assert_array_equal(stack.patient, np.array(list("aabbccc"))[k::2])
        assert "2 parts together are the whole stack" in stack.description
    with pytest.raises(InputError, match="not found"):
        unpack_part(tmp_path / "parts" / "train_part3.npz.xz", tmp_path / "staged")


def test_tune_refine_scores_bird_and_each_refinement_of_it(tmp_path, save_prior):
    prior = save_prior(tmp_path / "prior")
    stack = tmp_path / "stack.npz"  # training stacks hold 256² slices
    yy, xx = np.mgrid[:256, :256] - 127.5
    disk = np.where(np.hypot(yy, xx) <= 60, 0, -1000) + np.where(np.hypot(yy - 20, xx) <= 15, 800, 0)
    np.savez(stack, images=disk[None].astype(np.int16), pixel_spacing_mm=np.full(1, 1.5, np.float32))
    _run("benchmarks.studies.tune_refine", "--slice", f"{stack}:0", "--tasks", "gaussian-deblur,denoise", "--variants",
         "t200+anchor1200,t60+cg0", "--iters", "1", "--size", str(SIZE), "--prior", str(prior), "--device", "cpu",
         "--tag", "t", "--out-dir", str(tmp_path), cwd=tmp_path)
    payload = json.loads((tmp_path / "refine_t.json").read_text())
    rows = {(r["task"], r["variant"]): r for r in payload["results"]}
    assert set(rows) == {(task, name) for task in ("gaussian-deblur", "denoise")
                         for name in ("observation", "bird", "default")} | {("gaussian-deblur", "t200+anchor1200"),
                                                                              ("denoise", "t60+cg0"),
                                                                              ("gaussian-deblur", "initial kernel"),
                                                                              ("gaussian-deblur", "kernel fit to the truth")}
    # the kernel fit from the true image finds the simulated blur (sigma 3 px at 256², scaled to SIZE) far better
    # than BIRD's flat start
    fitted, start = rows[("gaussian-deblur", "kernel fit to the truth")], rows[("gaussian-deblur", "initial kernel")]
    assert fitted["kernel_error_mean"] < 0.5 * start["kernel_error_mean"]
    assert "psnr_mean" not in fitted and "kernel_error_mean" in rows[("gaussian-deblur", "bird")]
    assert rows[("denoise", "t60+cg0")]["settings"]["t0"] == 60
    assert rows[("denoise", "t60+cg0")]["nfe_mean"] == rows[("denoise", "bird")]["nfe_mean"] + 60 // 20 + 1
    assert rows[("gaussian-deblur", "t200+anchor1200")]["psnr_mean"] != rows[("gaussian-deblur", "bird")]["psnr_mean"]
    page = (tmp_path / "refine_t.md").read_text()
    assert "| denoise | t60+cg0 |" in page and "| kernel error | kernel width |" in page


def _disk_stack(path: Path, radius: float = 60) -> Path:
    """A one-slice 256² HU training stack (the studies on training slices read 256² slices): a water disk of
    ``radius`` px in air (over 182 px: water to the border) with a bright insert."""
    yy, xx = np.mgrid[:256, :256] - 127.5
    disk = np.where(np.hypot(yy, xx) <= radius, 0, -1000) + np.where(np.hypot(yy - 20, xx) <= 15, 800, 0)
    np.savez(path, images=disk[None].astype(np.int16), pixel_spacing_mm=np.full(1, 1.5, np.float32))
    return path


def test_tune_blur_width_scores_each_blur_noise_floor_and_border(tmp_path, save_prior):
    prior = save_prior(tmp_path / "prior")
    stack = _disk_stack(tmp_path / "stack.npz", radius=400)  # tissue at the border: the border model matters
    _run("benchmarks.studies.tune_blur_width", "--slice", f"{stack}:0", "--sigmas", "1", "--noises", "0.001",
         "--floors", "0,0.2", "--paddings", "reflect,zeros", "--size", str(SIZE), "--prior", str(prior), "--tag", "t",
         "--out-dir", str(tmp_path), cwd=tmp_path)
    payload = json.loads((tmp_path / "blur_width_t.json").read_text())
    rows = {(r["floor"], r["padding"]): r for r in payload["results"]}
    assert set(rows) == {(f, p) for f in (0.0, 0.2) for p in ("reflect", "zeros")}
    assert all(r["sigma"] == 1.0 and r["noise"] == 0.001 for r in rows.values())
    assert all(_finite(r["width_mean"]) and r["width_mean"] > 0 for r in rows.values())
    assert rows[0.0, "reflect"]["width_mean"] != rows[0.2, "reflect"]["width_mean"]  # the floor reaches the search
    assert rows[0.0, "reflect"]["input_psnr_mean"] == rows[0.2, "reflect"]["input_psnr_mean"]  # never the observation
    assert rows[0.0, "reflect"]["width_mean"] != rows[0.0, "zeros"]["width_mean"]  # the border reaches the operator
    assert "| 1.0 | 0.0010 | 0.200 | zeros |" in (tmp_path / "blur_width_t.md").read_text()


def test_tune_blur_width_refine_scores_the_refined_image_with_the_search_width(tmp_path, save_prior):
    prior = save_prior(tmp_path / "prior")
    stack = _disk_stack(tmp_path / "stack.npz", radius=60)
    common = ["--slice", f"{stack}:0", "--sigmas", "2", "--noises", "0.01", "--floors", "0.01", "--size", str(SIZE),
              "--prior", str(prior), "--out-dir", str(tmp_path)]
    _run("benchmarks.studies.tune_blur_width", *common, "--tag", "search", cwd=tmp_path)
    _run("benchmarks.studies.tune_blur_width", *common, "--refine", "--tag", "refined", cwd=tmp_path)
    _run("benchmarks.studies.tune_blur_width", *common, "--iters", "3", "--width-starts", "0,0.9", "--tag", "short",
         cwd=tmp_path)
    search, refined, short = (json.loads((tmp_path / f"blur_width_{tag}.json").read_text())
                              for tag in ("search", "refined", "short"))
    assert (search["refine"], refined["refine"]) == (False, True)
    assert refined["results"][0]["width_mean"] == pytest.approx(search["results"][0]["width_mean"])  # kept
    assert (search["bird"]["iters"], short["bird"]["iters"]) == (60, 3)  # the cpu-fast preset's, then --iters
    assert "(3 iterations)" in (tmp_path / "blur_width_short.md").read_text()
    assert refined["results"][0]["bird_psnr_mean"] != search["results"][0]["bird_psnr_mean"]  # another image
    assert refined["results"][0]["search_psnr_mean"] == pytest.approx(search["results"][0]["bird_psnr_mean"])
    flat, scaled = short["results"]  # width_start_fraction 0 starts at 1 px; 0.9 of the 2 px blur's estimate above
    assert (flat["width_start"], scaled["width_start"]) == (0.0, 0.9)
    assert flat["initial_width_mean"] == 1.0 < scaled["initial_width_mean"]
    assert search["results"][0]["width_start"] is None  # the task's default
    assert "| reflect | the task's | 1.00 |" in (tmp_path / "blur_width_search.md").read_text()  # at the prior's grid
    assert "refinement on" in (tmp_path / "blur_width_refined.md").read_text()


def test_denoise_fbp_scores_fbp_bird_and_tv_per_dose(tmp_path, save_prior):
    prior = save_prior(tmp_path / "prior")
    _run("benchmarks.denoise_fbp", "--synthetic", "--max-images", "1", "--size", str(SIZE), "--views", "48",
         "--doses", "1e6,1e3", "--prior", str(prior), "--tag", "t", "--out-dir", str(tmp_path), cwd=tmp_path)
    rows = {r["dose"]: r for r in json.loads((tmp_path / "denoise-fbp_t.json").read_text())["results"]}
    assert set(rows) == {1e6, 1e3} and all(r["images"] == 1 for r in rows.values())
    # fewer photons: a noisier FBP, by the truth and by the estimate the denoiser assumes
    assert rows[1e3]["input_psnr_mean"] < rows[1e6]["input_psnr_mean"]
    assert rows[1e3]["noise_true_mean"] > rows[1e6]["noise_true_mean"] > 0
    assert rows[1e3]["noise_estimate_mean"] > rows[1e6]["noise_estimate_mean"]
    assert all(_finite(r[f"{m}_psnr_mean"]) for r in rows.values() for m in ("bird", "tv"))
    assert rows[1e3]["bird_psnr_mean"] != rows[1e3]["input_psnr_mean"]  # the denoiser changed the image
    assert "| 1000 |" in (tmp_path / "denoise-fbp_t.md").read_text()


def test_kernel_bound_orders_the_blurred_true_kernels(tmp_path):
    stack = _disk_stack(tmp_path / "stack.npz")
    _run("benchmarks.studies.kernel_bound", "--slice", f"{stack}:0", "--size", "64", "--tag", "t", "--out-dir",
         str(tmp_path), cwd=tmp_path)
    rows = {r["kernel"]: r for r in json.loads((tmp_path / "kernel_bound_t.json").read_text())["results"]}
    blurred = [rows[f"true kernel blurred by {s} px"]["kernel_error_mean"] for s in (0.5, 1.0, 1.5)]
    assert blurred == sorted(blurred) and blurred[0] > 0
    assert rows["initial kernel"]["kernel_error_mean"] > blurred[-1]
    assert rows["initial kernel"]["halved"] == 0 and len(rows) == 10
    # the data term relative to the true kernel's: the flat start fits worse; more least-squares steps fit better
    assert rows["initial kernel"]["misfit_ratio_mean"] > 1.0
    assert (rows["least squares from the truth, 2000 steps"]["misfit_ratio_mean"]
            < rows["least squares from the truth, 300 steps (default)"]["misfit_ratio_mean"])
    assert "| initial kernel |" in (tmp_path / "kernel_bound_t.md").read_text()


def test_restore_dicom_runs_the_cli_on_degraded_dicom(tmp_path, save_prior):
    from ctbird.io import write_derived_dicom

    prior = save_prior(tmp_path / "prior")
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    hu = np.where(np.hypot(yy, xx) <= SIZE / 3, 40.0, -1000.0) + np.where(np.hypot(yy - 3, xx) <= 4, 700.0, 0.0)
    source = tmp_path / "slice.dcm"
    write_derived_dicom(hu.astype(np.float32), None, source, method_name="test", pixel_spacing_mm=(0.7, 0.7))
    _run("benchmarks.restore_dicom", "--dicom", str(source), "--prior", str(prior), "--tag", "t", "--out-dir",
         str(tmp_path), cwd=tmp_path)
    rows = {r["task"]: r for r in json.loads((tmp_path / "restore-dicom_t.json").read_text())["results"]}
    assert set(rows) == {"gaussian-deblur", "sr"}
    assert set(rows["gaussian-deblur"]["scores"]) == {"input", "wiener", "richardson-lucy"}
    assert set(rows["sr"]["scores"]) == {"bicubic"} and "width" not in rows["sr"]
    assert rows["gaussian-deblur"]["width"] > 0 and all(_finite(r["psnr"]) for r in rows.values())
    assert source.read_bytes() and "| gaussian-deblur |" in (tmp_path / "restore-dicom_t.md").read_text()
    _run("benchmarks.restore_dicom", "--dicom", str(source), "--prior", str(prior), "--tasks",
         "motion-deblur,denoise,inpaint", "--noise-hu", "30", "--tag", "u", "--out-dir", str(tmp_path), cwd=tmp_path)
    rows = {r["task"]: r for r in json.loads((tmp_path / "restore-dicom_u.json").read_text())["results"]}
    assert set(rows["motion-deblur"]["scores"]) == {"input", "wiener", "richardson-lucy"}
    assert 0 < rows["motion-deblur"]["kernel_error"] < 2 and "width" not in rows["motion-deblur"]
    assert rows["denoise"]["noise_hu_estimate"] == pytest.approx(30, rel=0.5)  # the estimate, in HU
    assert set(rows["inpaint"]["scores"]) == {"input", "biharmonic"}
    assert rows["inpaint"]["scores"]["input"]["psnr"] < rows["denoise"]["scores"]["input"]["psnr"]  # the hole
    completed = _launch("benchmarks.restore_dicom", "--dicom", str(tmp_path / "missing.dcm"), "--prior", str(prior),
                        "--out-dir", str(tmp_path / "none"), cwd=tmp_path)
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    assert not (tmp_path / "none").exists()


def test_tune_denoise_strength_scores_each_noise_and_variant(tmp_path, save_prior):
    prior = save_prior(tmp_path / "prior")
    stack = _disk_stack(tmp_path / "stack.npz")
    _run("benchmarks.studies.tune_denoise_strength", "--slice", f"{stack}:0", "--noises", "0.01,benchmark",
         "--variants", "t60,scale1,scale2", "--size", str(SIZE), "--prior", str(prior), "--tag", "t", "--out-dir",
         str(tmp_path), cwd=tmp_path)
    rows = {r["noise"]: r for r in json.loads((tmp_path / "denoise_strength_t.json").read_text())["results"]}
    assert set(rows) == {0.01, "benchmark"}
    assert 39.5 < rows[0.01]["input_psnr_mean"] < 43.0  # white noise of std 0.01 (clipped at 0 and 1)
    assert rows["benchmark"]["input_psnr_mean"] < rows[0.01]["input_psnr_mean"]
    scores = [rows[0.01][f"{name}_mean"] for name in ("t60", "scale1", "scale2")]
    assert all(_finite(v) for v in scores) and len(set(scores)) == 3  # each variant reaches the refinement
    page = (tmp_path / "denoise_strength_t.md").read_text()
    assert "| 0.01 |" in page
    assert page.startswith("# Denoising strength: a fixed renoising timestep against one that follows the noise (`t`)"
                           "\n\nGenerated by `python -m benchmarks.studies.tune_denoise_strength`; do not edit by hand."
                           "\n\n- Command: `python -m benchmarks.studies.tune_denoise_strength --slice")  # page_header
    completed = _launch("benchmarks.studies.tune_denoise_strength", "--slice", f"{stack}:0", "--variants", "x5",
                        "--out-dir", str(tmp_path / "none"), cwd=tmp_path)
    assert completed.returncode == 2 and "Traceback" not in completed.stderr and not (tmp_path / "none").exists()


def test_restore_dicom_blurs_by_the_operators_convolution():
    """The motion degradation in HU is the blur that ``restore`` models (a true convolution), so the kernel error
    compares like with like."""
    from types import SimpleNamespace

    import torch

    from benchmarks.restore_dicom import degrade
    from operators.blur import Blur

    hu = np.random.default_rng(0).normal(0, 100, (64, 64))
    observed, kernel, mask = degrade(hu, "motion-deblur", SimpleNamespace(noise_hu=0.0), seed=3)
    assert mask is None and kernel.shape == (11, 11) and not np.allclose(kernel, kernel[::-1, ::-1])
    expected = Blur(torch.from_numpy(kernel), image_shape=(1, 64, 64))(torch.from_numpy(hu)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(observed[8:-8, 8:-8], expected[8:-8, 8:-8], atol=1e-6)
