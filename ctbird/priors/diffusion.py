"""A frozen diffusers ``UNet2DModel`` plus its noise schedule, decoded with a deterministic DDIM chain.

The prior lives on the scale ``[-1, 1]`` (for CT: :func:`ctbird.units.hu_to_unit`). :meth:`DiffusionPrior.decode`
maps an initial noise ``x_T`` to a clean image ``x0`` with BIRD's DDIM chain (eta = 0, ``x0`` clamped to
``[-1, 1]`` at every step, final ``alpha_prev = 1``), written out with explicit ``(t, t_prev)`` pairs so that the
gradient path is under our control (see ``docs/method.md``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError, PriorError
from .schedule import NoiseSchedule, randn

GradMode = Literal["detached", "exact"]
GRAD_MODES: tuple[str, ...] = ("detached", "exact")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


class DiffusionPrior(nn.Module):
    """Frozen diffusion prior: a diffusers ``UNet2DModel`` and its noise schedule.

    Parameters
    ----------
    unet : diffusers.UNet2DModel
        The denoiser; it is put in ``eval()`` mode and frozen (``requires_grad_(False)``).
    scheduler_config : dict or None
        A diffusers DDPM/DDIM scheduler config (``num_train_timesteps``, ``beta_start``, ``beta_end``,
        ``beta_schedule`` or ``trained_betas``, ``prediction_type``), read by
        :class:`~ctbird.priors.schedule.NoiseSchedule`. ``None`` means
        :data:`~ctbird.priors.schedule.SCHEDULER_CONFIG` (linear betas 1e-4..0.02 over 1000 steps, epsilon
        prediction). Only the schedule and the prediction type are read: the clamping / ``alpha_prev = 1``
        choices of :meth:`decode` are BIRD's and fixed.
    bf16 : bool
        Run the UNet under ``torch.autocast(bfloat16)`` when the input is on CUDA (ignored on CPU).
    channels_last : bool
        Use the channels-last memory format for the UNet and its inputs (faster convolutions on GPU).
    image_size : int or None
        Side of the square images to decode. ``None`` (default) means the UNet's trained ``sample_size``. The
        UNet is convolutional, so another side works if it is divisible by ``2 ** (len(block_out_channels) - 1)``
        (the UNet's downsampling factor; e.g. 64 for the shipped 256² CT prior, whose factor is 16); the
        prior was trained at its ``sample_size``, so other sizes change the field of view per pixel
        and are meant for fast tests and crops, not for quality.

    Attributes
    ----------
    schedule : NoiseSchedule
        The noise schedule and DDIM update (``schedule.alphas_cumprod``, ``schedule.timestep_pairs``...).
    image_size : int
        Side of the square images :meth:`decode` expects (the trained ``sample_size`` unless overridden).
    trained_image_size : int
        The UNet config's ``sample_size``.
    channels : int
        Image channels (1 for CT, 3 for photographs).
    nfe : int
        Running count of UNet evaluations (one batched call counts once).
    """

    def __init__(self, unet: nn.Module, scheduler_config: dict | None = None, *, bf16: bool = False,
                 channels_last: bool = False, image_size: int | None = None) -> None:
        super().__init__()
        self.schedule = NoiseSchedule(scheduler_config)
        in_ch, out_ch = int(unet.config.in_channels), int(unet.config.out_channels)
        if in_ch != out_ch:
            raise PriorError(f"The UNet must map C channels to C channels (unconditional denoiser); got "
                             f"in_channels={in_ch}, out_channels={out_ch}. Learned-variance UNets are not supported.")
        self.unet = unet.eval().requires_grad_(False)
        self._image_size = self._check_image_size(image_size)
        self.bf16 = bool(bf16)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.unet.to(memory_format=torch.channels_last)
        self._unet_fn = self.unet
        self.nfe = 0

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, unet_config: dict, scheduler_config: dict | None = None, *, seed: int | None = 0,
                    **kwargs) -> DiffusionPrior:
        """A randomly initialized prior (for tests and demos), without any download.

        ``seed`` makes the random UNet weights reproducible (``None`` leaves the global RNG alone). ``kwargs`` go
        to the constructor (``bf16``, ``channels_last``, ``image_size``).
        """
        from diffusers import UNet2DModel

        rng_state = torch.random.get_rng_state()
        if seed is not None:
            torch.manual_seed(seed)
        try:
            unet = UNet2DModel(**unet_config)
        except (TypeError, ValueError) as exc:
            raise PriorError(f"Invalid UNet2DModel config {unet_config}: {exc}") from exc
        finally:
            if seed is not None:
                torch.random.set_rng_state(rng_state)
        return cls(unet, scheduler_config, **kwargs)

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, *, local_files_only: bool | None = None,
                        device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                        **kwargs) -> DiffusionPrior:
        """Load a prior saved in the diffusers layout.

        Accepted layouts (local folder):

        * a pipeline folder (``save_pretrained`` of ``DDPMPipeline``/``DDIMPipeline``, or :meth:`save_pretrained`):
          ``unet/`` (``config.json`` + weights) and ``scheduler/scheduler_config.json``, optionally ``model_index.json``;
        * a bare UNet folder: ``config.json`` + ``diffusion_pytorch_model.safetensors`` (a
          ``scheduler_config.json`` next to it is used if present, else ctbird's :data:`~ctbird.priors.schedule.SCHEDULER_CONFIG`).

        Anything else that looks like ``owner/name`` is treated as a Hugging Face Hub id. Offline
        (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``) only the local cache is used. ``kwargs`` go to the
        constructor (``bf16``, ``channels_last``, ``image_size`` to decode at another side than the trained one).

        Raises
        ------
        PriorError
            If the folder or hub id cannot be found or does not hold a UNet2DModel.
        """
        from diffusers import UNet2DModel

        source = str(path_or_hub_id)
        path = Path(source).expanduser()
        if path.is_dir():
            unet_dir, scheduler_file = cls._local_layout(path)
            try:
                unet = UNet2DModel.from_pretrained(unet_dir, local_files_only=True)
            except (OSError, ValueError, TypeError, RuntimeError) as exc:
                raise PriorError(f"Cannot load a diffusers UNet2DModel from {unet_dir}: {exc}") from exc
            scheduler_config = json.loads(scheduler_file.read_text()) if scheduler_file is not None else None
        elif path.exists() or not _HUB_ID.match(source):
            raise PriorError(
                f"Prior not found: {source!r} is not a folder. Pass --prior / prior= a folder in the diffusers layout "
                "(unet/ + scheduler/ subfolders, or a bare UNet folder with config.json and "
                "diffusion_pytorch_model.safetensors), or a Hugging Face Hub id like 'owner/name'."
            )
        else:
            unet, scheduler_config = cls._from_hub(source, local_files_only)
        prior = cls(unet, scheduler_config, **kwargs)
        if device is not None or dtype is not None:
            prior.to(device=device, dtype=dtype)
        return prior

    @staticmethod
    def _local_layout(path: Path) -> tuple[Path, Path | None]:
        if (path / "unet" / "config.json").is_file():
            scheduler = path / "scheduler" / "scheduler_config.json"
            return path / "unet", scheduler if scheduler.is_file() else None
        if (path / "config.json").is_file():
            config = json.loads((path / "config.json").read_text())
            if config.get("_class_name") not in (None, "UNet2DModel"):
                raise PriorError(f"{path / 'config.json'} describes a {config.get('_class_name')}, not a UNet2DModel. "
                                 "Pass a folder holding an unconditional diffusers UNet2DModel.")
            scheduler = path / "scheduler_config.json"
            return path, scheduler if scheduler.is_file() else None
        raise PriorError(
            f"{path} is not a diffusers prior folder: expected unet/config.json (+ scheduler/scheduler_config.json) "
            "or config.json + diffusion_pytorch_model.safetensors. Save one with DiffusionPrior.save_pretrained(path) "
            "or train one with `ctbird train-prior`."
        )

    @staticmethod
    def _from_hub(hub_id: str, local_files_only: bool | None) -> tuple[nn.Module, dict | None]:
        from diffusers import DDIMScheduler, UNet2DModel

        offline = bool(local_files_only) or _env_flag("HF_HUB_OFFLINE")
        errors = []
        for subfolder in ("unet", None):
            try:
                unet = UNet2DModel.from_pretrained(hub_id, subfolder=subfolder, local_files_only=offline)
                break
            except (OSError, ValueError, EnvironmentError) as exc:
                errors.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        else:
            hint = ("HF_HUB_OFFLINE is set, so only the local Hugging Face cache was searched; download the model "
                    "while online or pass a local folder" if offline else "check the id and your network")
            raise PriorError(f"No local folder {hub_id!r} exists and the Hugging Face Hub id {hub_id!r} cannot be loaded "
                             f"({hint}). Pass prior= a local "
                             f"diffusers folder (unet/ + scheduler/). Details: {' | '.join(errors)}")
        try:
            scheduler_config = dict(DDIMScheduler.load_config(hub_id, subfolder="scheduler", local_files_only=offline))
        except (OSError, ValueError, EnvironmentError):
            scheduler_config = None
        return unet, scheduler_config

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write the pipeline layout ``unet/`` + ``scheduler/scheduler_config.json``; returns the folder."""
        path = Path(path)
        self.unet.save_pretrained(path / "unet")
        self.schedule.save(path / "scheduler")
        return path

    # ------------------------------------------------------------------ properties / speed
    @property
    def scheduler_config(self) -> dict:
        """The diffusers scheduler config of :attr:`schedule`."""
        return self.schedule.config

    @property
    def prediction_type(self) -> str:
        """``"epsilon"``, ``"v_prediction"`` or ``"sample"``."""
        return self.schedule.prediction_type

    @property
    def num_train_timesteps(self) -> int:
        return self.schedule.num_train_timesteps

    @property
    def alphas_cumprod(self) -> tuple[float, ...]:
        return self.schedule.alphas_cumprod

    @property
    def trained_image_size(self) -> int:
        size = self.unet.config.sample_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this (the UNet's total downsampling factor; 1 without down blocks)."""
        blocks = getattr(self.unet.config, "block_out_channels", None)
        return 2 ** (len(blocks) - 1) if blocks else 1

    def _check_image_size(self, image_size: int | None) -> int:
        if image_size is None:
            return self.trained_image_size
        multiple = self.size_multiple
        if (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < multiple
                or image_size % multiple):
            raise ConfigError(f"image_size must be a positive multiple of {multiple} (the UNet's downsampling "
                              f"factor), got {image_size!r}; "
                              f"the UNet was trained at {self.trained_image_size}. Pass image_size=None to use it.")
        return image_size

    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Per-sample image shape ``(C, H, W)``."""
        return (self.channels, self.image_size, self.image_size)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def compile(self, **kwargs) -> DiffusionPrior:  # type: ignore[override]
        """Wrap the UNet call with ``torch.compile`` (kwargs are passed on); returns ``self``."""
        self._unet_fn = torch.compile(self.unet, **kwargs)
        return self

    def train(self, mode: bool = True) -> DiffusionPrior:
        """The UNet always stays in eval mode (the prior is frozen)."""
        super().train(mode)
        self.unet.eval()
        return self

    # ------------------------------------------------------------------ DDIM
    def timestep_pairs(self, delta_t: int = 100) -> list[tuple[int, int]]:
        """``(t, t_prev)`` pairs of the DDIM chain with step ``delta_t`` (:meth:`NoiseSchedule.timestep_pairs`)."""
        return self.schedule.timestep_pairs(delta_t)

    def _model_output(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """One UNet evaluation at integer timestep ``t`` (output in ``x``'s dtype)."""
        inp = x.to(self.dtype)
        if self.channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        timestep = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        use_autocast = self.bf16 and x.device.type == "cuda"
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if use_autocast else contextlib.nullcontext()
        with ctx:
            out = self._unet_fn(inp, timestep).sample
        return out.to(x.dtype)

    def _ddim_update(self, x: torch.Tensor, model_output: torch.Tensor, t: int, t_prev: int) -> torch.Tensor:
        """One eta=0 DDIM step with ``x0`` clamped to [-1, 1] and eps re-derived from the clamped ``x0``."""
        return self.schedule.ddim_step(x, self.schedule.predict_x0(x, model_output, t), t, t_prev)

    def _step(self, x: torch.Tensor, t: int, t_prev: int) -> torch.Tensor:
        return self._ddim_update(x, self._model_output(x, t), t, t_prev)

    def predict_x0(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """Tweedie estimate ``x0_hat(x_t)`` clamped to [-1, 1] (differentiable through the UNet; used by DPS)."""
        out = self._model_output(x_t, t)
        self.nfe += 1
        return self.schedule.predict_x0(x_t, out, t)

    def decode(self, x_T: torch.Tensor, delta_t: int = 100, grad_mode: GradMode = "detached",
               checkpointing: bool = True) -> torch.Tensor:
        """Deterministic DDIM chain ``x_T -> x0`` (BIRD's ``DDIM_efficient_feed_forward``).

        Parameters
        ----------
        x_T : Tensor ``[B, C, H, W]``
            Initial noise (the latent BIRD optimizes), on the prior's device.
        delta_t : int
            DDIM step; 100 gives 10 steps at t = 900, 800, ..., 0 (see :meth:`timestep_pairs`).
        grad_mode : {"detached", "exact"}
            ``"detached"`` (the reference): the UNet runs under ``torch.no_grad`` and the gradient reaches ``x_T``
            only through the DDIM update arithmetic (a diagonal, Jacobian-free path). ``"exact"``: backpropagation
            through the UNet at every step.
        checkpointing : bool
            In ``"exact"`` mode, recompute each step's UNet activations in the backward pass
            (``torch.utils.checkpoint``) instead of storing them: memory of one step instead of all.

        Returns
        -------
        Tensor ``[B, C, H, W]``
            ``x0`` in ``[-1, 1]`` (same dtype as ``x_T``).
        """
        if grad_mode not in GRAD_MODES:
            raise ConfigError(f"grad_mode must be one of {GRAD_MODES}, got {grad_mode!r}.")
        if x_T.dim() != 4 or tuple(x_T.shape[1:]) != self.shape:
            raise ConfigError(f"x_T must have shape [B, {self.channels}, {self.image_size}, {self.image_size}] "
                              f"(the prior's image shape), got {list(x_T.shape)}. To decode another size, build "
                              f"the prior with image_size=<multiple of {self.size_multiple}>.")
        pairs = self.timestep_pairs(delta_t)
        x = x_T
        track = torch.is_grad_enabled() and x_T.requires_grad
        for t, t_prev in pairs:
            if grad_mode == "detached" or not track:
                with torch.no_grad():
                    out = self._model_output(x.detach(), t)
                x = self._ddim_update(x, out, t, t_prev)
            elif checkpointing:
                x = checkpoint(self._step, x, t, t_prev, use_reentrant=False)
            else:
                x = self._step(x, t, t_prev)
            self.nfe += 1
        return x

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, delta_t: int = 20,
               device: torch.device | str | None = None) -> torch.Tensor:
        """``n`` unconditional DDIM samples ``[n, C, H, W]`` in [-1, 1] (default 50 steps)."""
        x_T = randn((n, *self.shape), generator=generator, device=device or self.device)
        return self.decode(x_T, delta_t=delta_t)

