"""Model card (``README.md``) of a CT diffusion prior trained by ``ctbird train-prior``.

The card states the data and its licences, the preprocessing (HU window and scaling), the model's
size, how it was trained (steps, batch, wall time, hardware, the exact command), its loss curve and
samples, and its intended use and limits.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ctbird.priors.schedule import SCHEDULER_CONFIG
from ctbird.units import PRIOR_HU_WINDOW

#: Licence and citation of each TCIA collection of the shipped training set
#: (from the data README: ../shared/data/README.md beside the checkout).
TCIA_COLLECTIONS: dict[str, str] = {
    "LIDC-IDRI": "CC BY 3.0; Armato et al. 2011, doi:10.7937/K9/TCIA.2015.LO9QL9SX",
    "ACRIN-FLT-Breast": "CC BY 3.0; cite the collection DOI on TCIA",
    "CPTAC-GBM": "CC BY 3.0; cite the collection DOI on TCIA",
    "Pancreatic-CT-CBCT-SEG": "CC BY 4.0; Hong et al. 2021, doi:10.7937/TCIA.ESHQ-4D90",
    "CMB-CRC": "CC BY 4.0; cite the collection DOI on TCIA",
    "Lung-Fused-CT-Pathology": "CC BY; cite the collection DOI on TCIA",
    "RIDER Pilot": "CC BY 3.0; cite the collection DOI on TCIA",
    "CPTAC-PDA": "CC BY 3.0; cite the collection DOI on TCIA",
}

TCIA_ACKNOWLEDGEMENT = (
    "Data from The Cancer Imaging Archive (TCIA): Clark K, et al. The Cancer Imaging Archive (TCIA): "
    "maintaining and operating a public information repository. J Digit Imaging 2013;26(6):1045-1057, "
    "doi:10.1007/s10278-013-9622-7. Each collection above is used under its licence; cite its DOI."
)


def _data_section(sources: list[dict[str, Any]]) -> list[str]:
    lines = ["## Training data", ""]
    collections: Counter[str] = Counter()
    patients: set[str] = set()
    for source in sources:
        lines.append(f"- `{source['path']}`: {source['slices']} slices "
                     f"({source['original_shape']} -> {source['preprocessing']})"
                     + (f". {source['description']}" if source.get("description") else ""))
        collections.update(source.get("collections", {}))
        patients.update(source.get("patients", []))
    lines.append("")
    if collections:
        lines += [f"{sum(collections.values())} slices of {len(patients) or 'unknown'} patients "
                  "(axial CT, de-identified, public):", "",
                  "| collection | slices | licence / citation |", "|---|---|---|"]
        for name, count in sorted(collections.items(), key=lambda item: -item[1]):
            licence = TCIA_COLLECTIONS.get(name, "unknown: check the source's terms before sharing")
            lines.append(f"| {name} | {count} | {licence} |")
        lines += ["", TCIA_ACKNOWLEDGEMENT, ""]
    else:
        lines += ["The data's origin and licence were not recorded in the inputs: whoever shares this "
                  "model must add them here.", ""]
    return lines


STRETCH_KEYS = ("steps", "wall_minutes", "batch_size", "num_processes", "lr", "hardware", "final_loss", "command")


def stretch_summary(info: dict[str, Any]) -> dict[str, Any]:
    """One training stretch of a prior (its ``training_info.json`` summary), as the lineage records it."""
    summary = {key: info.get(key) for key in STRETCH_KEYS}
    summary["data"] = [{"path": s.get("path"), "slices": s.get("slices"), "description": s.get("description")}
                       for s in info.get("sources", [])]
    return summary


def training_stretches(info: dict[str, Any]) -> list[dict[str, Any]]:
    """Every training stretch of a prior, oldest first, ending with the one ``info`` describes."""
    return [*info.get("previous_stretches", []), stretch_summary(info)]


def _stretches_section(info: dict[str, Any]) -> list[str]:
    """Table of every training stretch when the model continued earlier ones (``--init-from``)."""
    stretches = training_stretches(info)
    if len(stretches) == 1:
        return []
    lines = [f"Trained in {len(stretches)} stretches, each starting from the previous one's exported EMA weights "
             f"(`--init-from`; fresh optimizer and EMA): {sum(int(s['steps'] or 0) for s in stretches)} steps, "
             f"{sum(float(s['wall_minutes'] or 0) for s in stretches):.1f} min in all.", "",
             "| stretch | steps | batch | lr | wall (min) | hardware | data | final loss |", "|---|---|---|---|---|---|---|---|"]
    for number, stretch in enumerate(stretches, 1):
        data = "; ".join(f"{d['slices']} slices of `{d['path']}`" + (f" ({d['description']})" if d.get("description") else "")
                         for d in stretch.get("data", []))
        lines.append(f"| {number} | {stretch['steps']} | {stretch['batch_size']} x {stretch['num_processes']} | "
                     f"{stretch['lr']:g} | {float(stretch['wall_minutes']):.1f} | {stretch['hardware']} | {data} | "
                     f"{float(stretch['final_loss']):.4f} |")
    return lines + ["", "The last stretch:", ""]


def render_model_card(info: dict[str, Any]) -> str:
    """Markdown model card from the training summary ``info`` (see ``ctbird.training``)."""
    lo, hi = PRIOR_HU_WINDOW
    schedule = SCHEDULER_CONFIG
    lines = [
        "---",
        "library_name: diffusers",
        "pipeline_tag: unconditional-image-generation",
        "tags: [computed-tomography, diffusion, ddim, ctbird]",
        "---",
        "",
        f"# ctbird CT diffusion prior ({info['image_size']}x{info['image_size']} axial slices)",
        "",
        "An unconditional DDPM/DDIM prior over axial CT slices, trained by `ctbird train-prior`, for "
        "the BIRD reconstruction of sparse-view CT in ctbird (`ctbird reconstruct --prior <this folder>`).",
        "",
        "## Model",
        "",
        f"- `diffusers.UNet2DModel`, {info['parameters'] / 1e6:.2f} M parameters, weights stored as "
        f"{info['weights_dtype']} ({info['weights_mb']:.1f} MB); EMA weights (max decay {info['ema_decay']}).",
        f"- block_out_channels {tuple(info['unet_config']['block_out_channels'])}, layers_per_block "
        f"{info['unet_config']['layers_per_block']}, down blocks {tuple(info['unet_config']['down_block_types'])}.",
        f"- Noise schedule: {schedule['num_train_timesteps']} steps, {schedule['beta_schedule']} betas "
        f"{schedule['beta_start']:g} .. {schedule['beta_end']:g}, {schedule['prediction_type']} prediction "
        "(`ctbird.priors.schedule.SCHEDULER_CONFIG`, the schedule BIRD's 10-step DDIM expects); `scheduler/` holds "
        "the DDIMScheduler config (clip_sample, set_alpha_to_one).",
        "",
        "## Intensity scaling",
        "",
        f"Slices are prepared as at inference (`ctbird.stacks.working_slices`: HU clipped to [{lo:g}, {hi:g}], "
        "non-square slices padded with air, resampled to the working size), then mapped linearly onto [-1, 1] "
        "(`ctbird.units.hu_to_unit`; inverse `unit_to_hu`). Air is about -0.99, "
        "water about -0.5.",
        "",
    ]
    lines += _data_section(info["sources"])
    lines += [
        "Preprocessing and augmentation: slices larger than the model size are reduced by 2x2 block averaging "
        "when exactly twice the size (as the shipped set was made from 512² DICOM), otherwise by "
        "antialiased bilinear resizing; "
        + (f"random zooms about the centre by a factor in [1/{info['max_zoom']:g}, {info['max_zoom']:g}], "
           if info.get("max_zoom", 1.0) > 1.0 else "")
        + "random translations (padding with air, then "
        f"cropping, up to {info['max_shift_px']} px) and horizontal (left-right) flips only: CT anatomy "
        "is not symmetric top-bottom (table, patient orientation), so vertical flips and rotations would "
        "teach the prior impossible images.",
        "",
        "## Training",
        "",
        *_stretches_section(info),
        f"- Steps: {info['steps']} (batch {info['batch_size']} per device x {info['num_processes']} "
        f"device(s)), AdamW lr {info['lr']:g}, {info['lr_schedule']} schedule with {info['warmup_steps']} "
        f"warm-up steps, mixed precision {info['mixed_precision']}.",
        f"- Wall time: {info['wall_minutes']:.1f} min on {info['hardware']}.",
        f"- Final training loss (mean of the last 10 logged values, one logged every `--log-every` steps): {info['final_loss']:.4f}.",
        f"- Command: `{info['command']}`",
        "",
        "![training loss](loss.png)",
        "",
        "DDIM samples (50 steps, eta 0, EMA weights; display window -1000..1000 HU):",
        "",
        "![samples](samples.png)",
        "",
        "## Intended use and limits",
        "",
        "- Research and teaching only. **Not for clinical use**: not validated for diagnosis; "
        "reconstructions regularised by this prior can hallucinate or remove anatomy and lesions.",
        f"- Trained on {info['image_size']}² axial CT slices (chest, abdomen, head) from few patients and "
        "scanners, briefly: expect poor coverage of other anatomy, pediatric patients, implants, contrast "
        "phases, kernels and sizes; other modalities are out of scope.",
        "- Slices must be given on the same HU scaling and roughly the same field of view (~1.4 mm pixels "
        "at 256²).",
        "",
    ]
    return "\n".join(lines)


def write_model_card(out_dir: Path, info: dict[str, Any]) -> Path:
    """Write ``out_dir/README.md`` from ``info`` and return its path."""
    path = Path(out_dir) / "README.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(render_model_card(info), encoding="utf-8")
    tmp.replace(path)
    return path
