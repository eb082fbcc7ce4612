"""Schematics drawn by code: a network's layers with their shapes, how G is wired from B and B', the threat model.

Each function returns a ``matplotlib.figure.Figure`` (no pyplot state), as
:mod:`lab.evaluation.plots` does. The network diagram is read from the model
itself (its layers, their output shapes, which layer feeds which), so it is
true of whatever model a student loads: the embedded default, the course's
real DeepID, or an instructor's own functional Keras model.
"""

from __future__ import annotations

import dataclasses

from lab.evaluation.plots import ATTACK_COLOR, CLEAN_COLOR, DETECT_COLOR, OTHER_COLOR, set_theme

# Box colours by what a layer does (one meaning per colour, as in the lab's plots).
LAYER_COLORS = {"Conv2D": "#c6dbef", "MaxPooling2D": "#e0e0e0", "Dense": "#fdd0a2", "InputLayer": "#ffffff",
                "Flatten": "#f0f0f0", "Add": "#d9f0d3", "Activation": "#d9f0d3", "Rescaling": "#ffffff"}


@dataclasses.dataclass(frozen=True)
class LayerBox:
    """One layer of a functional model: its name, class, output shape and the layers feeding it."""

    name: str
    kind: str
    shape: tuple
    inputs: tuple[str, ...]
    detail: str = ""


def layer_boxes(keras_model) -> list[LayerBox]:
    """The layers of a functional ``keras_model`` in graph order, each with its inbound layers' names.

    ``detail`` says what a layer computes in a few characters (``4x4, 20`` for
    a convolution with 20 filters of 4 x 4, ``160`` for a dense layer of 160
    units, ``softmax`` where an activation is folded in).
    """
    # Walk back from the model's outputs through each tensor's producing call, so only this model's graph counts:
    # a layer also used elsewhere (a clone, another model built on it) has more inbound calls than this one.
    inbound: dict[str, list[str]] = {}
    pending = [tensor for tensor in keras_model.outputs]
    while pending:
        operation, node_index, _ = pending.pop()._keras_history
        if operation.name in inbound:
            continue
        inbound[operation.name] = []
        for tensor in operation._inbound_nodes[node_index].input_tensors:
            producer = tensor._keras_history[0].name
            if producer not in inbound[operation.name]:
                inbound[operation.name].append(producer)
            pending.append(tensor)
    boxes = []
    for layer in keras_model.layers:
        shape = tuple(layer.output.shape[1:]) if hasattr(layer, "output") else ()
        boxes.append(LayerBox(layer.name, type(layer).__name__, shape, tuple(inbound.get(layer.name, ())),
                              _detail(layer)))
    return boxes


def _detail(layer) -> str:
    config = layer.get_config()
    kind = type(layer).__name__
    activation = config.get("activation")
    folded = f", {activation}" if activation not in (None, "linear") else ""
    if kind == "Conv2D":
        return f"{'x'.join(map(str, config['kernel_size']))}, {config['filters']}{folded}"
    if kind == "MaxPooling2D":
        return "x".join(map(str, config["pool_size"]))
    if kind == "Dense":  # its units are its output shape, shown anyway
        return folded.removeprefix(", ")
    if kind == "Activation":
        return str(activation)
    if kind == "Rescaling":
        scale = float(config["scale"])
        return "/ 255" if abs(scale * 255.0 - 1.0) < 1e-6 else f"x {scale:.4g}"
    return ""


def fold_layers(boxes: list[LayerBox], kinds: tuple[str, ...] = ("Flatten", "Activation", "Rescaling")
                ) -> list[LayerBox]:
    """``boxes`` without the layers of ``kinds``, each folded into its neighbour so no information is lost.

    A one-input layer that only reshapes or applies a function becomes a
    note: a separate Activation or a Rescaling on the layer before it
    (``relu``, ``/ 255``), a Flatten on the layer that reads it (``reads
    1200 flat``). Whatever read the folded layer now reads its input. Keeps
    wide networks readable at a notebook's width.
    """
    kept: dict[str, LayerBox] = {}
    alias: dict[str, str] = {}
    flat_notes: dict[str, str] = {}
    for box in boxes:
        inputs = tuple(dict.fromkeys(alias.get(name, name) for name in box.inputs))
        notes = [flat_notes[name] for name in box.inputs if name in flat_notes]
        if box.kind in kinds and len(inputs) == 1 and inputs[0] in kept:
            alias[box.name] = inputs[0]
            if box.kind == "Flatten":
                flat_notes[box.name] = f"reads {_shape_text(box.shape)} flat"
            else:
                source = kept[inputs[0]]
                kept[source.name] = dataclasses.replace(
                    source, detail=" + ".join(filter(None, (source.detail, box.detail))), shape=box.shape)
            continue
        kept[box.name] = dataclasses.replace(box, inputs=inputs,
                                             detail=" + ".join(filter(None, (*notes, box.detail))))
    return list(kept.values())


