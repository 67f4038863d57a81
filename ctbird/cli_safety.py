"""Safety of one CLI run: limits before work, input warnings, and de-identification of every output.

The commands of :mod:`ctbird.cli` keep one :class:`RunSafety` per run:

* :func:`check_run_limits` refuses, before any work, a run whose memory or disk estimate
  (:func:`ctbird.limits.estimate_run`) cannot fit, with one line saying what to change.
* :meth:`RunSafety.collecting` records the readers' warnings (unusual but possible values,
  :mod:`ctbird.io.plausibility`); :meth:`RunSafety.warn` prints each as one ``warning: ...`` line on stderr
  and keeps it for ``metrics.json["warnings"]``.
* Under ``--anonymize`` one :class:`~ctbird.io.deid.Deidentifier` serves every derived DICOM of the run
  (:meth:`RunSafety.dicom_options`), the input is named only by its public label (``input``, ``input-2``...)
  and :meth:`RunSafety.public` removes every path (and every spelling of the inputs' paths) from what is
  written to ``metrics.json`` and ``config.toml``. A source with burned-in annotation is refused unless
  accepted (:meth:`RunSafety.check_burned_in`).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import click

from .io.deid import (REMOVED_PATH, Deidentifier, check_burned_in_annotation, input_path_replacements,
                      public_input_label, scrub_paths)
from .io.plausibility import collect_warnings
from .limits import PRIOR_METHODS, RunEstimate, check_run_fits, estimate_run

#: Files written per slice and method by ``reconstruct`` (NPY, PNG, DICOM, uncertainty).
OUTPUTS_PER_METHOD = 4
#: Warnings printed on stderr per run (a series of unusual slices warns once per file); all go to metrics.json.
MAX_PRINTED_WARNINGS = 10


def check_run_limits(*, views: int, detectors: int, image_size: int, methods: Iterable[str], device,
                     out: str | os.PathLike | None, prior_size: int | None = None, batch: int = 1,
                     slices: int = 1) -> RunEstimate:
    """Estimate the run's peak memory (its most demanding method) and disk (every method's outputs) and refuse
    it, with one line saying what to reduce, when it cannot fit (:func:`ctbird.limits.check_run_fits`)."""
    names = list(methods)
    worst = next((m for m in names if m in PRIOR_METHODS), names[0])
    estimate = estimate_run(views=views, detectors=detectors, image_size=image_size, method=worst, batch=batch,
                            slices=slices, prior_size=prior_size, outputs_per_slice=OUTPUTS_PER_METHOD * len(names))
    check_run_fits(estimate, device=device, out=out)
    return estimate


@dataclass
class RunSafety:
    """What a run must hide and report: its anonymization, its warnings, the burned-in annotation of its source.

    Attributes
    ----------
    anonymize : bool
        ``--anonymize``: DICOM outputs follow the Basic Application Confidentiality Profile and no other
        output names an input.
    accept_burned_in_annotation : bool
        ``--accept-burned-in-annotation``: process a source that declares text in its pixels under ``anonymize``.
    warnings : list of str
        The run's warnings, in order (for ``metrics.json["warnings"]``).
    burned_in_annotation : bool
        The source declares (or may hold) burned-in text: derived DICOM says ``BurnedInAnnotation YES``.
    """

    anonymize: bool
    accept_burned_in_annotation: bool = False
    warnings: list[str] = field(default_factory=list)
    burned_in_annotation: bool = False
    deidentifier: Deidentifier | None = field(default=None, repr=False)
    _replacements: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.anonymize and self.deidentifier is None:
            self.deidentifier = Deidentifier()

    # ------------------------------------------------------------------ names
    def label(self, path: str | os.PathLike | None, *, index: int | None = None) -> str:
        """The public name of an input (its file name, or ``input``/``input-N`` under ``--anonymize``); every
        spelling of ``path`` in what is written later is replaced by it."""
        label = public_input_label(path, self.anonymize, index=index)
        if path is not None:
            self.hide_paths([path], label)
        return label

    def hide_paths(self, paths: Iterable[str | os.PathLike], label: str) -> None:
        """Write ``label`` for every spelling of ``paths`` (e.g. the files of an input series folder)."""
        self.hide(input_path_replacements(paths, label))

    def hide(self, replacements: dict[str, str] | Iterable[str]) -> None:
        """Texts to replace in written metadata under ``--anonymize`` (a mapping to their public text, or texts
        to remove, e.g. the ``--series`` UID)."""
        if not isinstance(replacements, dict):
            replacements = {text: REMOVED_PATH for text in replacements if text}
        self._replacements.update(replacements)

    def public(self, value: Any) -> Any:
        """``value`` (``metrics.json``/``config.toml`` content) with inputs and paths removed under ``--anonymize``
        (:func:`ctbird.io.deid.scrub_paths`); unchanged otherwise. Warnings that became equal (the same note
        on several files of a series, each now named ``input``) are listed once."""
        public = scrub_paths(value, self.anonymize, replacements=self._replacements)
        if isinstance(public, dict) and isinstance(public.get("warnings"), list):
            public["warnings"] = list(dict.fromkeys(public["warnings"]))
        return public

    # --------------------------------------------------------------- warnings
    def warn(self, messages: Iterable[str]) -> None:
        """Print each new message as one ``warning: ...`` line on stderr (the first :data:`MAX_PRINTED_WARNINGS`)
        and keep it for ``metrics.json``."""
        for message in messages:
            text = " ".join(str(message).split())
            if text and text not in self.warnings:
                self.warnings.append(text)
                if len(self.warnings) <= MAX_PRINTED_WARNINGS:
                    click.echo(f"warning: {text}", err=True)
                elif len(self.warnings) == MAX_PRINTED_WARNINGS + 1:
                    click.echo("warning: more warnings are listed in metrics.json", err=True)

    @contextlib.contextmanager
    def collecting(self) -> Iterator[None]:
        """Record the ``UserWarning``\\ s raised inside the block (readers' plausibility checks) as run warnings,
        shown once as ``warning: ...`` lines instead of Python's warning format."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # collect_warnings re-emits them: shown by warn() instead
            with collect_warnings() as notes:
                yield
        self.warn(notes)

    # ------------------------------------------------------------------ DICOM
    def check_burned_in(self, headers, *, source: str) -> None:
        """Refuse a source with burned-in annotation under ``--anonymize`` unless accepted; remember it for
        the outputs' ``BurnedInAnnotation``."""
        self.burned_in_annotation = check_burned_in_annotation(
            headers, anonymize=self.anonymize, accept=self.accept_burned_in_annotation, source=source)

    def dicom_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`ctbird.io.write_derived_dicom` for every derived image of the run."""
        return {"anonymize": self.anonymize, "deidentifier": self.deidentifier,
                "burned_in_annotation": self.burned_in_annotation}
