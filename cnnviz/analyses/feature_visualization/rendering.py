"""What :func:`cnnviz.maximize` returns: :class:`Rendering`, the images with what each shows, how it
compares with real images and what it is (a render, a filter's maximum, the photograph it started
from, a flat field)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cnnviz.core.display import Shows
from cnnviz.core.references import Unit
from cnnviz.inputs.images import rgb


@dataclass
class Rendering(Shows):
    """Images that maximise (or minimise) units of a model, and whether they beat real images.

    Attributes:
        images: ``N x C x H x W`` in [0, 1], ``C`` the model's input channels.
        units: what each image maximises, a :class:`cnnviz.Unit` each (``features.12:3``,
            ``logits:4 (chelsea)``, ...).
        values: each unit's response to its final image (no transformation), in the unit's own
            measure (a channel's spatial mean, a neuron's value, a logit; minimised for ``negative``).
        objective: the objective's formula.
        settings: size, steps, learning rate, parameterisation, seed, precision, ...
        reference: per image, the best response of the unit to a real image in the same measure
            (the largest; the smallest for a negative render), or ``None`` where not measured.
        succeeded: per image, whether it is a render (not a flat field, not the photograph it
            started again from) whose value beats ``reference`` (``None`` where not measured).
        steps_taken: per image, the optimisation steps it ran (the stopping rule ends each on its
            own; its image is the best of its checks, which can be an earlier one).
        starts: per image, how the image returned began: ``noise``, ``sample:NAME`` (a unit that did not get going
            from noise started again from the real image that moves it most) or ``filter`` (a
            unit that is one linear filter of the input: its exact maximum, no optimisation).
        reference_source: what the references were measured on (``17 sample images``, ...).
        outcomes: per image, what it is: ``render`` (a feature visualization), ``filter`` (a
            linear filter's exact maximum), ``photo`` (it started again from a photograph and ended
            near it: a photograph, not a visualization) or ``flat`` (a flat field, no pattern).
    """

    images: torch.Tensor
    units: list[Unit]
    values: list[float]
    objective: str
    settings: dict = field(default_factory=dict)
    reference: list = field(default_factory=list)
    succeeded: list = field(default_factory=list)
    steps_taken: list = field(default_factory=list)
    starts: list = field(default_factory=list)
    reference_source: str | None = None
    outcomes: list = field(default_factory=list)

    def display(self) -> torch.Tensor:
        """The images as RGB, ``N x 3 x H x W`` (a greyscale model's images repeated into 3; of
        other channel counts, the first three, or the last repeated)."""

        return rgb(self.images)

    def below(self) -> list[Unit]:
        """The units whose image does not beat the real images as a render (below them, or a flat
        field, or the photograph it started from)."""
        return [unit for unit, ok in zip(self.units, self.succeeded) if ok is False]

    def apart(self, outcome: str) -> list[Unit]:
        """The units whose image is of ``outcome`` (``photo``, ``flat``, ...; see ``outcomes``)."""
        return [unit for unit, what in zip(self.units, self.outcomes) if what == outcome]

    def steps_text(self) -> str:
        """The steps the images ran, in words: ``64 steps`` or ``48-160 steps (at most 256)``."""
        most = self.settings.get("steps")
        if most is None:
            return "steps not recorded"
        taken = self._optimised_steps() or list(self.steps_taken)
        if not taken or all(s == 0 for s in taken):
            return "no optimisation (exact filter maxima)" if taken else f"{most} steps"
        low, high = min(taken), max(taken)
        text = f"{low} step{'' if low == 1 else 's'}" if low == high else f"{low}-{high} steps"
        return text if high == most and low == most else f"{text} (at most {most})"

    def _optimised_steps(self) -> list[int]:
        """The steps of the images that were optimised (not a filter's exact maximum)."""
        outcomes = self.outcomes or ["render"] * len(self.steps_taken)
        return [s for s, what in zip(self.steps_taken, outcomes) if what != "filter"]

    def summary(self) -> str:
        """One line: how many renders beat the best real image, which did not, which are a
        photograph or a flat field, and the steps they ran."""
        measured = [ok for ok in self.succeeded if ok is not None]
        if not measured:
            return f"{len(self.units)} renders (not compared with real images), {self.steps_text()}"
        best = "smallest real response" if self.settings.get("negative") else "best real image"
        text = f"{sum(measured)}/{len(measured)} renders beat the {best} ({self.reference_source})"

        def names(units):
            return ", ".join(unit.reference for unit in units[:8]) + (", ..." if len(units) > 8 else "")

        photos, flat = self.apart("photo"), self.apart("flat")
        if photos:
            text += f"; {len(photos)} ended as the photograph they started again from: {names(photos)}"
        if flat:
            text += f"; {len(flat)} flat (no pattern): {names(flat)}"
        below = [unit for unit, ok, what in zip(self.units, self.succeeded, self.outcomes or ["render"] * len(self.units))
                 if ok is False and what not in ("photo", "flat")]
        if below:
            text += f"; {len(below)} below: {names(below)}"
        return f"{text}; {self.steps_text()}"

    def to_dict(self) -> dict:
        entries = []
        for k, (unit, value) in enumerate(zip(self.units, self.values)):
            entry = {**unit.to_dict(), "value": value}
            if k < len(self.reference):
                entry.update(reference=self.reference[k], succeeded=self.succeeded[k])
            if k < len(self.steps_taken):
                entry.update(steps=self.steps_taken[k], start=self.starts[k])
            if k < len(self.outcomes):
                entry.update(outcome=self.outcomes[k])
            entries.append(entry)
        measured = [ok for ok in self.succeeded if ok is not None]
        return {"objective": self.objective, "settings": self.settings, "reference_source": self.reference_source,
                "succeeded": sum(measured) if measured else None, "measured": len(measured),
                "photographs": len(self.apart("photo")), "flat": len(self.apart("flat")),
                "steps_taken": {"min": min(self._optimised_steps(), default=0),
                                "max": max(self._optimised_steps(), default=0)},
                "summary": self.summary(), "units": entries}

    def __repr__(self) -> str:
        return f"Rendering({len(self.units)} images {tuple(self.images.shape[2:])}, {self.objective}; {self.summary()})"


FLAT = 0.02  # an image whose pixels' standard deviation is below this is a flat field
NEAR_PHOTO = 0.08  # an image this close to the photograph it started from (mean |difference|) is that photograph


def image_outcomes(images, starts, real, plan, canvas) -> list[str]:
    """Per image, ``render``, ``filter``, ``photo`` (started again from a photograph and ended near
    it) or ``flat`` (a flat field)."""
    outcomes = []
    for row, (image, start) in enumerate(zip(images, starts)):
        image = image.detach().float().cpu()
        if start == "filter":
            outcomes.append("filter")
        elif float(image.std()) < FLAT:
            outcomes.append("flat")
        elif start.startswith("sample:") and real is not None and tuple(image.shape[1:]) == tuple(canvas):
            photo, _ = real.start(plan.groups[row], plan.negative, canvas)
            near = float((image - photo.float().cpu()).abs().mean()) < NEAR_PHOTO
            outcomes.append("photo" if near else "render")
        else:
            outcomes.append("render")
    return outcomes
