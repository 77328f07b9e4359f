"""The optimisation loop of the renders: one batch of images, each leaving it when the stopping
rule ends it (its objective has converged: it gained less than :data:`CONVERGED` of its value over
the last :data:`CONVERGED_STEPS` steps, at its learning rate cut :data:`DECAYS` times by
:data:`DECAY` at the plateaus before), the rest going on. The real images' reference is not a goal
(on a trained network it is passed within a few steps, long before the render is good): it only
decides a restart, where an image still below it after :data:`RESTART_AT` steps, or converged below it
before, starts again from the real image that moves its unit most. Used by :func:`cnnviz.maximize`."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cnnviz.analyses.feature_visualization import objectives as o
from cnnviz.analyses.feature_visualization.optimizer import Adam
from cnnviz.analyses.feature_visualization.parameterization import image_parameters
from cnnviz.analyses.feature_visualization.transforms import Robustness
from cnnviz.core.probe import probe
from cnnviz.core.relu import relu_rule
from cnnviz.core.softmax import SkipSoftmax
from cnnviz.errors import CnnvizError

CHECK_EVERY = 8  # steps between two looks at the untransformed images (stopping, restarting)
MIN_STEPS = 48  # no image stops before this many steps
CONVERGED = 0.02  # an image has converged once it gains less than this fraction of its value ...
CONVERGED_STEPS = 32  # ... over this many steps
DECAY, DECAYS = 0.3, 2  # converged: its learning rate times DECAY, at most DECAYS times; then it ends
RESTART_AT = 48  # a unit still below its reference at this step starts again from the real image
RESTART_RATE = 0.5  # ... at this fraction of the learning rate (the first one was too fast for it)


@dataclass(frozen=True)
class RenderJob:
    """Everything a render decided before its first step (:func:`cnnviz.maximize` prepares it
    once; each batch is a :class:`Run` of some of its images).

    Attributes:
        model: what the passes run on (the model, or its copy with batch norms folded).
        plan: the images' units, objectives and seeds (``plan.Plan``).
        settings: the :class:`~cnnviz.analyses.feature_visualization.settings.RenderSettings`.
        canvas, view: the image's size, and the size the network sees (cropped back to a fixed
            input size, else the transformed canvas).
        offset: where a neuron's position lies on the transformed canvas.
        preprocessing: the model's; robust: the random transformations; use_bf16: autocast.
        device: where the images live; softmax: the output's final softmax to skip, or ``None``.
        real: the real images' responses (``None``: no reference).
    """

    model: object
    plan: object
    settings: object
    canvas: tuple[int, int]
    view: tuple[int, int]
    offset: tuple[int, int]
    preprocessing: object
    robust: Robustness
    use_bf16: bool
    device: torch.device
    softmax: int | None
    real: object | None


@dataclass
class Run:
    """One batch of images of a :class:`RenderJob`, optimised together; each image leaves the
    batch when the stopping rule ends it, and the rest go on (fewer images per step)."""

    job: RenderJob
    rows: list[int]  # the plan's images in this batch
    progress: Callable[[int], None] | None

    def render(self) -> dict[int, tuple[torch.Tensor, int, str]]:
        """Optimise the batch; ``{row: (image, steps taken, start)}``, images as saved (no
        transformation)."""
        plan, canvas, robust, device = self.job.plan, self.job.canvas, self.job.robust, self.job.device
        out = None if tuple(self.job.view) == robust.output_size(canvas) else self.job.view
        generators = [torch.Generator().manual_seed((self.job.settings.seed * 1_000_003 + plan.seeds[row]) % 2**63)
                      for row in self.rows]
        params = image_parameters(self.job.settings.param, generators, self.job.preprocessing.channels, canvas, device)
        optimizer = Adam(params.parameters(), self.job.settings.lr)
        # (images - mean) / std as one multiply-add: images * (1 / std) + (-mean / std); nothing for a
        # model that takes images as they are
        mean = torch.as_tensor(self.job.preprocessing.mean, dtype=torch.float64).view(1, -1, 1, 1)
        std = torch.as_tensor(self.job.preprocessing.std, dtype=torch.float64).view(1, -1, 1, 1)
        self._scale, self._shift = (1 / std).float().to(device), (-mean / std).float().to(device)
        self._identity = bool((mean == 0).all() and (std == 1).all())
        # every step's random transformation, drawn before the first (None: the transformation only pads)
        draws = None if robust.identity else robust.draw(generators, self.job.settings.steps, canvas, out).to(device)
        active = list(self.rows)
        goal, check = self._objectives(active)
        layers = list(dict.fromkeys(goal.layers + check.layers))
        history = {row: [] for row in active}
        restarted, starts, done = set(), {row: "noise" for row in active}, {}
        decays = {row: 0 for row in active}  # how often each image's learning rate was cut on a plateau
        best = {}  # per image: (value, image, start) of its best check
        sign = -1 if plan.negative else 1
        with probe(self.job.model, layers, keep_graph=True) as recorder:
            self._recorder, self._layers = recorder, layers
            for step in range(self.job.settings.steps):
                optimizer.lr = self._learning_rate(step)
                images = params.images()
                transformed = robust.apply(images, None if draws is None else draws[step], out)
                values = self._scores(goal, images, transformed, step < self.job.settings.redirect_steps)
                optimizer.zero_grad()
                (-values.sum()).backward()
                optimizer.step()
                if self.progress is not None:
                    self.progress(len(active))
                last = step == self.job.settings.steps - 1
                if not last and not (self.job.settings.stop and (step + 1) % CHECK_EVERY == 0):
                    continue
                with torch.no_grad():
                    now = params.images()
                    measured = self._scores(check, now, now, False)
                ending = []
                for k, row in enumerate(active):
                    history[row].append(float(measured[k]))
                    if self.job.settings.stop and (row not in best or sign * history[row][-1] > best[row][0]):
                        best[row] = (sign * history[row][-1], now[k].detach().clone(), starts[row])
                finished = {row: last or self._finished(history[row], step + 1) for row in active}
                restart = self._restart_rows(active, finished, history, restarted, step + 1)
                for row in restart:  # converged below its reference: not the end, a second start
                    finished[row] = False
                    decays[row] = 0
                # converged at its learning rate: a lower one goes on from there (the gains of an
                # annealed rate), until it converges at the lowest
                slower = [row for row in active if finished[row] and not last and row not in restart
                          and decays[row] < self._decays()]
                for row in slower:
                    finished[row], decays[row] = False, decays[row] + 1
                    history[row] = history[row][-1:]
                if slower:
                    optimizer.scale([active.index(row) for row in slower], DECAY)
                # the images of one unit (diverse) end together
                groups = {}
                for row in active:
                    groups.setdefault(plan.groups[row], []).append(row)
                for members in groups.values():
                    if all(finished[row] for row in members):
                        ending += members
                for k, row in enumerate(active):
                    if row in ending:  # with the stopping rule, its best image of all the checks
                        _, image, start = best.get(row, (None, now[k].detach(), starts[row]))
                        done[row] = (image.float().cpu(), step + 1, start)
                if restart:
                    places = [active.index(row) for row in restart]
                    photos = []
                    for row in restart:
                        photo, name = self.job.real.start(plan.groups[row], plan.negative, canvas)
                        photos.append(photo)
                        starts[row], history[row] = name, []
                        restarted.add(row)
                    params.encode(places, torch.stack(photos))
                    optimizer.reset(places, RESTART_RATE)
                if ending:
                    if self.progress is not None:
                        self.progress((self.job.settings.steps - step - 1) * len(ending))
                    keep = [k for k, row in enumerate(active) if row not in ending]
                    if not keep:
                        break
                    active = [active[k] for k in keep]
                    params = params.select(keep)
                    optimizer = optimizer.select(params.parameters(), keep)
                    if draws is not None:
                        draws = draws[:, torch.tensor(keep, device=draws.device)]
                    goal, check = self._objectives(active)
        return done

    def _objectives(self, rows):
        goal = self.job.plan.build(rows, self.job.offset)
        if self.job.settings.regularize:
            goal = goal - self.job.settings.regularize * o.total_variation()
        return goal, self.job.plan.measure(rows, (0, 0))

    def _decays(self) -> int:
        """How often an image's learning rate is cut on a plateau before the plateau ends it: a
        class render is recognisable once converged at its first rate (its logit and probability
        already far past any photograph's), a unit's render gains from the lower rates."""
        return 0 if self.job.plan.kind == "class_logit" else DECAYS

    def _finished(self, history: list[float], step: int) -> bool:
        """Whether an image has converged: past :data:`MIN_STEPS`, it gained less than
        :data:`CONVERGED` of its value over the last :data:`CONVERGED_STEPS` steps (a history of its
        checks since its start; a restart starts it again)."""
        if not self.job.settings.stop or step < MIN_STEPS:
            return False
        sign = -1 if self.job.plan.negative else 1
        looks = CONVERGED_STEPS // CHECK_EVERY
        if len(history) <= looks:
            return False
        value, before = sign * history[-1], sign * history[-1 - looks]
        return value - before < CONVERGED * max(abs(value), abs(before), 1e-6)

    def _restart_rows(self, active, finished, history, restarted, step) -> list[int]:
        """Images still below their reference at :data:`RESTART_AT` steps, or converged below it
        before, start again from the real image that moves their unit most (once)."""
        if self.job.real is None or not self.job.settings.stop or step >= self.job.settings.steps or self.job.plan.kind == "class_logit":
            return []  # a class's render started from a photograph of the class gives that photograph back
        sign = -1 if self.job.plan.negative else 1
        rows = []
        for row in active:
            if row in restarted or not history[row] or not (finished[row] or step == RESTART_AT):
                continue
            group = self.job.plan.groups[row]
            reference = -self.job.real.minima[group] if self.job.plan.negative else self.job.real.maxima[group]
            if sign * history[row][-1] <= reference:
                rows.append(row)
        return rows

    def _learning_rate(self, step: int) -> float:
        if self.job.settings.schedule == "constant":
            return self.job.settings.lr
        return self.job.settings.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / self.job.settings.steps)))

    def _scores(self, objective, images, transformed, redirect: bool):
        # channels_last makes the convolutions of a CPU or GPU pass faster (measured: VGG11 to
        # features.3, 265 -> 173 ms per step of 8 images)
        inputs = transformed if self._identity else torch.addcmul(self._shift, transformed, self._scale)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
        rule = relu_rule("redirect") if redirect else contextlib.nullcontext()
        skip = SkipSoftmax(self.job.softmax) if self.job.softmax is not None else contextlib.nullcontext()
        autocast = torch.autocast(self.job.device.type, dtype=torch.bfloat16) if self.job.use_bf16 else contextlib.nullcontext()
        with rule, autocast, skip:
            self._recorder.run(inputs)
            activations = {name: self._recorder[name].float() for name in self._layers}
        try:
            return objective(activations, images)
        except IndexError as error:  # o.channel(layer, 99999): a channel the layer does not have
            shapes = ", ".join(f"{name} {tuple(value.shape[1:])}" for name, value in activations.items())
            raise CnnvizError(f"the objective {objective.description} does not fit the layers' outputs ({shapes}): "
                              f"{error}") from None
