"""``python -m benchmarks.volume`` end to end on phantom stacks with a tiny prior (1 process; CPU)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_volume_benchmark_times_methods_and_tunes_z_tv(tmp_path, tiny_prior):
    prior = tiny_prior.save_pretrained(tmp_path / "prior")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    args = ["--synthetic", "--prior", str(prior), "--size", "16", "--views", "8", "--slices", "3", "--processes", "1",
            "--methods", "fbp,bird", "--bird-iters", "1", "--z-tv-slices", "3", "--z-tv-methods", "sirt",
            "--z-tv-weights", "0.03,0.3", "--threads", "1", "--smoke", "--tag", "t", "--out-dir", str(tmp_path / "out")]
    completed = subprocess.run([sys.executable, "-m", "benchmarks.volume", *args], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    payload = json.loads((tmp_path / "out" / "t.json").read_text())
    assert [(r["method"], r["processes"], r["slices"]) for r in payload["throughput"]] == [("fbp", 1, 3), ("bird", 1, 3)]
    assert all(r["slices_per_minute"] == 60.0 * 3 / r["seconds"] > 0 for r in payload["throughput"])
    rows = payload["consistency"]
    assert [(r["series"], r["z_tv_weight"]) for r in rows] == [("train", None), ("train", 0.03), ("train", 0.3),
                                                               ("eval", None), ("eval", payload["z_tv_tuned"]["sirt"])]
    train = {r["z_tv_weight"]: r for r in rows if r["series"] == "train"}
    best = max((0.03, 0.3), key=lambda w: train[w]["coronal_psnr"] + train[w]["sagittal_psnr"])
    assert payload["z_tv_tuned"] == {"sirt": best}
    assert all(math.isfinite(r[k]) for r in rows for k in ("axial_psnr", "coronal_psnr", "z_gradient_rmse_hu"))
    page = (tmp_path / "out" / "t.md").read_text()
    assert "Smoke run" in page and "python -m benchmarks.volume" in page and "| bird | 1 |" in page
