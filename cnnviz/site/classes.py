"""The gallery's jobs on the model's classes: attributions with their context (each image's name,
its top predictions with their probabilities, whether the best is right where the image's class
is known) and class visualizations beside a real image of each class.

An image's class is known when its name says it: a sample photograph named like a class
(``sample:chelsea`` for ``builtin:photos``), a file in a folder named like a class
(``photos/tabby/1.jpg``, torchvision's ``ImageFolder`` layout) or a file named like one
(``tabby.jpg``). ``builtin:patterns`` draws its examples from its own pattern generator.

The jobs are functions of the gallery's plan and settings, as those of :mod:`cnnviz.site.jobs`.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from cnnviz import plots
from cnnviz.analyses.attribution import attributions
from cnnviz.analyses.faithfulness import Faithfulness, FaithfulnessSettings
from cnnviz.analyses.feature_visualization.maximize import maximize
from cnnviz.analyses.predictions import predict
from cnnviz.core import output as files
from cnnviz.core.executor import executor
from cnnviz.core.probe import capture
from cnnviz.core.softmax import as_probabilities
from cnnviz.errors import CnnvizError
from cnnviz.inputs.images import display_image
from cnnviz.reports.report import finite
from cnnviz.site import units as pictures
from cnnviz.site.jobs import Progress, no_progress, place_renders, reference_images
from cnnviz.site.plan import GalleryPlan, normal_name
from cnnviz.site.records import display_name, file_stem
from cnnviz.site.settings import TOP_PREDICTIONS as TOP, GallerySettings

EXAMPLE_CANDIDATES = 16  # labelled images per class read to choose its example
PATTERN_EXAMPLE_SEED = 20261205  # builtin:patterns' example of each class (a seed training never used)


def image_label(spec: str, class_names) -> int | None:
    """The class an image's name says it shows (see the module's text), or ``None``."""
    if not class_names:
        return None
    classes = {normal_name(name): index for index, name in enumerate(class_names)}
    text = str(spec)
    if text.startswith("sample:"):
        return classes.get(normal_name(text[len("sample:"):]))
    path = Path(text)
    for candidate in (path.parent.name, path.stem):
        if candidate and normal_name(candidate) in classes:
            return classes[normal_name(candidate)]
    return None


def probabilities_of(loaded, inputs: torch.Tensor, classes: list[int]) -> list[float]:
    """The model's probability of ``classes[n]`` for input ``n`` (normalised inputs); for class
    maps, at the position where that class's map is highest."""
    logits = capture(loaded, inputs, ["logits"])["logits"].float()
    if logits.dim() == 4:
        rows = []
        for n, k in enumerate(classes):
            width = logits.shape[3]
            where = int(logits[n, k].flatten().argmax())
            rows.append(logits[n, :, where // width, where % width])
        logits = torch.stack(rows)
    probabilities, _ = as_probabilities(logits.flatten(1))
    return [float(probabilities[n, k]) for n, k in enumerate(classes)]


# -- attributions ----------------------------------------------------------------------------

def attributions_job(plan: GalleryPlan, settings: GallerySettings, chunk: list[str], progress: Progress = no_progress):
    """Each image of ``chunk``: its top predictions, whether they are right, and per class
    asked (:attr:`GallerySettings.classes`) a figure of every method's map over the image."""
    s = settings
    predicted = list(predict(plan.loaded, chunk, top=TOP))
    labels = [image_label(spec, plan.class_names) for spec in chunk]
    images = []
    for spec, prediction, label in zip(chunk, predicted, labels):
        best = prediction.classes[0][0]
        images.append({"image": display_name(spec), "spec": spec,
                       "label": None if label is None else plan.class_name(label),
                       "predictions": [[plan.class_name(i), p] for i, _, p in prediction.classes],
                       "position": list(prediction.position) if prediction.position else None,
                       "correct": None if label is None else best == label, "figures": []})
    figures, skipped, faithfulness = [], {}, None
    for round_name, targets in _rounds(plan, settings, predicted, labels):
        picked = [i for i, target in enumerate(targets) if target is not None]
        if not picked:
            continue
        # the first round (each image's first class asked) is also measured for faithfulness
        measure = faithfulness is None and s.faithfulness_steps > 0
        results = attributions(plan.loaded, [chunk[i] for i in picked], target=[targets[i] for i in picked],
                               methods=list(s.methods), batch_size=s.batch_size,
                               faithfulness=FaithfulnessSettings(steps=s.faithfulness_steps) if measure else False)
        if measure:
            faithfulness = {"round": round_name, **results.faithfulness.to_record()}
        skipped.update(getattr(results, "not_applicable", {}))
        for place, i in enumerate(picked):
            first = next(iter(results.values()))
            unit = first.targets[place]
            described = unit.class_name or str(unit)
            title = f"{images[i]['image']}: attributions of {described}"
            path = f"figures/attributions/{file_stem(chunk[i])}-{file_stem(round_name)}.png"
            files.save_figure(plots.overlays(results, place, title=title), plan.folder / path, palette=True)
            ranges = {name: [finite(r.absolute_map()[place].min()), finite(r.absolute_map()[place].max())]
                      for name, r in results.items()}
            figures.append({"file": path, "thumbnail": path, "kind": "attributions", "layer": None,
                            "unit": str(unit), "method": list(results), "method_ranges": ranges, "text": True,
                            "caption": f"{title}: {', '.join(results)}, each map's |attribution| over the image",
                            "value_range": [min(r[0] for r in ranges.values()), max(r[1] for r in ranges.values())],
                            "settings": {"methods": list(results), "image": chunk[i], "target": str(unit)},
                            "image": chunk[i]})
            images[i]["figures"].append({"file": path, "round": round_name, "target": described,
                                         "ranges": ranges})
    progress(len(chunk))
    return figures, {"images": images, "skipped": skipped, "faithfulness": faithfulness}


FAITHFULNESS_FIGURE = "figures/attributions/faithfulness.png"


def faithfulness_job(plan: GalleryPlan, settings: GallerySettings, records: list[dict], progress: Progress = no_progress):
    """The methods' faithfulness over every attributed image (the attributions jobs' records
    joined): the curves and the ranking as one figure, and the table's numbers."""
    result = Faithfulness.from_records(records)
    title = (f"Faithfulness of the attributions over {len(result.original)} images ({records[0]['round']}); "
             f"best: {result.best}")
    files.save_figure(plots.faithfulness(result, title=title), plan.folder / FAITHFULNESS_FIGURE, palette=True)
    means, spreads = result.summary(), result.spread()
    figure = {"file": FAITHFULNESS_FIGURE, "thumbnail": FAITHFULNESS_FIGURE, "kind": "faithfulness", "layer": None,
              "unit": None, "method": result.methods, "text": True,
              "caption": "Faithfulness: the target's score as each method's most important pixels are removed "
                         "(deletion) and put back into a blurred copy (insertion), ROAD, and the methods ranked",
              "value_range": [0.0, 1.0], "settings": result.settings}
    progress(1)
    beats = {**result.beats_random(), "random": True}  # the baseline row is not marked against itself
    rows = [{"rank": rank, "method": method, "beats_random": beats[method],
             "values": {name: [finite(means[method][name]), finite(spreads[method][name])] for name in means[method]}}
            for rank, method in enumerate(result.ranking, start=1)]
    return [figure], {"figure": FAITHFULNESS_FIGURE, "rows": rows, "images": len(result.original),
                      "round": records[0]["round"], "best": result.best, "score": sorted(set(result.score)),
                      "settings": result.settings}


def _rounds(plan: GalleryPlan, settings: GallerySettings, predicted, labels) -> list[tuple[str, list]]:
    """Per class asked, the target of each image (``None``: not attributed for this one)."""
    rounds: list[tuple[str, list]] = []
    done = [set() for _ in predicted]

    def target(n: int, index: int):
        if index in done[n]:
            return None
        done[n].add(index)
        position = predicted[n].position  # class maps: every class where the prediction was read
        return f"logits:{index}" + (f"@{position[0]},{position[1]}" if position else "")

    for spec in settings.classes:
        spec = spec.strip()
        top = re.fullmatch(r"top(\d+)", spec)
        if top:
            for rank in range(min(int(top.group(1)), TOP)):
                rounds.append((f"top{rank + 1}", [target(n, p.classes[rank][0]) if rank < len(p.classes) else None
                                                 for n, p in enumerate(predicted)]))
        elif spec == "label":
            rounds.append(("label", [None if label is None else target(n, label) for n, label in enumerate(labels)]))
        else:
            index = plan.class_index(spec)
            rounds.append((plan.class_name(index), [target(n, index) for n in range(len(predicted))]))
    return rounds


# -- classes ---------------------------------------------------------------------------------

def classes_job(plan: GalleryPlan, settings: GallerySettings, classes: list[int], progress: Progress = no_progress):
    """The render of each class of ``classes`` beside a real image of it, with the probability
    the model gives each."""
    s = settings
    rendering = maximize(plan.loaded, "logits", channels=classes, steps=s.class_steps, seed=s.seed,
                         reference=reference_images(plan),
                         progress=lambda n: progress(n))
    if not executor().first_process:  # in a process group every rank rendered its share of the classes; rank 0 writes
        return [], {}
    inputs = plan.loaded.preprocessing.normalize(rendering.images)
    chances = probabilities_of(plan.loaded, inputs, classes)
    figures, shown = place_renders(plan, rendering, "figures/classes", "class")
    examples = _class_examples(plan, classes)
    info = _class_info(plan)
    data = {}
    for k, index in enumerate(classes):
        entry = shown[str(index)]
        example = examples.get(index)
        if example is not None:
            path = f"figures/classes/example_{index}.jpg"
            files.write_bytes(plan.folder / path, pictures.jpeg(files.uint8_pixels(example["pixels"])))
            example = {"file": path, "image": example["image"], "probability": example["probability"]}
        data[str(index)] = {"name": plan.class_name(index), "render": entry, "probability": chances[k],
                            "example": example, "description": info.get(plan.class_name(index)),
                            "weak": entry.get("succeeded") is False or chances[k] < 0.5}
    return figures, {"classes": data, "summary": rendering.summary()}


def _class_examples(plan: GalleryPlan, classes: list[int]) -> dict[int, dict]:
    """A real image of each class where one is known: the labelled image the model finds most
    likely to be of its class, or for ``builtin:patterns`` a fresh pattern of each class."""
    wanted = set(classes)
    candidates: dict[int, list] = {}
    if plan.loaded.spec == "builtin:patterns":
        from cnnviz.models import zoo

        images, labels = zoo.validation_data("patterns", seed=PATTERN_EXAMPLE_SEED, per_class=1)
        normal = plan.loaded.preprocessing.normalize(images)
        for image, label in zip(normal, labels.tolist()):
            if label in wanted:
                candidates.setdefault(label, []).append((f"a generated {plan.class_name(label)}", image))
    else:
        specs = [spec for spec in plan.sources if image_label(spec, plan.class_names) in wanted]
        for spec in specs:
            label = image_label(spec, plan.class_names)
            if len(candidates.get(label, [])) < EXAMPLE_CANDIDATES:
                candidates.setdefault(label, []).append((display_name(spec), spec))
    examples = {}
    for label, found in candidates.items():
        try:
            inputs = torch.stack([item if isinstance(item, torch.Tensor) else plan.model_input(item) for _, item in found])
        except CnnvizError:
            continue
        chances = probabilities_of(plan.loaded, inputs, [label] * len(found))
        best = max(range(len(found)), key=lambda i: chances[i])
        examples[label] = {"image": found[best][0], "probability": chances[best],
                           "pixels": display_image(inputs[best], plan.loaded.preprocessing)}
    return examples


def _class_info(plan: GalleryPlan) -> dict[str, str]:
    """What each class means, where the model says (the built-in models' ``class_info``)."""
    spec = plan.loaded.spec or ""
    if not spec.startswith("builtin:"):
        return {}
    from cnnviz.models import zoo

    try:
        meta = zoo.info(spec.split(":", 1)[1])
    except CnnvizError:
        return {}
    return {name: info.get("description") for name, info in meta.get("class_info", {}).items()}
