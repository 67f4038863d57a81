"""BIRD (Chihaoui, Lemkhenter & Favaro, NeurIPS 2024): blind inversion by optimizing the initial noise.

``min_{x_T on the sphere, phi} loss(H_phi(T(decode(x_T))), y)`` with Adam on ``x_T`` (renormalized to
``||x_T|| = sqrt(D)`` after every step) and on the operator's learnable parameters ``phi``. ``x_T`` can instead
take normalized gradient steps (``latent_optimizer="normalized-gd"``; see :class:`BIRD`). ``decode`` is the
prior's 10-step DDIM chain, ``T`` the measurement model's ``input_transform`` from the prior's ``[-1, 1]`` to the
operator's input scale. See ``docs/method.md``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from operators.base import Operator

from ..config import LATENT_LR_SCHEDULES, LATENT_OPTIMIZERS, BirdConfig, EarlyStopping  # noqa: F401 (re-exported)
from ..errors import ConfigError, InputError
from ..priors.diffusion import DiffusionPrior, randn

LossName = Literal["mse", "l1"]
#: ``x_T``'s rate at the last iteration of a cosine schedule, relative to ``lr_latent``.
COSINE_FLOOR = 0.1


@dataclass
class BirdResult:
    """Outcome of :meth:`BIRD.run` (tensors detached; ``B`` is the batch of ``y``).

    Attributes
    ----------
    image : Tensor ``[B, C, H, W]``
        Best-fitting ``x0`` on the prior's scale ``[-1, 1]`` (lowest final data loss among the ``n_samples`` restarts;
        with ``keep_best``, each restart's lowest-loss iterate).
    transformed : Tensor
        ``input_transform(image)``: the reconstruction on the operator's input scale.
    latent : Tensor ``[B, C, H, W]``
        Optimized ``x_T`` of the best restart.
    final_loss : Tensor ``[B]``
        Data loss of the returned ``image`` (after the last step; with ``keep_best``, of the kept iterate).
    loss_history : list of float
        Mean data loss (over batch and restarts) at every iteration.
    operator_state : list of dict
        ``state_dict`` of the (best) operator per batch item (empty dicts for operators without state).
    kernel : Tensor ``[B, k, k]`` or None
        Estimated blur kernel per item when the operator exposes ``.kernel``.
    uncertainty : Tensor ``[B, C, H, W]`` or None
        Per-pixel standard deviation of ``x0`` across the restarts (``n_samples > 1``), prior scale.
    samples : Tensor ``[B, n_samples, C, H, W]``
        ``x0`` of every restart.
    nfe : int
        UNet evaluations (batched calls, each over all ``B * n_samples`` latents).
    seconds : float
        Wall-clock time of the run.
    grad_mode, delta_t, iters_run, stopped_early, method
        How the result was obtained (``iters_run``: iterations of the batch; ``stopped_early``: every item stopped
        early; ``info["stopped_at"]``: the iteration each item stopped at, or None).
    """

    image: torch.Tensor
    transformed: torch.Tensor
    latent: torch.Tensor
    final_loss: torch.Tensor
    loss_history: list[float]
    operator_state: list[dict]
    kernel: torch.Tensor | None
    uncertainty: torch.Tensor | None
    samples: torch.Tensor
    nfe: int
    seconds: float
    grad_mode: str
    delta_t: int
    iters_run: int
    stopped_early: bool = False
    method: str = "bird"
    info: dict = field(default_factory=dict)


#: A generator for a whole batch, or one per batch item (:func:`randn_per_item`).
Generators = torch.Generator | Sequence[torch.Generator] | None


def randn_per_item(batch: int, rows: int, shape: tuple[int, ...], generator: Generators, *,
                   device: torch.device | str) -> torch.Tensor:
    """Standard normal noise ``[batch * rows, *shape]``, ``rows`` consecutive rows per batch item.

    ``generator``: one generator draws all of it (or ``None``: the global one); a sequence of ``batch`` generators
    draws item ``b``'s rows from ``generator[b]``, so an item's noise does not depend on the rest of its batch.
    """
    if generator is not None and not isinstance(generator, torch.Generator) and len(generator) != batch:
        raise InputError(f"Got {len(generator)} generators for a batch of {batch} measurements; pass one per item "
                         "or a single generator.")
    return randn((batch * rows, *shape), generator=generator, device=device)


def project_to_sphere(latent: torch.Tensor) -> torch.Tensor:
    """Rescale each sample ``[B, ...]`` to Euclidean norm ``sqrt(D)``, ``D`` = numel per sample."""
    d = latent[0].numel()
    norms = latent.flatten(1).norm(dim=1).clamp_min(1e-12)
    return latent * (math.sqrt(d) / norms).view(-1, *([1] * (latent.dim() - 1)))


def normalized_step(grad: torch.Tensor, lr: float) -> torch.Tensor:
    """``lr * sqrt(D) * g / ||g||`` per sample ``[B, ...]`` (zero where ``g`` is zero): an RMS step of ``lr`` per entry."""
    return lr * project_to_sphere(grad)


def data_loss(pred: torch.Tensor, y: torch.Tensor, loss: LossName, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-sample data loss ``[B]``: mean squared (``"mse"``) or absolute (``"l1"``) residual, mask-weighted."""
    r = pred - y
    r = r * r if loss == "mse" else r.abs()
    if mask is None:
        return r.flatten(1).mean(dim=1)
    m = mask.expand_as(r).to(r.dtype)
    return (r * m).flatten(1).sum(dim=1) / m.flatten(1).sum(dim=1).clamp_min(1.0)