def _layout(boxes: list[LayerBox]) -> dict[str, tuple[int, int]]:
    """(column, row) of each box: columns as late as the data allows, rows as lanes.

    A layer's column is the longest path from it to the output counted
    back from the last column, so parallel branches line up (DeepID's
    ``fc_1`` beside ``fc_2``). Its row is its first input's row, or the next
    free row when that input already has a child there; a merge takes the
    lowest row of its inputs.
    """
    children: dict[str, list[str]] = {box.name: [] for box in boxes}
    for box in boxes:
        for name in box.inputs:
            children[name].append(box.name)
    to_output: dict[str, int] = {}
    for box in reversed(boxes):
        to_output[box.name] = 1 + max((to_output[child] for child in children[box.name]), default=-1)
    last = max(to_output.values())
    rows: dict[str, int] = {}
    taken: dict[str, set[int]] = {box.name: set() for box in boxes}
    for box in boxes:
        if not box.inputs:
            row = 0
        elif len(box.inputs) > 1:
            row = min(rows[name] for name in box.inputs)
        else:
            parent = box.inputs[0]
            row = rows[parent]
            while row in taken[parent]:
                row += 1
        for name in box.inputs:
            taken[name].add(row)
        rows[box.name] = row
    return {box.name: (last - to_output[box.name], rows[box.name]) for box in boxes}


def _shape_text(shape: tuple) -> str:
    return " x ".join("?" if d is None else str(d) for d in shape)


