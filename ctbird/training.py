"""Train ctbird's CT diffusion prior (``ctbird train-prior``).

A diffusers ``UNet2DModel`` learns to predict the noise (epsilon) of axial CT slices under the
DDPM schedule BIRD's DDIM expects (:data:`ctbird.priors.schedule.SCHEDULER_CONFIG`: 1000 steps, linear betas
1e-4 .. 0.02).  Slices come from HU stacks (:mod:`ctbird.stacks`: ``.npz`` with ``images`` ``[S, H, W]``, or
``.npy``) or DICOM files / series folders; they get the pre-processing of inference
(:func:`ctbird.stacks.working_slices`) and the one shared conversion to the prior's [-1, 1] scale,
:func:`ctbird.units.hu_to_unit`.

Design (for speed on one GPU and correctness on several):

* The whole (resized) training set is held as one float16 tensor on the accelerator's device;
  every process draws its own random batches there with a per-rank generator and augments them
  on the device (random zoom, random translation by padding with air and cropping, left-right flips).  No
  data-loader workers are needed.
* ``accelerate`` runs the loop: ``accelerate launch -m ctbird.training ...`` trains data-parallel
  on several GPUs (gradients all-reduced, loss gathered, only the main process writes files).
* EMA weights (diffusers ``EMAModel`` with warm-up), bf16 autocast on CUDA, TF32, channels-last;
  ``--compile`` runs the training step's UNet through ``torch.compile``.
* ``OUT/checkpoints/checkpoint-<step>/`` holds ``accelerator.save_state`` checkpoints (model,
  optimizer, LR schedule, RNG, EMA, step); ``--resume`` continues from the latest one.
* ``--max-minutes`` stops cleanly: final checkpoint, then the export.
* ``--init-from PRIOR`` starts a new run from an exported prior's weights (fresh optimizer and EMA), so
  training can go on in several short stretches; the prior's stretches (``previous_stretches`` in
  ``training_info.json``) and its loss log carry over, and the model card lists every stretch.
* An ``.npz`` stack may hold a ``description`` string (e.g. how a subset was drawn); the card quotes it.
* The export (periodically and at the end) is a diffusers ``save_pretrained`` folder:
  ``OUT/unet/`` (EMA weights, fp16 by default), ``OUT/scheduler/`` (DDIMScheduler),
  ``OUT/model_index.json``, the model card ``OUT/README.md``, ``OUT/loss.png``,
  ``OUT/samples.png`` and ``OUT/loss.jsonl``; ``--archive`` also packs these into one tar.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shlex
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, Iterator

import click
import numpy as np
import torch
import torch.nn.functional as F

from ctbird.errors import ConfigError, CtbirdError, InputError
from ctbird.io.atomic import atomic_file, write_text_atomic
from ctbird.modelcard import training_stretches
from ctbird.priors import DiffusionPrior, NoiseSchedule
from ctbird.stacks import SliceStack, read_slice_stack, working_slices
from ctbird.units import WINDOWS, hu_to_unit, unit_to_hu

#: UNet presets. "small" is the shipped prior (about 5.5 M parameters, 11 MB in fp16, about
#: 0.3 s per 256² forward pass on 2 CPU threads); "tiny" is for tests.  Attention runs only at
#: the two coarsest levels (32² and 16² for 256² inputs).
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "small": {
        "block_out_channels": (32, 64, 96, 128, 128),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        "attention_head_dim": 32,
        "norm_num_groups": 32,
    },
    "tiny": {
        "block_out_channels": (8, 16),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": 8,
        "norm_num_groups": 8,
    },
}

DICOM_SUFFIXES = {".dcm", ".dicom", ".ima", ""}
CARD_EXPORT_FILES = ("unet", "scheduler", "model_index.json", "README.md", "loss.png", "samples.png", "loss.jsonl")


@dataclasses.dataclass
class TrainConfig:
    """Options of :func:`train_prior` (the CLI's options, same names)."""

    size: int = 256
    model_preset: str = "small"
    steps: int = 100_000
    batch_size: int = 16
    lr: float = 2e-4
    lr_schedule: str = "constant"  # "constant" | "cosine" (both after a linear warm-up)
    warmup_steps: int = 200
    ema_decay: float = 0.9999
    ema_power: float = 2 / 3
    max_shift_px: int = 8
    max_zoom: float = 1.0  # 1: off; z > 1: scales drawn log-uniformly from [1/z, z]
    seed: int = 0
    max_minutes: float | None = None
    mixed_precision: str = "auto"  # "auto" (bf16 on CUDA, no on CPU) | "no" | "bf16" | "fp16"
    log_every: int = 10
    sample_every: int = 2000
    checkpoint_every: int = 2000
    export_every_minutes: float | None = None
    checkpoints_total_limit: int = 2
    num_samples: int = 16
    sample_steps: int = 50
    fp16_weights: bool = True
    resume: bool = False
    init_from: Path | None = None
    archive: Path | None = None
    compile: bool = False
    command: str = ""


@dataclasses.dataclass
class TrainResult:
    """Summary of a finished :func:`train_prior` run."""

    out_dir: Path
    steps: int
    final_loss: float
    stopped_by_time: bool
    info: dict[str, Any]


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
def _read_dicom_file(path: Path) -> np.ndarray:
    try:
        from ctbird.io.dicom import read_dicom
    except ImportError as exc:
        raise InputError(f"{path} looks like DICOM but ctbird's DICOM reader cannot be imported ({exc}); "
                         "install pydicom or pass .npy/.npz HU stacks instead.") from exc
    return np.asarray(read_dicom(path).hu, dtype=np.float32)


def load_slices(paths: list[Path | str], size: int) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Read CT slices and bring them onto the prior's scale.

    Every slice goes through :func:`ctbird.stacks.working_slices`, the pre-processing inference uses too
    (clip to the prior window, pad non-square slices with air, resample to ``size``), then
    :func:`ctbird.units.hu_to_unit`.

    Parameters
    ----------
    paths : list of paths
        HU stacks (:func:`ctbird.stacks.read_slice_stack`: ``.npz`` with ``images`` ``[S, H, W]``, or ``.npy``),
        DICOM files or DICOM series folders.
    size : int
        Side of the square training slices.

    Returns
    -------
    slices : torch.Tensor
        float16 ``[N, 1, size, size]`` in [-1, 1].
    sources : list of dict
        Per input: path, slice count, original shape, preprocessing, collections/patients if known.
    """
    if not paths:
        raise InputError("no training data given: pass .npz/.npy HU stacks, DICOM files or series folders")
    stacks, sources = [], []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise InputError(f"training data {path} does not exist; pass existing .npz/.npy/DICOM paths")
        if path.suffix.lower() in (".npy", ".npz"):
            stack = read_slice_stack(path)
        elif path.is_dir() or path.suffix.lower() in DICOM_SUFFIXES:
            stack = SliceStack(images=_read_dicom_file(path))
        else:
            raise InputError(f"unsupported training file {path}: expected .npz/.npy HU stacks, "
                             "DICOM files (.dcm) or DICOM series folders")
        hu, preprocessing = working_slices(stack.images, size)
        stacks.append(hu_to_unit(torch.from_numpy(hu)).to(torch.float16)[:, None])
        source: dict[str, Any] = {"path": str(path), "slices": len(stack),
                                  "original_shape": list(stack.images.shape[1:]), "preprocessing": preprocessing}
        if stack.collection is not None:
            names, counts = np.unique(stack.collection.astype(str), return_counts=True)
            source["collections"] = {str(n): int(c) for n, c in zip(names, counts)}
        if stack.patient is not None:
            source["patients"] = sorted({str(p) for p in stack.patient})
        if stack.description is not None:
            source["description"] = stack.description
        sources.append(source)
    return torch.cat(stacks), sources


def augment(batch: torch.Tensor, max_shift: int, generator: torch.Generator, max_zoom: float = 1.0) -> torch.Tensor:
    """Random zoom, translation (pad with air = -1, crop) and left-right flips of ``[B, 1, H, W]`` on [-1, 1].

    ``max_zoom`` z > 1 scales each slice about its centre by a factor drawn log-uniformly from [1/z, z]
    (bilinear; zooming in crops the body at the edges, as a tight reconstruction field of view does; zooming
    out pads with air). Vertical flips and rotations are deliberately absent: CT anatomy and the table are
    not top-bottom symmetric.
    """
    b, _, h, w = batch.shape
    device = batch.device
    if max_zoom > 1.0:
        scale = torch.exp((2 * torch.rand(b, device=device, generator=generator) - 1) * math.log(max_zoom))
        theta = torch.zeros(b, 2, 3, device=device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale  # output point p samples the input at p / scale
        grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
        # shift air to 0 so that grid_sample's zero padding is air
        batch = F.grid_sample(batch + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1
    flip = torch.rand(b, device=device, generator=generator) < 0.5
    batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    if max_shift <= 0:
        return batch
    padded = F.pad(batch, (max_shift,) * 4, value=-1.0)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), device=device, generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), device=device, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=device))[:, :, None]
    cols = (dx[:, None] + torch.arange(w, device=device))[:, None, :]
    return padded[torch.arange(b, device=device)[:, None, None], 0, rows, cols][:, None]


def random_batches(data: torch.Tensor, batch_size: int, max_shift: int, generator: torch.Generator,
                   max_zoom: float = 1.0) -> Iterator[torch.Tensor]:
    """Endless float32 augmented batches drawn (with replacement) from ``data`` on its device (see :func:`augment`)."""
    while True:
        index = torch.randint(0, data.shape[0], (batch_size,), device=data.device, generator=generator)
        yield augment(data[index].float(), max_shift, generator, max_zoom)


# ----------------------------------------------------------------------------------------------
# Model, schedulers, samples
# ----------------------------------------------------------------------------------------------
def build_unet(preset: str, size: int):
    """A fresh ``UNet2DModel`` of the given preset for ``size``² single-channel slices."""
    from diffusers import UNet2DModel

    if preset not in MODEL_PRESETS:
        raise ConfigError(f"unknown model preset {preset!r}; choose one of {sorted(MODEL_PRESETS)}")
    config = MODEL_PRESETS[preset]
    levels = len(config["block_out_channels"])
    if size % 2 ** (levels - 1):
        raise ConfigError(f"--size {size} must be divisible by {2 ** (levels - 1)} for preset {preset!r}")
    return UNet2DModel(sample_size=size, in_channels=1, out_channels=1, **config)


def save_sample_grid(samples: torch.Tensor, path: Path) -> None:
    """PNG grid of ``[n, 1, S, S]`` prior-scale samples in the wide window (-1000..1000 HU)."""
    from PIL import Image

    lo, hi = WINDOWS["wide"]
    images = ((unit_to_hu(samples[:, 0]) - lo) / (hi - lo)).clamp(0, 1).mul(255).round().byte().numpy()
    n, s, _ = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * s, cols * s), dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * s:(r + 1) * s, c * s:(c + 1) * s] = image
    with atomic_file(path) as handle:
        Image.fromarray(grid).save(handle, format="PNG")


def save_loss_plot(log_path: Path, path: Path) -> None:
    """Loss curve (raw and smoothed, log scale) from the jsonl loss log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not records:
        return
    steps = np.array([r["step"] for r in records])
    loss = np.array([r["loss"] for r in records])
    smooth = np.convolve(loss, np.ones(min(20, len(loss))) / min(20, len(loss)), mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, loss, alpha=0.3, label="loss")
    ax.plot(steps[len(steps) - len(smooth):], smooth, label="moving average")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("epsilon MSE")
    ax.legend()
    fig.tight_layout()
    with atomic_file(path) as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)


