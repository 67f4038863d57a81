"""Settings of every method: frozen, typed, validated dataclasses, the one home of every default.

* :class:`BirdConfig` — BIRD (its defaults are the CT ones, the DDS refinement of ``bird`` included;
  :meth:`BirdConfig.for_task` gives the photograph tasks'); ``bird-raw`` takes it too.
* :class:`DPSConfig`, :class:`DDSConfig`, :class:`FBPConfig`, :class:`SIRTConfig`, :class:`TVConfig` — the other CT methods.
* :data:`PRESETS` — named BIRD budgets: ``full`` (the defaults) and ``cpu-fast`` (50 iterations at ``delta_t=333``,
  about a minute for a 256² slice on a CPU); :func:`resolve_preset` turns ``auto`` into one of them.

Every config is immutable; :meth:`~Settings.replace`, :meth:`~Settings.from_dict` and the constructor reject
unknown names and invalid values with a :class:`~ctbird.errors.ConfigError` naming the valid keys.
:meth:`~Settings.to_dict` gives the plain mapping recorded in ``metrics.json`` / ``config.toml``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Literal, TypeVar

from .errors import ConfigError

S = TypeVar("S", bound="Settings")

#: How BIRD moves ``x_T``: Adam (the reference) or steps along the whole gradient normalized per sample.
LATENT_OPTIMIZERS = ("adam", "normalized-gd")
#: Rate of ``x_T`` over the iterations: constant (the reference) or cosine-decayed.
LATENT_LR_SCHEDULES = ("constant", "cosine")
#: Data terms of BIRD.
LOSSES = ("mse", "l1")
#: Photograph restoration tasks of :func:`ctbird.restore`.
RESTORE_TASKS = ("gaussian-deblur", "motion-deblur", "sr", "denoise", "inpaint")
#: FBP ramp-filter windows.
FBP_FILTERS = ("ram-lak", "shepp-logan", "cosine", "hann", "hamming")


class Settings:
    """Behaviour shared by every config: validation, ``replace``, ``from_dict``, ``to_dict``."""

    #: Name used in error messages.
    label: ClassVar[str] = "settings"

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The setting names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def _check_names(cls, names) -> None:
        unknown = [name for name in names if name not in cls.keys()]
        if unknown:
            raise ConfigError(f"Unknown {cls.label} setting{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(map(repr, unknown))}; valid keys: {', '.join(cls.keys())}.")

    @classmethod
    def from_dict(cls: type[S], data: Mapping[str, Any]) -> S:
        """Build from a mapping (e.g. a TOML table); unknown keys raise :class:`ConfigError`."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls.label} settings must be a mapping, got {type(data).__name__}.")
        cls._check_names(data)
        return cls(**data)

    def replace(self: S, **overrides: Any) -> S:
        """A copy with some settings changed (validated; unknown names raise :class:`ConfigError`)."""
        self._check_names(overrides)
        return dataclasses.replace(self, **overrides)

    def with_overrides(self: S, **overrides: Any) -> S:
        """:meth:`replace` for keyword overrides where ``None`` means "not given" (the setting is kept, and a name
        this config lacks is not an error), except for settings that take ``None`` as a value (e.g.
        ``data_filter=None``: the plain data term). Any name given a value must be one of :meth:`keys`."""
        nullable = {f.name for f in dataclasses.fields(self) if "None" in str(f.type)}
        return self.replace(**{k: v for k, v in overrides.items() if v is not None or k in nullable})

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain ``{name: value}`` dict (JSON/TOML-ready; nested settings become dicts)."""
        return dataclasses.asdict(self)

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:  # overridden
        pass

    # ---------------------------------------------------------------- validators (set normalized values)
    def _fail(self, name: str, expected: str) -> ConfigError:
        return ConfigError(f"{self.label} setting {name!r} must be {expected}, got {getattr(self, name)!r}.")

    def _int(self, name: str, minimum: int = 1) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._fail(name, f"an integer >= {minimum}")

    def _float(self, name: str, *, minimum: float = 0.0, strict: bool = False, optional: bool = False) -> None:
        value = getattr(self, name)
        if value is None and optional:
            return
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < minimum or (strict and value == minimum):
            bound = f"> {minimum}" if strict else f">= {minimum}"
            raise self._fail(name, f"a finite number {bound}" + (" or None" if optional else ""))
        object.__setattr__(self, name, float(value))

    def _choice(self, name: str, options: tuple[str, ...]) -> None:
        if getattr(self, name) not in options:
            raise self._fail(name, f"one of {', '.join(options)}")

    def _bool(self, name: str) -> None:
        if not isinstance(getattr(self, name), bool):
            raise self._fail(name, "true or false")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EarlyStopping(Settings):
    """Stop when the mean data loss has not dropped by ``rel_tol`` (relative) for ``patience`` iterations."""

    label: ClassVar[str] = "EarlyStopping"

    patience: int = 20
    rel_tol: float = 1e-3

    def _validate(self) -> None:
        self._int("patience")
        self._float("rel_tol")
        if self.rel_tol >= 1.0:
            raise self._fail("rel_tol", "in [0, 1)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class BirdConfig(Settings):
    """BIRD settings; the defaults are the CT ones (measured, ``docs/method.md``).

    Attributes
    ----------
    iters : int
        Iterations (each costs ``1000 // delta_t`` UNet evaluations).
    delta_t : int
        DDIM step of the decode chain (100: 10 steps at t = 900..0).
    lr_latent, lr_operator : float
        Rates of ``x_T`` and (Adam) of the operator's learnable parameters.
    latent_optimizer : {"adam", "normalized-gd"}
        How ``x_T`` moves (see :class:`ctbird.solvers.BIRD`).
    latent_lr_schedule : {"constant", "cosine"}
        Rate of ``x_T`` over the iterations.
    keep_best : bool
        Return each restart's lowest-loss iterate instead of the last.
    data_filter : float or None
        CT only: exponent of the :class:`operators.SinogramFilter` weighting of the data term (0.5: the square root of
        FBP's ramp); ``None`` = the reference's plain ``||A x - y||^2``. Must be ``None`` for photographs.
    n_samples : int
        Independent restarts; ``> 1`` gives an uncertainty map.
    grad_mode : {"detached", "exact"}
        Gradient through the DDIM chain.
    loss : {"mse", "l1"}
        Data term.
    early_stopping : EarlyStopping or None
        Plateau stop; an int (or a ``{patience, rel_tol}`` mapping) is read as :class:`EarlyStopping`;
        ``None`` = run every iteration.
    refine_from_t : int
        CT only: renoise BIRD's image to this DDIM timestep and run the DDS chain from there to the clean image
        (:func:`ctbird.solvers.dds.refine_by_dds`); 0 = BIRD's decode as it is (the ``bird-raw`` method).
    refine_delta_t, refine_cg_iters, refine_eta
        The refinement chain's DDIM step (``refine_from_t // refine_delta_t + 1`` UNet evaluations), conjugate-gradient
        steps on the data term per step, and DDIM ``eta`` of its renoising.
    """

    label: ClassVar[str] = "BIRD"

    iters: int = 50
    delta_t: int = 333
    lr_latent: float = 1.2e-2
    lr_operator: float = 1e-3
    latent_optimizer: Literal["adam", "normalized-gd"] = "normalized-gd"
    latent_lr_schedule: Literal["constant", "cosine"] = "cosine"
    keep_best: bool = True
    data_filter: float | None = 0.5
    n_samples: int = 1
    grad_mode: Literal["detached", "exact"] = "detached"
    loss: Literal["mse", "l1"] = "mse"
    early_stopping: EarlyStopping | None = None
    refine_from_t: int = 300
    refine_delta_t: int = 5
    refine_cg_iters: int = 5
    refine_eta: float = 1.0

    def _validate(self) -> None:
        from .priors.diffusion import GRAD_MODES

        self._int("refine_from_t", 0)
        self._int("refine_delta_t")
        self._int("refine_cg_iters", 0)
        self._float("refine_eta")
        if self.refine_eta > 1.0:
            raise self._fail("refine_eta", "in [0, 1]")
        self._int("iters")
        self._int("delta_t")
        self._int("n_samples")
        self._float("lr_latent", strict=True)
        self._float("lr_operator")
        self._float("data_filter", strict=True, optional=True)
        self._choice("latent_optimizer", LATENT_OPTIMIZERS)
        self._choice("latent_lr_schedule", LATENT_LR_SCHEDULES)
        self._choice("grad_mode", GRAD_MODES)
        self._choice("loss", LOSSES)
        self._bool("keep_best")
        stop = self.early_stopping
        if isinstance(stop, int) and not isinstance(stop, bool):
            stop = EarlyStopping(patience=stop) if stop >= 1 else stop
        elif isinstance(stop, Mapping):
            stop = EarlyStopping.from_dict(stop)
        if stop is not None and not isinstance(stop, EarlyStopping):
            raise self._fail("early_stopping", "None, a patience >= 1 or an EarlyStopping")
        object.__setattr__(self, "early_stopping", stop)

    @classmethod
    def for_task(cls: type[S], task: str, preset: str = "full") -> S:
        """Defaults of a task: ``"ct"`` or one of :data:`RESTORE_TASKS` (measured on CT training slices,
        ``docs/results/tuning/restore_*.md``), under a budget of :data:`PRESETS` for the restoration tasks
        (``"cpu-fast"``: :data:`RESTORE_CPU_BUDGET`)."""
        if task == "ct":
            return cls()
        if task not in _RESTORE_DEFAULTS:
            raise ConfigError(f"Unknown task {task!r}; use 'ct' or one of {', '.join(RESTORE_TASKS)}.")
        if preset not in PRESETS:
            raise ConfigError(f"Unknown preset {preset!r}; use one of {', '.join(PRESETS)}.")
        budget = RESTORE_CPU_BUDGET[task] if preset == "cpu-fast" else {}
        return cls(**{**_RESTORE_DEFAULTS[task], **budget})

    @classmethod
    def reference(cls: type[S]) -> S:
        """The BIRD reference's settings (its Gaussian deblurring config): 100 iterations at ``delta_t=100``, Adam on
        ``x_T`` at 3e-3 and on the operator at 2e-4, constant rates, last iterate, plain data term, no refinement."""
        return cls(**_BIRD_REFERENCE)

    @classmethod
    def preset(cls: type[S], name: str) -> S:
        """The CT defaults under a named budget of :data:`PRESETS` (``"full"`` or ``"cpu-fast"``)."""
        if name not in PRESETS:
            raise ConfigError(f"Unknown preset {name!r}; use one of {', '.join(PRESETS)} (or 'auto' via resolve_preset).")
        return cls(**PRESETS[name])


_BIRD_REFERENCE = MappingProxyType({"iters": 100, "delta_t": 100, "lr_latent": 3e-3, "lr_operator": 2e-4,
                                     "latent_optimizer": "adam", "latent_lr_schedule": "constant", "keep_best": False,
                                     "data_filter": None, "refine_from_t": 0})
#: The CT path's latent optimizer, measured for the restoration tasks too (docs/results/tuning/restore_cpu-train128.md:
#: with a warm start it lifts every task by 5 to 14 dB over the reference's Adam at a constant rate).
_RESTORE_COMMON = {"delta_t": 100, "latent_optimizer": "normalized-gd", "latent_lr_schedule": "cosine", "keep_best": True,
                   "data_filter": None, "refine_from_t": 0}
_RESTORE_DEFAULTS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "gaussian-deblur": MappingProxyType({"iters": 100, "lr_latent": 1.2e-2, "lr_operator": 5e-2, **_RESTORE_COMMON}),
    "motion-deblur": MappingProxyType({"iters": 100, "lr_latent": 1.2e-2, "lr_operator": 5e-2, **_RESTORE_COMMON}),
    "sr": MappingProxyType({"iters": 100, "lr_latent": 1.2e-2, "lr_operator": 2e-4, **_RESTORE_COMMON}),
    "denoise": MappingProxyType({"iters": 200, "lr_latent": 1.2e-2, "lr_operator": 0.0, **_RESTORE_COMMON}),
    "inpaint": MappingProxyType({"iters": 200, "lr_latent": 5e-2, "lr_operator": 0.0, **_RESTORE_COMMON}),
})

#: How :func:`ctbird.restore` sets up each task unless told otherwise: the blind kernel model of the deblurring tasks
#: (``"gaussian"``: a Gaussian learnt through its log-sigma; ``"logits"``: a free kernel), whether ``x_T`` starts at
#: the DDIM inversion of a classical estimate (``warm_start``), and the noise floor of BIRD's search
#: (``search_noise_floor``, noise std on [0, 1] at the prior's grid: an observation estimated to be cleaner gets
#: seeded Gaussian noise up to it for the search only). Without the floor the Gaussian width grows to absorb the
#: prior's fine-scale misfit when the noise is light: 1.51 px for 1 at noise 0.0025, 1.01 at 0.01 (CT training
#: slices; docs/results/tuning/blur_width_cpu-train256.md). ``padding`` is the deblurring operators' border model
#: (:mod:`operators._conv`): a real image is cut from a larger scene, so its blur saw what lies beyond the border,
#: which a mirror guesses; zero padding darkens the model's border and BIRD brightens its image there to match
#: (two training slices with tissue at the border: BIRD's search 30.39 dB with zeros, 31.48 with reflect,
#: docs/results/tuning/blur_width_cpu-train256-border.md; a native chest DICOM: 32.41 dB from a 34.44 dB input with
#: zeros, 34.96 with reflect, docs/results.md). ``width_start_fraction``: on images larger than the prior's grid the
#: blind Gaussian width starts at that fraction of the observation's classical width estimate (at least 1 px), where
#: from 1 px the search stalls short of a wide blur: on four 512² training slices with the 256² prior, 3.16 px for 4
#: and 4.68 for 6 from 1 px, 3.87 and 5.91 from 0.4 of the estimate, whose refined images gain 3.35 and 1.49 dB,
#: while a 2 px blur keeps its width (1.97 px; 0.5 overshot it by 22 % on one slice). At the prior's own grid the
#: search starts at 1 px: there the estimate's start gave widths as close and images 0.14 to 0.72 dB worse
#: (docs/results/tuning/blur_width_cpu-train512-starts.md, -starts-4px.md and blur_width_cpu-train256-starts.md).
RESTORE_SETUP: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "gaussian-deblur": MappingProxyType({"kernel_model": "gaussian", "warm_start": True, "search_noise_floor": 0.01,
                                         "width_start_fraction": 0.4, "padding": "reflect"}),
    "motion-deblur": MappingProxyType({"kernel_model": "logits", "warm_start": True, "padding": "reflect"}),
    "sr": MappingProxyType({"warm_start": False}),  # the inversion of a bicubic image decodes badly (11-15 dB)
    "denoise": MappingProxyType({"warm_start": True}),
    "inpaint": MappingProxyType({"warm_start": True}),
})

#: Each restoration task's budget under the ``cpu-fast`` preset, the one its settings were measured with: 31 or 32
#: DDIM chains of 3 steps (about 100 UNet evaluations; 256²: about 25 s on 2 idle cores, under 3 minutes loaded);
#: Gaussian deblurring runs twice as many, which its blur width needs to converge (2.79 px for 3 at 30 iterations,
#: 3.02 at 60, and +0.56 dB after the refinement on four training slices:
#: docs/results/tuning/refine_cpu-train256-gaussian-iters60.md).
RESTORE_CPU_BUDGET: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    task: MappingProxyType({"iters": 60 if task == "gaussian-deblur" else 30, "delta_t": 333}) for task in RESTORE_TASKS})

@dataclasses.dataclass(frozen=True, kw_only=True)
class RefineConfig(Settings):
    """The DDS refinement that :func:`ctbird.restore` runs after BIRD, with the operator BIRD estimated frozen.

    BIRD's ``x0`` is renoised to timestep ``t0`` (``x_t0 = sqrt(a) x0 + sqrt(1 - a) eps``) and the DDS chain
    (:func:`ctbird.solvers.dds.dds_chain`) runs from it to ``t = 0`` in steps of ``step``, each Tweedie estimate pulled
    toward the observation by ``cg_iters`` conjugate-gradient steps on ``||M(x0) - y||^2 + w ||x0 - x0_hat||^2``.

    Attributes
    ----------
    t0 : int
        Timestep BIRD's result is renoised to; ``0`` turns the refinement off (the result is BIRD's).
    step : int
        DDIM step of the chain (``t0 // step + 1`` UNet evaluations).
    cg_iters : int
        CG steps per chain step (0: the chain only denoises).
    anchor : float
        ``w = anchor * sigma^2 * ||A||^2`` with ``sigma`` the observation's estimated noise std on [0, 1]
        (:func:`ctbird.restoration_baselines.estimate_noise_sigma`) and ``A`` the measurement model's linear part
        (power iteration): noisier data lean more on the prior.
    start : {"bird", "estimate"}
        What is renoised: BIRD's ``x0``, or the classical estimate of the warm start (the observation; bicubic
        upsampling for SR), the operator still BIRD's.
    samples : int
        Independent renoisings refined in one batch and averaged (an estimate of the posterior mean; each costs the
        chain's UNet evaluations again, batched).
    kernel_refits : int
        Blind deblurring: rounds of fitting the blur kernel to the refined image by least squares (a Gaussian
        kernel model: its width; a free one: :func:`ctbird.restoration_baselines.fit_blur_kernel` from the current
        kernel) and refining again, from the same start, with that kernel (each round costs one more chain).
        0: BIRD's kernel.
    match_noise : bool
        Count the noise the start already carries (its white-noise std, :func:`ctbird.restoration_baselines.estimate_noise_sigma`,
        on the prior's scale) toward the renoising: only the rest of ``t0``'s noise is drawn, and ``t0`` is raised to the
        timestep of that noise level where it lies below (:meth:`ctbird.priors.NoiseSchedule.timestep_of_noise`; the
        batch's highest). From the noisy observation (``start="estimate"``) with ``step >= t0`` the chain is one
        Tweedie step: the prior's minimum-mean-square-error denoiser at the observation's own noise level.
    noise_scale : float
        With ``match_noise``: ``t0`` is raised to the timestep of ``noise_scale`` times the start's noise level
        (``>= 1``; above 1 the renoising adds noise in proportion to what the start carries, a denoising strength
        that follows the noise level where a fixed ``t0`` over-smooths lightly noisy images).
    anchor_misfit : bool
        The anchor's noise level ``sigma`` is at least the RMS misfit of BIRD's search, ``||M(x_bird) - y|| /
        sqrt(n)`` (:attr:`ctbird.api.Restoration.search_misfit`): the model error of the operator BIRD estimated
        counts as noise, so lightly noisy data do not pull the image onto a wrong kernel.
    """

    label: ClassVar[str] = "refine"

    t0: int = 400
    step: int = 20
    cg_iters: int = 5
    anchor: float = 0.0
    start: Literal["bird", "estimate"] = "bird"
    samples: int = 1
    kernel_refits: int = 0
    match_noise: bool = False
    noise_scale: float = 1.0
    anchor_misfit: bool = False

    def _validate(self) -> None:
        self._bool("match_noise")
        self._bool("anchor_misfit")
        self._float("noise_scale", minimum=1.0)
        self._int("samples")
        self._choice("start", ("bird", "estimate"))
        self._int("kernel_refits", 0)
        self._int("t0", 0)
        self._int("step")
        self._int("cg_iters", 0)
        self._float("anchor")
        if self.t0 >= 1000:
            raise self._fail("t0", "below 1000 (the prior's training timesteps)")

    @property
    def enabled(self) -> bool:
        """Whether the refinement runs (``t0 > 0``)."""
        return self.t0 > 0

    @classmethod
    def for_task(cls, task: str) -> RefineConfig:
        """The measured refinement of a restoration task (:data:`RESTORE_REFINE`)."""
        if task not in RESTORE_REFINE:
            raise ConfigError(f"Unknown task {task!r}; use one of {', '.join(RESTORE_TASKS)}.")
        return cls(**RESTORE_REFINE[task])


#: Each restoration task's refinement over :class:`RefineConfig`'s defaults (docs/results/tuning/refine_*.md).
RESTORE_REFINE: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "gaussian-deblur": MappingProxyType({"t0": 200, "anchor": 1200.0, "samples": 4}),
    "motion-deblur": MappingProxyType({"t0": 200, "anchor": 12000.0, "start": "estimate", "samples": 4,
                                       "kernel_refits": 1, "anchor_misfit": True}),
    "sr": MappingProxyType({"t0": 100, "anchor": 20000.0, "start": "estimate", "samples": 4}),
    "denoise": MappingProxyType({"t0": 1, "step": 999, "cg_iters": 0, "start": "estimate", "samples": 8,
                                 "match_noise": True, "noise_scale": 1.5}),
    "inpaint": MappingProxyType({"t0": 800, "step": 40, "anchor": 12000.0, "samples": 8}),
})

#: Named BIRD budgets (settings that differ from :class:`BirdConfig`'s defaults).
PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "full": MappingProxyType({}),
    "cpu-fast": MappingProxyType({"iters": 20, "refine_delta_t": 10}),
})


def resolve_preset(name: str, device: Any) -> str:
    """``"auto"`` -> ``"cpu-fast"`` on a CPU device, ``"full"`` otherwise; other names are checked and returned."""
    if name == "auto":
        return "cpu-fast" if str(device).split(":")[0] == "cpu" else "full"
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset {name!r}; use auto, {', '.join(PRESETS)}.")
    return name


@dataclasses.dataclass(frozen=True, kw_only=True)
class DPSConfig(Settings):
    """DPS baseline: ``iters`` sampling steps (``delta_t = 1000 // iters``), guidance ``zeta`` relative to the Lipschitz
    constant of the measurement model (measured on training slices: ``docs/results/tuning/dps_cpu-train.md``), DDIM ``eta``."""

    label: ClassVar[str] = "DPS"

    iters: int = 100
    zeta: float = 10.0
    eta: float = 1.0

    def _validate(self) -> None:
        self._int("iters")
        self._float("zeta")
        self._float("eta")
        if self.eta > 1.0:
            raise self._fail("eta", "in [0, 1]")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DDSConfig(Settings):
    """DDS baseline (Decomposed Diffusion Sampling, Chung, Lee & Ye, ICLR 2024; :mod:`ctbird.methods.dds`).

    Attributes
    ----------
    iters : int
        DDIM sampling steps (``delta_t = 1000 // iters``); one UNet evaluation each.
    cg_iters : int
        Conjugate-gradient steps on the data term per sampling step (0: unconditional DDIM).
    eta : float
        DDIM stochasticity of the renoising (Song et al.'s eta, in [0, 1]; 0: deterministic).
    gamma : float
        Weight of ``||x - x0_hat||^2`` relative to ``||A T||^2`` in the CG problem (0: the plain data term of
        noiseless DDS; larger stays closer to the denoised estimate, for noisy data).
    """

    label: ClassVar[str] = "DDS"

    iters: int = 50
    cg_iters: int = 5
    eta: float = 1.0
    gamma: float = 0.0

    def _validate(self) -> None:
        self._int("iters")
        self._int("cg_iters", 0)
        self._float("eta")
        self._float("gamma")
        if self.eta > 1.0:
            raise self._fail("eta", "in [0, 1]")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FBPConfig(Settings):
    """Filtered backprojection: the ramp filter's window."""

    label: ClassVar[str] = "FBP"

    filter: Literal["ram-lak", "shepp-logan", "cosine", "hann", "hamming"] = "ram-lak"

    def _validate(self) -> None:
        self._choice("filter", FBP_FILTERS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SIRTConfig(Settings):
    """SIRT: iterations (non-negative attenuation)."""

    label: ClassVar[str] = "SIRT"

    iters: int = 100

    def _validate(self) -> None:
        self._int("iters")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TVConfig(Settings):
    """TV (Chambolle-Pock): iterations and the TV weight ``lam`` (``None``: :func:`ctbird.baselines.default_tv_weight`)."""

    label: ClassVar[str] = "TV"

    iters: int = 300
    lam: float | None = None

    def _validate(self) -> None:
        self._int("iters")
        self._float("lam", optional=True)


#: Each CT method's settings class (the methods themselves: :data:`ctbird.methods.REGISTRY`).
METHOD_CONFIGS: Mapping[str, type[Settings]] = MappingProxyType({
    "bird": BirdConfig, "bird-raw": BirdConfig, "fbp": FBPConfig, "sirt": SIRTConfig, "tv": TVConfig, "dps": DPSConfig,
    "dds": DDSConfig,
})


__all__ = ["Settings", "METHOD_CONFIGS", "BirdConfig", "DPSConfig", "DDSConfig", "FBPConfig", "SIRTConfig",
           "TVConfig", "RefineConfig", "RESTORE_REFINE", "PRESETS", "resolve_preset", "EarlyStopping", "RESTORE_TASKS",
           "RESTORE_CPU_BUDGET", "RESTORE_SETUP",
           "LATENT_OPTIMIZERS", "LATENT_LR_SCHEDULES", "LOSSES",
           "FBP_FILTERS"]