class _KeptIterates:
    """Each latent's lowest-loss iterate so far: loss ``[L]``, ``x0`` and ``x_T`` ``[L, C, H, W]``, operator parameters."""

    def __init__(self, count: int) -> None:
        self.loss = torch.full((count,), math.inf)
        self.x0: torch.Tensor | None = None
        self.latent: torch.Tensor | None = None
        self.states: list[dict | None] = [None] * count

    def offer(self, losses: torch.Tensor, x0: torch.Tensor, latent: torch.Tensor, ops: list[Operator]) -> None:
        """Keep the entries of this iterate whose loss beats the kept one (``losses`` ``[L]``, one op or ``L``)."""
        losses = losses.cpu()
        better = losses < self.loss
        if not bool(better.any()):
            return
        if self.x0 is None:
            self.x0, self.latent = x0.clone(), latent.clone()
        index = better.nonzero().flatten()
        self.loss[index] = losses[index]
        on_device = index.to(x0.device)
        self.x0[on_device] = x0[on_device]
        self.latent[on_device] = latent[on_device]
        for i in index.tolist():
            op = ops[i] if len(ops) > 1 else ops[0]
            self.states[i] = {name: p.detach().clone() for name, p in op.named_parameters()} or None

    def settle(self, final: torch.Tensor, x0: torch.Tensor, latent: torch.Tensor, ops: list[Operator]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The final iterate where it fits best, else the kept one (operators reloaded): ``(x0, latent, loss)``."""
        use_kept = (self.loss < final.cpu()).to(final.device)
        if not bool(use_kept.any()):
            return x0, latent, final
        pick = use_kept.view(-1, *([1] * (x0.dim() - 1)))
        for i in use_kept.nonzero().flatten().tolist():
            if self.states[i] is not None:
                with torch.no_grad():
                    for name, p in (ops[i] if len(ops) > 1 else ops[0]).named_parameters():
                        p.copy_(self.states[i][name])
        return (torch.where(pick, self.x0, x0), torch.where(pick, self.latent, latent),
                torch.where(use_kept, self.loss.to(final.device), final))


class _ItemStopping:
    """Early stopping per batch item, on the mean loss of the item's ``n`` restarts; a stopped item is frozen.

    A frozen item keeps the latent rows (and operator copies) it had when it stopped, so it ends as it would have
    ended alone, while the other items of the batch go on.
    """

    def __init__(self, rule: EarlyStopping | None, batch: int, n: int) -> None:
        self.rule, self.n = rule, n
        self.best = [math.inf] * batch
        self.stale = [0] * batch
        self.stopped_at: list[int | None] = [None] * batch
        self._latent: dict[int, torch.Tensor] = {}
        self._ops: dict[int, list[dict]] = {}

    @property
    def all_stopped(self) -> bool:
        return all(at is not None for at in self.stopped_at)

    def frozen_rows(self, device: torch.device) -> torch.Tensor | None:
        """``[B * n]`` True on the rows of stopped items (None while none stopped)."""
        if not self._latent:
            return None
        rows = torch.tensor([at is not None for at in self.stopped_at]).repeat_interleave(self.n)
        return rows.to(device)

    def update(self, iteration: int, losses: torch.Tensor, latent: torch.Tensor, ops: list[Operator]) -> None:
        """Score iteration ``iteration``'s per-row ``losses`` ``[B * n]`` (CPU) and freeze the items that stop."""
        if self.rule is None:
            return
        n = self.n
        for b, at in enumerate(self.stopped_at):
            if at is not None:
                continue
            loss = float(losses[b * n:(b + 1) * n].mean())
            if loss < self.best[b] * (1.0 - self.rule.rel_tol):
                self.best[b], self.stale[b] = loss, 0
                continue
            self.stale[b] += 1
            if self.stale[b] >= self.rule.patience:
                self.stopped_at[b] = iteration
                self._latent[b] = latent[b * n:(b + 1) * n].detach().clone()
                if len(ops) > 1:
                    self._ops[b] = [{k: p.detach().clone() for k, p in op.named_parameters()}
                                    for op in ops[b * n:(b + 1) * n]]

    @torch.no_grad()
    def restore(self, latent: torch.Tensor, ops: list[Operator]) -> None:
        """Put the stopped items' latents and operator parameters back after an optimizer step."""
        n = self.n
        for b, rows in self._latent.items():
            latent[b * n:(b + 1) * n] = rows
        for b, states in self._ops.items():
            for op, state in zip(ops[b * n:(b + 1) * n], states):
                for name, p in op.named_parameters():
                    p.copy_(state[name])


class BIRD:
    """Blind image restoration/reconstruction by optimizing a diffusion prior's initial noise.

    Parameters
    ----------
    prior : DiffusionPrior
        Frozen prior (its device is used for the whole run).
    operator : operators.Operator
        Forward model on the ``input_transform`` scale; its ``parameters()`` (blur kernel, calibration...) are
        estimated jointly. With ``B * n_samples > 1`` and learnable parameters every latent gets its own copy
        (for ``B == 1`` the best copy's state is loaded back into ``operator``); otherwise ``operator`` itself is
        updated in place.
    config : BirdConfig or None
        The settings (:class:`ctbird.config.BirdConfig`: iterations, ``delta_t``, rates, latent optimizer and schedule,
        ``keep_best``, ``n_samples``, ``grad_mode``, ``loss``, early stopping). ``None``: the BIRD reference's,
        ``BirdConfig.reference()``. ``data_filter`` is not read here: the CT method
        (:mod:`ctbird.methods`) builds the filtered operator.
    **settings
        Overrides of single settings (``iters=8``...), validated by :meth:`BirdConfig.replace`.

        * ``latent_optimizer="adam"`` is the reference; ``"normalized-gd"`` steps
          ``x_T -= lr_latent * sqrt(D) * g / ||g||`` per sample, along the whole gradient ``g``. Adam's per-entry
          normalization turns a gradient whose sign is the same over most entries (e.g. when the prior's decode is
          biased bright everywhere) into a uniform step that discards the gradient's structure; the normalized step
          keeps it (measured for CT in ``docs/results.md``). For both, ``lr_latent`` is about the RMS change of an
          ``x_T`` entry per iteration.
        * ``latent_lr_schedule="cosine"`` decays ``lr_latent`` along half a cosine to ``COSINE_FLOOR * lr_latent``
          at the last iteration (either optimizer).
        * ``keep_best`` returns each restart's iterate with the lowest data loss (and the operator state it was
          scored with) instead of the last one, at no extra UNet evaluation. The CT default: late in a run the
          iterate still jumps now and then to a decode that fits the data ten times worse and scores several dB
          lower (docs/method.md §3).
        * ``n_samples`` independent restarts per measurement are optimized in one batch; the best final fit is
          returned and the per-pixel std across restarts is the uncertainty map.
        * ``lr_operator=0`` keeps the operator's parameters fixed.
    loss_mask : Tensor or None
        Weights broadcastable to ``y`` (1 = use, 0 = ignore) for the data term.
    input_transform : callable or None
        Maps ``x0`` in ``[-1, 1]`` to the operator's input (e.g. photos: ``(x + 1) / 2``; CT: attenuation times
        pixel spacing). ``None`` = identity.
    callback : callable or None
        Called after every iteration with ``dict(iteration, iters, loss, losses, nfe, seconds, latent)``
        (``latent``: the live ``x_T`` ``[B * n_samples, C, H, W]``, detached; read it or clone it, never modify it).
    compile : bool
        ``torch.compile`` the UNet first (GPU; first iterations are slower).
    checkpointing : bool
        Gradient checkpointing per DDIM step in ``"exact"`` mode.
    """

    def __init__(self, prior: DiffusionPrior, operator: Operator, config: BirdConfig | None = None, *,
                 loss_mask: torch.Tensor | None = None,
                 input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 callback: Callable[[dict], None] | None = None, compile: bool = False,
                 checkpointing: bool = True, **settings) -> None:
        config = BirdConfig.reference() if config is None else config
        if not isinstance(config, BirdConfig):
            raise ConfigError(f"config must be a BirdConfig, got {type(config).__name__}.")
        config = config.replace(**settings)
        prior.timestep_pairs(config.delta_t)  # validates delta_t against the prior's schedule
        self.config = config
        self.prior = prior
        self.operator = operator
        self.iters = config.iters
        self.lr_latent = config.lr_latent
        self.lr_operator = config.lr_operator
        self.delta_t = config.delta_t
        self.grad_mode = config.grad_mode
        self.loss: LossName = config.loss
        self.latent_optimizer = config.latent_optimizer
        self.latent_lr_schedule = config.latent_lr_schedule
        self.loss_mask = loss_mask
        self.n_samples = config.n_samples
        self.input_transform = input_transform
        self.keep_best = config.keep_best
        self.early_stopping = config.early_stopping
        self.callback = callback
        self.checkpointing = checkpointing
        if compile:
            prior.compile()

    # ------------------------------------------------------------------
    def latent_lr(self, iteration: int) -> float:
        """Rate of ``x_T`` at ``iteration`` (1-based) under ``latent_lr_schedule``."""
        if self.latent_lr_schedule == "constant" or self.iters == 1:
            return self.lr_latent
        progress = (iteration - 1) / (self.iters - 1)
        return self.lr_latent * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress)))

    def _forward(self, ops: list[Operator], x0: torch.Tensor) -> torch.Tensor:
        x = self.input_transform(x0) if self.input_transform is not None else x0
        if len(ops) == 1:
            return ops[0](x)
        return torch.cat([op(x[i:i + 1]) for i, op in enumerate(ops)], dim=0)

    def run(self, y: torch.Tensor, generator: Generators = None,
            init_latent: torch.Tensor | None = None,
            init_operator_state: Sequence[Mapping[str, torch.Tensor]] | None = None) -> BirdResult:
        """Fit the measurement ``y`` ``[B, *operator.out_shape]`` (on the prior's device).

        ``generator`` seeds the initial latents: one ``torch.Generator`` for the whole batch, or a sequence of ``B``
        (item ``b``'s ``n_samples`` latents from ``generator[b]``: an item then starts as it would alone). On CPU runs
        are bitwise reproducible. Early stopping is decided per item (on the mean loss of its restarts); a stopped
        item's latent and operators stay frozen while the others go on.
        ``init_latent`` ``[B * n_samples, C, H, W]`` replaces the random start (warm start; projected to the sphere).
        ``init_operator_state`` (one per item, a partial ``state_dict`` of the operator) sets where item ``b``'s
        operator parameters start, e.g. a blind blur's width.
        """
        if not isinstance(y, torch.Tensor) or not y.is_floating_point():
            raise InputError(f"y must be a floating-point torch.Tensor, got {type(y).__name__}.")
        expected = tuple(self.operator.out_shape)
        if y.dim() != len(expected) + 1 or tuple(y.shape[1:]) != expected:
            raise InputError(f"y must have shape [B, {', '.join(map(str, expected))}] (the operator's output), "
                             f"got {list(y.shape)}.")
        if not torch.isfinite(y).all():
            raise InputError("y contains NaN or infinite values; clean the measurement first.")
        device = self.prior.device
        y = y.to(device=device, dtype=torch.float32)
        batch, n = y.shape[0], self.n_samples
        total = batch * n
        y_rep = y.repeat_interleave(n, dim=0)
        mask = self.loss_mask.to(device) if self.loss_mask is not None else None
        if mask is not None and mask.dim() == y.dim() and mask.shape[0] == batch and batch > 1:
            mask = mask.repeat_interleave(n, dim=0)

        self.operator.to(device)
        learnable = [p for p in self.operator.parameters() if p.requires_grad]
        if learnable and total > 1:
            ops = [copy.deepcopy(self.operator) for _ in range(total)]
        else:
            ops = [self.operator]
        if init_operator_state is not None:
            if not learnable or len(init_operator_state) != batch:
                raise InputError(f"init_operator_state needs an operator with learnable parameters and one state per "
                                 f"item ({batch}), got {len(init_operator_state)} for {type(self.operator).__name__}.")
            for index, op in enumerate(ops):
                state = op.state_dict()
                unknown = set(init_operator_state[index // n]) - set(state)
                if unknown:
                    raise InputError(f"init_operator_state names {sorted(unknown)}, which the operator does not have.")
                op.load_state_dict({**state, **init_operator_state[index // n]})
        op_params = [p for op in ops for p in op.parameters() if p.requires_grad] if self.lr_operator > 0 else []

        if init_latent is None:
            latent = randn_per_item(batch, n, self.prior.shape, generator, device=device)
        elif tuple(init_latent.shape) != (total, *self.prior.shape):
            raise InputError(f"init_latent must have shape {[total, *self.prior.shape]} (B * n_samples latents), "
                             f"got {list(init_latent.shape)}.")
        else:
            latent = init_latent.detach().to(device=device, dtype=torch.float32).clone()
        latent = nn.Parameter(project_to_sphere(latent))
        adam_latent = self.latent_optimizer == "adam"
        groups = [{"params": [latent], "lr": self.lr_latent}] if adam_latent else []
        if op_params:
            groups.append({"params": op_params, "lr": self.lr_operator})
        optimizer = torch.optim.Adam(groups) if groups else None

        nfe0, start = self.prior.nfe, time.perf_counter()
        history: list[float] = []
        stopping = _ItemStopping(self.early_stopping, batch, n)
        kept = _KeptIterates(total) if self.keep_best else None
        it = 0
        for it in range(1, self.iters + 1):
            lr_now = self.latent_lr(it)
            if adam_latent:
                optimizer.param_groups[0]["lr"] = lr_now
            latent.grad = None
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
            x0 = self.prior.decode(latent, delta_t=self.delta_t, grad_mode=self.grad_mode,
                                   checkpointing=self.checkpointing)
            losses = data_loss(self._forward(ops, x0), y_rep, self.loss, mask)
            if kept is not None:  # before any step: x0, latent and operators are the ones the loss scored
                frozen = stopping.frozen_rows(losses.device)
                offered = losses.detach() if frozen is None else losses.detach().masked_fill(frozen, math.inf)
                kept.offer(offered, x0.detach(), latent.detach(), ops)
            losses.sum().backward()
            if optimizer is not None:
                optimizer.step()
            with torch.no_grad():
                if not adam_latent:
                    latent.sub_(normalized_step(latent.grad, lr_now))
                latent.copy_(project_to_sphere(latent))
            stopping.restore(latent, ops)
            per_sample = losses.detach().cpu()
            mean_loss = float(per_sample.mean())
            history.append(mean_loss)
            if self.callback is not None:
                self.callback({"iteration": it, "iters": self.iters, "loss": mean_loss,
                               "losses": per_sample.tolist(), "nfe": self.prior.nfe - nfe0,
                               "seconds": time.perf_counter() - start, "latent": latent.detach()})
            if not math.isfinite(mean_loss):
                raise InputError(f"BIRD diverged (loss {mean_loss}) at iteration {it}; lower the learning rates.")
            stopping.update(it, per_sample, latent, ops)
            if stopping.all_stopped:
                break

        with torch.no_grad():
            x0 = self.prior.decode(latent.detach(), delta_t=self.delta_t)
            final = data_loss(self._forward(ops, x0), y_rep, self.loss, mask)
        latent = latent.detach()
        if kept is not None:
            x0, latent, final = kept.settle(final, x0, latent, ops)
        return self._result(x0, latent, final, ops, history, batch, n, nfe0, start, it, stopping)

    def _result(self, x0, latent, final, ops, history, batch, n, nfe0, start, iters_run,
                stopping: _ItemStopping) -> BirdResult:
        shape = self.prior.shape
        samples = x0.view(batch, n, *shape)
        final_bn = final.view(batch, n)
        best = final_bn.argmin(dim=1)
        rows = torch.arange(batch, device=x0.device)
        image = samples[rows, best]
        best_latent = latent.view(batch, n, *shape)[rows, best]
        best_ops = [ops[(b * n + int(best[b])) if len(ops) > 1 else 0] for b in range(batch)]
        if len(ops) > 1 and batch == 1:
            self.operator.load_state_dict(best_ops[0].state_dict())
        states = [{k: v.detach().clone().cpu() for k, v in op.state_dict().items()} for op in best_ops]
        kernel = None
        if hasattr(self.operator, "kernel"):
            with torch.no_grad():
                kernel = torch.stack([op.kernel.detach().reshape(op.kernel.shape[-2:]) for op in best_ops])
        with torch.no_grad():
            transformed = self.input_transform(image) if self.input_transform is not None else image
        return BirdResult(
            image=image.detach(), transformed=transformed.detach(), latent=best_latent, final_loss=final_bn[rows, best],
            loss_history=history, operator_state=states, kernel=kernel,
            uncertainty=samples.std(dim=1) if n > 1 else None, samples=samples.detach(),
            nfe=self.prior.nfe - nfe0, seconds=time.perf_counter() - start, grad_mode=self.grad_mode,
            delta_t=self.delta_t, iters_run=iters_run, stopped_early=stopping.all_stopped,
            info={"lr_latent": self.lr_latent, "lr_operator": self.lr_operator, "loss": self.loss,
                  "latent_optimizer": self.latent_optimizer, "latent_lr_schedule": self.latent_lr_schedule,
                  "keep_best": self.keep_best, "n_samples": n, "iters": self.iters,
                  "stopped_at": list(stopping.stopped_at)},
        )