def _write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


class TrainState:
    """Step counter and accumulated training time, checkpointed with ``accelerate``."""

    def __init__(self) -> None:
        self.step = 0
        self.seconds = 0.0

    def state_dict(self) -> dict[str, float]:
        return {"step": self.step, "seconds": self.seconds}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.step = int(state["step"])
        self.seconds = float(state["seconds"])


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The ``checkpoint-<step>`` folder with the highest step under ``out_dir/checkpoints``."""
    folders = [p for p in (Path(out_dir) / "checkpoints").glob("checkpoint-*")
               if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return max(folders, key=lambda p: int(p.name.split("-")[-1]), default=None)


def export_model(unet, ema, out_dir: Path, info: dict[str, Any], fp16: bool, samples: torch.Tensor | None,
                 archive: Path | None) -> None:
    """Write the EMA weights as a diffusers folder plus card, plots and (optionally) a tar archive."""
    from diffusers import UNet2DModel
    from diffusers.utils import logging as diffusers_logging

    from ctbird.modelcard import write_model_card

    export = UNet2DModel.from_config(unet.config)
    ema.copy_to(export.parameters())
    dtype = torch.float16 if fp16 else torch.float32
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # silence the fp16-cast notice (no module needs fp32 here)
    try:
        export = export.to("cpu", dtype)
    finally:
        diffusers_logging.set_verbosity(verbosity)
    tmp_unet = out_dir / ".unet.tmp"
    export.save_pretrained(tmp_unet, safe_serialization=True)
    (out_dir / "unet").mkdir(exist_ok=True)
    for file in tmp_unet.iterdir():
        file.chmod(0o644)
        os.replace(file, out_dir / "unet" / file.name)
    tmp_unet.rmdir()
    NoiseSchedule().save(out_dir / "scheduler")
    _write_json(out_dir / "model_index.json", {
        "_class_name": "DDIMPipeline", "_diffusers_version": _diffusers_version(),
        "unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", "DDIMScheduler"],
    })
    if samples is not None:
        save_sample_grid(samples, out_dir / "samples.png")
    log_path = out_dir / "loss.jsonl"
    if log_path.exists():
        save_loss_plot(log_path, out_dir / "loss.png")
    weights = out_dir / "unet" / "diffusion_pytorch_model.safetensors"
    info = {**info, "weights_dtype": str(dtype).replace("torch.", ""),
            "weights_mb": weights.stat().st_size / 1e6}
    write_model_card(out_dir, info)
    _write_json(out_dir / "training_info.json", info)
    if archive is not None:
        Path(archive).parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(archive) as handle, tarfile.open(fileobj=handle, mode="w") as tar:
            for name in (*CARD_EXPORT_FILES, "training_info.json"):
                if (out_dir / name).exists():
                    tar.add(out_dir / name, arcname=f"prior/{name}")


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


def _hardware(device: torch.device, num_processes: int) -> str:
    if device.type == "cuda":
        return f"{num_processes} x {torch.cuda.get_device_name(device)}"
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# ----------------------------------------------------------------------------------------------
# Training loop
# ----------------------------------------------------------------------------------------------
def load_initial_weights(unet, prior_dir: Path) -> None:
    """Copy the UNet weights of an exported prior (``prior_dir/unet`` or a bare UNet folder) into ``unet``.

    Lets a new run continue from a shipped prior (e.g. ``data/priors/ctbird-ct-256``) when its checkpoints (optimizer
    and EMA state) are not at hand; the optimizer and the EMA restart from these weights.
    """
    from diffusers import UNet2DModel

    folder = prior_dir / "unet" if (prior_dir / "unet" / "config.json").is_file() else prior_dir
    if not (folder / "config.json").is_file():
        raise InputError(f"--init-from {prior_dir}: no UNet found (expected {prior_dir}/unet/config.json or "
                         f"{prior_dir}/config.json, the diffusers save_pretrained layout).")
    source = UNet2DModel.from_pretrained(folder, torch_dtype=torch.float32)
    def normalized(value):  # config.json stores tuples as lists
        return list(value) if isinstance(value, (list, tuple)) else value

    mismatched = {k: (v, unet.config.get(k)) for k, v in source.config.items()
                  if not k.startswith("_") and normalized(unet.config.get(k)) != normalized(v)}
    if mismatched:
        raise ConfigError(f"--init-from {prior_dir}: its UNet differs from --model-preset/--size in "
                          f"{sorted(mismatched)} (prior vs preset: {mismatched}); pick the matching preset and size.")
    unet.load_state_dict(source.state_dict())


def prior_lineage(prior_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Earlier training stretches of ``prior_dir`` (oldest first, ending with its own) and its loss-log lines.

    ``([], [])`` for a folder without ``training_info.json`` (e.g. a UNet not trained by ctbird).
    """
    info_path = prior_dir / "training_info.json"
    if not info_path.is_file():
        return [], []
    info = json.loads(info_path.read_text(encoding="utf-8"))
    log_path = prior_dir / "loss.jsonl"
    lines = [line for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if log_path.is_file() else []
    return training_stretches(info), lines


def train_prior(data: list[Path | str], out_dir: Path | str, config: TrainConfig | None = None) -> TrainResult:
    """Train (or resume training) a CT diffusion prior; see the module docstring.

    Parameters
    ----------
    data : list of paths
        HU stacks (``.npz``/``.npy``) and/or DICOM files or series folders.
    out_dir : path
        Output folder (created); holds the export, ``checkpoints/``, ``samples/`` and ``loss.jsonl``.
    config : TrainConfig
        Options; defaults train the "small" preset at 256².

    Raises
    ------
    InputError
        Missing or unusable training data.
    ConfigError
        Invalid options (unknown preset, size not divisible, ``--resume`` without a checkpoint...).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    call_start = time.monotonic()
    config = config or TrainConfig()
    out_dir = Path(out_dir)
    if config.steps < 1 or config.batch_size < 1 or config.lr <= 0:
        raise ConfigError(f"--steps, --batch-size must be >= 1 and --lr > 0 (got {config.steps}, "
                          f"{config.batch_size}, {config.lr})")
    if not config.max_zoom >= 1.0:
        raise ConfigError(f"--max-zoom must be >= 1 (1 turns zoom off), got {config.max_zoom}")
    if config.lr_schedule not in ("constant", "cosine"):
        raise ConfigError(f"--lr-schedule must be 'constant' or 'cosine', got {config.lr_schedule!r}")
    precision = config.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "no"
    if precision not in ("no", "bf16", "fp16"):
        raise ConfigError(f"--mixed-precision must be auto, no, bf16 or fp16, got {precision!r}")
    checkpoint = latest_checkpoint(out_dir) if config.resume else None
    if config.resume and config.init_from is not None:
        raise ConfigError("--resume and --init-from exclude each other: resume continues a run's own checkpoint, "
                          "--init-from starts a new run from an exported prior's weights.")
    if config.resume and checkpoint is None:
        raise ConfigError(f"--resume: no checkpoint under {out_dir / 'checkpoints'}; train without --resume first")

    accelerator = Accelerator(mixed_precision=precision)
    device = accelerator.device
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    set_seed(config.seed)
    main = accelerator.is_main_process
    if main:
        (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (out_dir / "samples").mkdir(exist_ok=True)

    slices, sources = load_slices(list(data), config.size)
    slices = slices.to(device)
    unet = build_unet(config.model_preset, config.size)
    lineage_path = out_dir / "lineage.json"
    if config.init_from is not None:
        load_initial_weights(unet, Path(config.init_from))
    if checkpoint is None and main:  # a new run: its lineage and loss log start here (or from --init-from's)
        previous, parent_log = prior_lineage(Path(config.init_from)) if config.init_from is not None else ([], [])
        _write_json(lineage_path, previous)
        (out_dir / "loss.jsonl").write_text("".join(line + "\n" for line in parent_log), encoding="utf-8")
    accelerator.wait_for_everyone()
    previous_stretches = json.loads(lineage_path.read_text(encoding="utf-8")) if lineage_path.is_file() else []
    step_offset = sum(int(stretch.get("steps") or 0) for stretch in previous_stretches)
    unet = unet.to(device, memory_format=torch.channels_last)
    ema = EMAModel(unet.parameters(), decay=config.ema_decay, use_ema_warmup=True, inv_gamma=1.0,
                   power=config.ema_power, foreach=True)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.lr, betas=(0.9, 0.999), weight_decay=0.0)
    lr_scheduler = get_scheduler(config.lr_schedule if config.lr_schedule == "cosine" else "constant_with_warmup",
                                 optimizer, num_warmup_steps=config.warmup_steps * accelerator.num_processes,
                                 num_training_steps=config.steps * accelerator.num_processes)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    # the compiled wrapper shares unet's parameters: optimizer, EMA, checkpoints and exports use unet itself
    model_fn = torch.compile(unet) if config.compile else unet
    state = TrainState()
    accelerator.register_for_checkpointing(ema, state)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        ema.to(device)
        accelerator.print(f"resumed from {checkpoint} at step {state.step}")
    schedule = NoiseSchedule()

    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed * 1009 + accelerator.process_index * 7919 + state.step)
    batches = random_batches(slices, config.batch_size, config.max_shift_px, generator, config.max_zoom)
    log_path = out_dir / "loss.jsonl"
    n_params = sum(p.numel() for p in accelerator.unwrap_model(unet).parameters())
    base_info = {
        "image_size": config.size, "model_preset": config.model_preset, "parameters": n_params,
        "unet_config": dict(accelerator.unwrap_model(unet).config), "ema_decay": config.ema_decay,
        "batch_size": config.batch_size, "num_processes": accelerator.num_processes, "lr": config.lr,
        "lr_schedule": config.lr_schedule, "warmup_steps": config.warmup_steps, "mixed_precision": precision,
        "max_shift_px": config.max_shift_px, "max_zoom": config.max_zoom, "sources": sources, "compiled": config.compile,
        "hardware": _hardware(device, accelerator.num_processes),
        "command": config.command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "initialized_from": str(config.init_from) if config.init_from is not None else None,
        "previous_stretches": previous_stretches,
        "torch": torch.__version__, "diffusers": _diffusers_version(), "seed": config.seed,
    }
    recent: list[float] = []

    def summary() -> dict[str, Any]:
        return {**base_info, "steps": state.step, "wall_minutes": state.seconds / 60,
                "final_loss": float(np.mean(recent[-10:])) if recent else float("nan")}

    def save_checkpoint() -> None:
        accelerator.wait_for_everyone()
        accelerator.save_state(str(out_dir / "checkpoints" / f"checkpoint-{state.step:07d}"))
        if main:
            folders = sorted((out_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: p.name)
            for old in folders[:-config.checkpoints_total_limit]:
                _remove_tree(old)

    def export(with_samples: bool) -> None:
        samples = None
        if main and with_samples:
            samples = _ema_samples()
            save_sample_grid(samples, out_dir / "samples" / f"step-{state.step:07d}.png")
        if main:
            export_model(accelerator.unwrap_model(unet), ema, out_dir, summary(), config.fp16_weights,
                         samples, config.archive)

    def _ema_samples() -> torch.Tensor:
        """DDIM samples of the EMA weights by the prior's own chain (bf16 autocast when training in bf16)."""
        from diffusers import UNet2DModel

        sampler = UNet2DModel.from_config(accelerator.unwrap_model(unet).config).to(device)
        ema.copy_to(sampler.parameters())
        prior = DiffusionPrior(sampler, schedule.config, bf16=precision == "bf16")
        sample_generator = torch.Generator(device=device).manual_seed(config.seed)
        delta_t = schedule.num_train_timesteps // config.sample_steps
        return prior.sample(config.num_samples, generator=sample_generator, delta_t=delta_t).float().cpu()

    def log_loss(loss: torch.Tensor, now: float) -> None:
        value = accelerator.gather(loss[None]).mean().item()
        recent.append(value)
        rate = (state.step - start_steps) / max(now - run_start, 1e-9)
        progress.set_postfix(loss=f"{value:.4f}", it_s=f"{rate:.2f}")
        if log_file is not None:
            log_file.write(json.dumps({"step": step_offset + state.step, "loss": value, "lr": lr_scheduler.get_last_lr()[0],
                                       "seconds": round(state.seconds, 2)}) + "\n")
            log_file.flush()

    budget_s = None if config.max_minutes is None else config.max_minutes * 60
    start_steps, run_start = state.step, time.monotonic()
    last_tick, last_export = run_start, run_start
    stopped_by_time = False
    last_loss: torch.Tensor | None = None
    progress = tqdm(total=config.steps, initial=state.step, disable=not accelerator.is_local_main_process,
                    mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True, desc="train-prior")
    log_file = open(log_path, "a", encoding="utf-8") if main else None
    try:
        unet.train()
        while state.step < config.steps:
            if budget_s is not None and time.monotonic() - call_start >= budget_s:
                stopped_by_time = True
                break
            x0 = next(batches).contiguous(memory_format=torch.channels_last)
            noise = torch.randn(x0.shape, device=device, generator=generator)
            t = torch.randint(0, schedule.num_train_timesteps, (x0.shape[0],), device=device, generator=generator)
            noisy = schedule.add_noise(x0, noise, t)
            with accelerator.autocast():
                pred = model_fn(noisy, t).sample
            loss = F.mse_loss(pred.float(), noise)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            ema.step(accelerator.unwrap_model(unet).parameters())
            now = time.monotonic()
            state.seconds += now - last_tick
            last_tick = now
            state.step += 1
            progress.update(1)
            last_loss = loss.detach()
            if state.step % config.log_every == 0 or state.step == config.steps:
                log_loss(last_loss, now)
            if state.step % config.checkpoint_every == 0:
                save_checkpoint()
            sample_due = state.step % config.sample_every == 0
            export_due = (config.export_every_minutes is not None
                          and now - last_export >= config.export_every_minutes * 60)
            if sample_due or export_due:
                export(with_samples=sample_due)
                last_export = time.monotonic()
        progress.close()
        if last_loss is not None and state.step % config.log_every != 0 and state.step != config.steps:
            log_loss(last_loss, time.monotonic())
        if state.step % config.checkpoint_every != 0 or stopped_by_time:
            save_checkpoint()
        export(with_samples=True)
        accelerator.wait_for_everyone()
    finally:
        progress.close()
        if log_file is not None:
            log_file.close()
    reason = "time budget reached" if stopped_by_time else "all steps done"
    accelerator.print(f"stopped at step {state.step} ({reason}); model in {out_dir}")
    info = summary()
    return TrainResult(out_dir=out_dir, steps=state.step, final_loss=info["final_loss"],
                       stopped_by_time=stopped_by_time, info=info)


def _remove_tree(path: Path) -> None:
    for child in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    path.rmdir()


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
@click.command("train-prior")
@click.argument("data", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (diffusers layout + model card, checkpoints/, samples/).")
@click.option("--size", default=256, show_default=True, help="Side of the square training slices (pixels).")
@click.option("--model-preset", type=click.Choice(sorted(MODEL_PRESETS)), default="small", show_default=True)
@click.option("--steps", default=100_000, show_default=True, help="Total optimizer steps (including resumed).")
@click.option("--batch-size", default=16, show_default=True, help="Batch per device.")
@click.option("--lr", default=2e-4, show_default=True)
@click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]), default="constant", show_default=True)
@click.option("--warmup-steps", default=200, show_default=True)
@click.option("--ema-decay", default=0.9999, show_default=True, help="Maximum EMA decay (reached after warm-up).")
@click.option("--max-shift", "max_shift_px", default=8, show_default=True, help="Random translation (pixels).")
@click.option("--max-zoom", default=1.0, show_default=True,
              help="Random zoom about the centre by a factor in [1/Z, Z] (log-uniform); 1 turns it off. Zooming in "
                   "shows the prior tight fields of view where the body runs off the image.")
