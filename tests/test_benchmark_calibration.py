"""``python -m benchmarks.calibration`` end to end on a Shepp-Logan slice with a tiny random prior (CPU, 32 x 32)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_benchmark_calibration_runs_and_reports_the_targets(tmp_path, tiny_unet_config_factory, bird_scheduler_config):
    from ctbird.priors import DiffusionPrior

    prior = DiffusionPrior.from_config(tiny_unet_config_factory(1, 32), bird_scheduler_config, seed=0)
    prior.save_pretrained(tmp_path / "prior")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "CTBIRD_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    args = ["--synthetic", "--max-slices", "1", "--size", "32", "--views", "12", "--geometry", "fan",
            "--offsets", "2", "--psnr-offset", "2", "--jitter", "0.3", "--bird-slices", "1", "--prior",
            str(tmp_path / "prior"), "--out-dir", str(tmp_path / "out"), "--tag", "t"]
    done = subprocess.run([sys.executable, "-m", "benchmarks.calibration", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads((tmp_path / "out" / "t.json").read_text())
    rows = payload["rows"]
    assert len(rows) == 2 and payload["record"]["command"].startswith("python -m benchmarks.calibration")
    for row in rows:
        assert abs(row["ours_error"]) < 0.1
        assert set(row["psnr"]["fbp"]) == {"ours", "classical", "nominal", "true"}
        assert row["psnr"]["sirt"]["ours"] > row["psnr"]["sirt"]["nominal"] + 3
    bird = [r for r in rows if "bird" in r["psnr"]]
    assert len(bird) == 1 and all(set(r["psnr"]["bird"]) == {"ours", "true", "nominal"} for r in bird)
    assert len(payload["summary"]["bird_cost_ratio"]) == 1
    page = (tmp_path / "out" / "t.md").read_text()
    assert "## Targets" in page and "Angle jitter" in page and "BIRD cost ratio" in page
    again = subprocess.run([sys.executable, "-m", "benchmarks.calibration", "--rerender", str(tmp_path / "out" / "t.json")],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "out" / "t.md").read_text() == page