def draw_network(model, highlight: str | None = None, title: str | None = None,
                 fold: tuple[str, ...] = ("Flatten", "Activation", "Rescaling")):
    """Every layer of ``model`` (a ``LoadedModel`` or a functional ``keras.Model``) as a box, left to right.

    Each box names the layer, what it computes and its output shape
    (height x width x channels, or units); arrows follow the data, so
    DeepID's shortcut (``pool_3`` feeding both ``conv_4`` and ``fc_1``)
    shows as a fork. Layers of the kinds in ``fold`` are notes on the layer
    before them (:func:`fold_layers`; ``fold=()`` draws every layer).
    ``highlight`` outlines one layer in red (e.g. the layer whose channels
    the lab prunes).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch

    keras_model = getattr(model, "model", model)
    boxes = fold_layers(layer_boxes(keras_model), fold)
    grid = _layout(boxes)
    step_x, step_y, width, height = 1.5, 1.45, 1.32, 1.1
    position = {name: (column * step_x, -row * step_y) for name, (column, row) in grid.items()}
    n_columns = 1 + max(column for column, _ in grid.values())
    n_rows = 1 + max(row for _, row in grid.values())

    set_theme()
    figure = Figure(figsize=(max(8.0, 1.05 * n_columns), 1.2 + 1.1 * n_rows), layout="constrained")
    axes = figure.subplots()
    for box in boxes:
        x, y = position[box.name]
        chosen = box.name == highlight
        axes.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                      boxstyle="round,pad=0.02,rounding_size=0.08",
                                      facecolor=LAYER_COLORS.get(box.kind, "#ffffff"),
                                      edgecolor=ATTACK_COLOR if chosen else "#555555", linewidth=2.5 if chosen else 1))
        kind = box.kind.replace("Pooling2D", "Pool").replace("Average", "Avg").replace("InputLayer", "Input")
        lines = [kind, *filter(None, box.detail.split(" + ")), _shape_text(box.shape)]
        axes.text(x, y + 0.34, box.name, ha="center", va="center", fontsize=9, fontweight="bold")
        axes.text(x, y - 0.08, "\n".join(lines), ha="center", va="center", fontsize=7.5, linespacing=1.15)
        for name in box.inputs:
            sx, sy = position[name]
            start, end = (sx + width / 2, sy), (x - width / 2, y)
            if sy != y:  # an elbow: out of the source, along its own lane, then into the target's lane
                bend = start[0] + 0.1 if y < sy else end[0] - 0.1  # down at once; up just before the target
                axes.plot([start[0], bend, bend], [sy, sy, y], color="#555555", lw=1.0)
                start = (bend, y)
            axes.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="->", color="#555555", lw=1.0))
    axes.set_xlim(-width, (n_columns - 1) * step_x + width)
    axes.set_ylim(-(n_rows - 1) * step_y - height, height)
    axes.set_aspect("equal")
    axes.axis("off")
    axes.set_title(title or f"{keras_model.name}: every layer with its output shape (data flows left to right)")
    return figure


def _box(axes, x: float, y: float, text: str, color: str, width: float = 2.2, height: float = 0.9,
         edge: str = "#555555") -> None:
    from matplotlib.patches import FancyBboxPatch

    axes.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                  boxstyle="round,pad=0.02,rounding_size=0.1", facecolor=color, edgecolor=edge))
    axes.text(x, y, text, ha="center", va="center", fontsize=9, wrap=True)


def _arrow(axes, start: tuple, end: tuple, label: str = "", color: str = "#555555", lift: float = 0.15) -> None:
    axes.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="->", color=color, lw=1.3))
    if label:
        axes.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + lift, label, ha="center", va="bottom",
                  fontsize=8, color=color)


def _canvas(width: float, height: float, title: str):
    from matplotlib.figure import Figure

    set_theme()
    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots()
    axes.axis("off")
    axes.set_title(title)
    return figure, axes


def draw_goodnet(n_classes: int | None = None, title: str | None = None):
    """How the repaired network G is wired: one image into B and B', G answers from their two labels.

    G has N + 1 classes: B's label where B and B' agree, class N ("backdoor")
    where they disagree. ``n_classes`` (N) puts the real class count into
    the labels.
    """
    n = "N" if n_classes is None else str(n_classes)
    figure, axes = _canvas(9.0, 3.6, title or f"The GoodNet G: B and the pruned B' vote; "
                                             f"a disagreement is answered with class {n} (backdoor)")
    _box(axes, 0.0, 0.0, "image $x$", "#ffffff", width=1.4)
    _box(axes, 3.0, 1.0, "B: the BadNet\nlabel $B(x)$", LAYER_COLORS["Conv2D"])
    _box(axes, 3.0, -1.0, "B': B with channels\nof the last conv pruned\nlabel $B'(x)$", LAYER_COLORS["Dense"],
         height=1.1)
    _box(axes, 6.2, 0.0, "same label?", "#ffffff", width=1.7)
    _box(axes, 9.0, 1.0, "$G(x) = B(x)$", "#d9f0d3", width=1.9)
    _box(axes, 9.0, -1.0, f"$G(x) = {n}$\n(backdoor)", "#fcbba1", width=1.9, height=1.0)
    _arrow(axes, (0.7, 0.2), (1.9, 1.0))
    _arrow(axes, (0.7, -0.2), (1.9, -1.0))
    _arrow(axes, (4.1, 1.0), (5.35, 0.2))
    _arrow(axes, (4.1, -1.0), (5.35, -0.2))
    _arrow(axes, (7.05, 0.2), (8.05, 1.0), "yes", DETECT_COLOR)
    _arrow(axes, (7.05, -0.2), (8.05, -1.0), "no", ATTACK_COLOR)
    axes.set_xlim(-1.0, 10.2)
    axes.set_ylim(-1.8, 1.8)
    return figure


def draw_threat_model(title: str | None = None):
    """Who does what: the attacker trains and hands over B; the defender holds B and clean data only.

    The attacker poisons part of the training data (trigger + target label)
    and trains B; the defender receives B and a clean validation set, never
    the trigger or poisoned data, and makes G; at test time a clean image
    should get its label and a triggered one the backdoor class (or at
    least not the attacker's target).
    """
    figure, axes = _canvas(10.0, 4.2, title or "Threat model: what the attacker controls, "
                                               "what the defender has")
    axes.text(1.6, 2.35, "attacker", ha="center", fontsize=11, fontweight="bold", color=ATTACK_COLOR)
    axes.text(7.85, 2.35, "defender (you)", ha="center", fontsize=11, fontweight="bold", color=CLEAN_COLOR)
    _box(axes, 0.0, 1.0, "clean training\nimages + labels", "#ffffff", width=1.9)
    _box(axes, 0.0, -1.0, "trigger $t$,\ntarget label $y_t$", "#fcbba1", width=1.9)
    _box(axes, 3.1, 0.0, "train on clean +\npoisoned $(x \\oplus t,\\ y_t)$\n→ BadNet B", "#fcbba1",
         width=2.3, height=1.2)
    _box(axes, 6.4, 1.0, "B (weights only)", LAYER_COLORS["Conv2D"], width=2.0)
    _box(axes, 6.4, -1.0, "clean validation\nimages + labels", "#ffffff", width=2.0)
    _box(axes, 9.3, 0.0, "defense:\nprune, fine-tune,\ndetect → G", "#d9f0d3", width=2.0, height=1.2)
    _arrow(axes, (0.95, 0.8), (1.95, 0.25))
    _arrow(axes, (0.95, -0.8), (1.95, -0.25))
    _arrow(axes, (4.25, 0.25), (5.4, 1.0), "hands over", ATTACK_COLOR, lift=0.35)
    _arrow(axes, (7.4, 1.0), (8.3, 0.25))
    _arrow(axes, (7.4, -1.0), (8.3, -0.25))
    axes.plot([4.7, 4.7], [-1.9, 2.2], color=OTHER_COLOR, linestyle="--", linewidth=1.0)
    axes.text(9.3, -1.45, "test: clean $x$ → its label;\ntriggered $x \\oplus t$ → not $y_t$",
              ha="center", va="top", fontsize=8.5)
    axes.set_xlim(-1.2, 10.5)
    axes.set_ylim(-2.2, 2.6)
    return figure