@click.option("--seed", default=0, show_default=True)
@click.option("--max-minutes", type=float, default=None,
              help="Time budget of this run (data loading included); stops cleanly (checkpoint + export) when reached.")
@click.option("--mixed-precision", type=click.Choice(["auto", "no", "bf16", "fp16"]), default="auto",
              show_default=True, help="auto: bf16 on CUDA, none on CPU.")
@click.option("--log-every", default=10, show_default=True)
@click.option("--sample-every", default=2000, show_default=True, help="Steps between DDIM sample grids.")
@click.option("--checkpoint-every", default=2000, show_default=True)
@click.option("--export-every-minutes", type=float, default=None,
              help="Also export the EMA model (and --archive) every this many minutes.")
@click.option("--num-samples", default=16, show_default=True)
@click.option("--fp16-weights/--fp32-weights", default=True, show_default=True,
              help="Dtype of the exported UNet weights.")
@click.option("--resume", is_flag=True, help="Continue from the latest OUT/checkpoints/checkpoint-*.")
@click.option("--init-from", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Start from an exported prior's UNet weights (e.g. data/priors/ctbird-ct-256) instead of random "
                   "ones; optimizer and EMA restart.")
@click.option("--archive", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a tar of the exported model folder after every export.")
@click.option("--compile", is_flag=True,
              help="Run the training forward/backward through torch.compile (slower start, fused kernels).")
def train_prior_command(data: tuple[Path, ...], out_dir: Path, **options: Any) -> None:
    """Train a CT diffusion prior on HU slices (DATA: .npz/.npy stacks, DICOM files or series folders)."""
    config = TrainConfig(**options, command=shlex.join(["ctbird", "train-prior", *sys.argv[1:]])
                         if Path(sys.argv[0]).name == "ctbird" else shlex.join(["python", "-m", "ctbird.training",
                                                                               *sys.argv[1:]]))
    try:
        result = train_prior(list(data), out_dir, config)
    except CtbirdError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"trained {result.steps} steps, final loss {result.final_loss:.4f}: {result.out_dir}")


if __name__ == "__main__":
    train_prior_command()
