"""Figures of the lab. :func:`set_theme` is the one place that sets the look.

Every function returns a ``matplotlib.figure.Figure`` made without pyplot's
global state, so a notebook shows it once (as the cell's value) and a
script saves it with ``fig.savefig(path)``. Figures have a title, axis
labels with units and a legend.
"""

from __future__ import annotations

import numpy as np

CLEAN_COLOR, ATTACK_COLOR, DETECT_COLOR, OTHER_COLOR = "#1f77b4", "#d62728", "#2ca02c", "#9e9e9e"
FALSE_ALARM_COLOR = "#98df8a"  # clean inputs flagged as backdoor: the light shade of DETECT_COLOR
# One meaning per colour in every figure: blue clean accuracy, red attack success, dark green poisoned inputs
# flagged (detection), light green clean inputs flagged (false alarms), grey anything else.
METRIC_COLORS = {"clean_accuracy": CLEAN_COLOR, "attack_success_rate": ATTACK_COLOR, "detection_rate": DETECT_COLOR,
                 "clean_false_positive_rate": FALSE_ALARM_COLOR}


def set_theme() -> None:
    """The lab's seaborn theme (white grid, notebook scale); every plot function calls it."""
    import seaborn

    seaborn.set_theme(style="whitegrid", context="notebook", palette="deep")


def _figure(width: float = 8.0, height: float = 4.5, ncols: int = 1, **subplots):
    """A pyplot-free figure and its axes (one, or ``ncols`` side by side)."""
    from matplotlib.figure import Figure

    set_theme()
    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.subplots(1, ncols, **subplots)


def plot_sweep(sweep, selection=None, title: str | None = None, data: str = "validation"):
    """Clean accuracy and attack success rate (%) against the share of channels pruned (%).

    sweep: the table of :func:`lab.defenses.pruning.sweep`. selection: optionally the
    table of :func:`lab.defenses.pruning.select_thresholds`; each threshold found is
    marked with a dashed line at the step it picks. data: which data the rates are
    on, for the legend (``"test"`` for a sweep that scores the test sets).
    """
    figure, axes = _figure()
    layer = sweep.attrs.get("layer", "the layer")
    percent = 100.0 * sweep["fraction_pruned"]
    axes.plot(percent, sweep["clean_accuracy"], color=CLEAN_COLOR, marker=".", label=f"clean accuracy ({data})")
    if sweep["attack_success_rate"].notna().any():
        axes.plot(percent, sweep["attack_success_rate"], color=ATTACK_COLOR, marker=".",
                  label=f"attack success rate ({data})")
    if selection is not None:
        _mark_thresholds(axes, selection)
    axes.set(xlim=(0, 100), ylim=(0, 102), xlabel=f"channels of {layer} pruned (% of {len(sweep) - 1})",
             ylabel="rate (%)")
    channels = len(sweep) - 1
    top = axes.secondary_xaxis("top", functions=(lambda p: p * channels / 100.0, lambda c: c * 100.0 / channels))
    top.set_xlabel("channels pruned (count)")
    axes.set_title(title or f"Pruning {layer} by mean {sweep.attrs.get('measure', '')} activation "
                            f"({sweep.attrs.get('order', '')} order)", fontsize=11)
    axes.legend(loc="center left", fontsize=9)
    return figure


def _mark_thresholds(axes, selection) -> None:
    """A dashed line at each step a threshold picked; thresholds picking the same step share one line.

    Labels sit at the bottom, to the left of their line, one height per line
    (staggered), on a white box: neighbouring steps never print over each
    other, and the legend sits elsewhere (centre left).
    """
    found = selection[selection["found"]]
    rule = selection["rule"].iloc[0] if len(selection) else ""
    for number, (fraction, rows) in enumerate(found.groupby("fraction_pruned", sort=True)):
        x = 100.0 * fraction
        axes.axvline(x, color="black", linestyle="--", linewidth=1, alpha=0.7,
                     label=f"B' saved at a threshold ({rule} rule)" if number == 0 else None)
        label = ", ".join(f"{t:g}" for t in rows["threshold"]) + f" pp: {int(rows['channels_pruned'].iloc[0])} ch."
        axes.annotate(label, (x, 3 + 8 * (number % 5)), xytext=(-3, 0), textcoords="offset points", ha="right",
                      va="bottom", fontsize=8, zorder=5,
                      bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "0.6", "alpha": 0.95})


def plot_channel_activation(sweep, title: str | None = None):
    """Mean activation of every channel on clean data, in pruning order (first pruned on the left).

    sweep: the table of :func:`lab.defenses.pruning.sweep` (its ``channel`` and
    ``mean_activation`` columns). Activations have no physical unit: the
    axis says "a.u." (arbitrary units).
    """
    figure, axes = _figure(9.0, 3.8)
    steps = sweep.iloc[1:]
    ranks = np.arange(1, len(steps) + 1)
    axes.bar(ranks, steps["mean_activation"], color=CLEAN_COLOR, width=0.8, label="mean activation on clean data")
    dead = steps["mean_activation"] == 0
    if dead.any():
        # zero-height bars are invisible: mark never-active channels on the axis instead
        axes.scatter(ranks[dead.to_numpy()], np.zeros(int(dead.sum())), marker="x", color=OTHER_COLOR, zorder=3,
                     clip_on=False, label=f"never active on clean data: {int(dead.sum())} channels")
    axes.set(xlabel="pruning rank (1 = pruned first)",
             ylabel=f"mean {sweep.attrs.get('measure', '')} activation (a.u.)", xlim=(0, len(steps) + 1))
    axes.set_title(title or f"Channels of {sweep.attrs.get('layer', '')} in pruning order", fontsize=11)
    axes.legend(loc="upper left")
    return figure


def plot_comparison(table, columns=("clean_accuracy", "attack_success_rate", "detection_rate",
                                    "clean_false_positive_rate"), title: str = "Models compared"):
    """Grouped bars (%) of several models; table from :func:`lab.evaluation.comparison_table`."""
    import seaborn

    figure, axes = _figure(max(6.0, 1.6 * len(table) + 3), 4.5)
    long = (table[list(columns)].reset_index().melt(id_vars="model", var_name="metric", value_name="percent"))
    palette = {column.replace("_", " "): METRIC_COLORS.get(column, OTHER_COLOR) for column in columns}
    long["metric"] = long["metric"].str.replace("_", " ")
    seaborn.barplot(data=long, x="model", y="percent", hue="metric", ax=axes, palette=palette)
    axes.set(ylim=(0, 105), xlabel="model", ylabel="rate (%)")
    axes.set_title(title, fontsize=11)
    axes.legend(title="metric", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


def plot_breakdown(table, title: str = "Where the inputs go: clean (CSR/CFR) and poisoned (ATR/DTR)"):
    """Stacked bars per model: clean inputs split into CSR/CFR/other, poisoned into ATR/DTR/other (each 100 %).

    table: from :func:`lab.evaluation.comparison_table`.
    """
    figure, (clean_axes, poisoned_axes) = _figure(10.0, 2.4 + 0.5 * len(table), ncols=2, sharey=True)
    parts = {
        clean_axes: (("clean_accuracy", "CSR correct", CLEAN_COLOR),
                     ("clean_false_positive_rate", "CFR flagged as backdoor", FALSE_ALARM_COLOR),
                     ("clean_other", "other wrong label", OTHER_COLOR)),
        poisoned_axes: (("attack_success_rate", "ATR attack succeeds", ATTACK_COLOR),
                        ("detection_rate", "DTR detected (class N)", DETECT_COLOR),
                        ("poisoned_other", "other label", OTHER_COLOR)),
    }
    names = list(table.index)
    for axes, segments in parts.items():
        left = np.zeros(len(names))
        for column, label, color in segments:
            values = table[column].fillna(0.0).to_numpy(dtype=float)
            axes.barh(names, values, left=left, color=color, label=label)
            left += values
        axes.set(xlim=(0, 100), xlabel="share of inputs (%)")
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=1, fontsize=9)
    clean_axes.set_title("clean inputs", fontsize=10)
    poisoned_axes.set_title("poisoned inputs", fontsize=10)
    clean_axes.set_ylabel("model")
    clean_axes.invert_yaxis()  # first model on top, as in the table (the axes are shared)
    figure.suptitle(title, fontsize=11)
    return figure


def plot_images(rows: dict, labels: dict | None = None, n: int = 8, title: str | None = None):
    """A grid of images: one row per entry of ``rows`` ({row name: float32 (k, H, W, 3), 0..255}).

    labels: optionally {row name: int (k,)}, shown above each image.
    """
    figure = _figure_grid(len(rows), n)
    axes = figure.axes
    for row, (name, images) in enumerate(rows.items()):
        for col in range(n):
            ax = axes[row * n + col]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if col < len(images):
                ax.imshow(np.clip(images[col], 0, 255).astype(np.uint8))
                if labels is not None and name in labels:
                    ax.set_title(f"label {int(labels[name][col])}", fontsize=8)
            if col == 0:
                ax.set_ylabel(name, fontsize=10)
    if title:
        figure.suptitle(title, fontsize=11)
    return figure


def _figure_grid(nrows: int, ncols: int):
    from matplotlib.figure import Figure

    set_theme()
    figure = Figure(figsize=(1.3 * ncols, 1.65 * nrows + 0.4), layout="constrained")
    figure.subplots(nrows, ncols, squeeze=False)
    return figure


def plot_label_distribution(datasets: dict, n_classes: int | None = None,
                            title: str = "Images per class"):
    """Images per class for each data set ({name: Dataset}): one line per set."""
    figure, axes = _figure(height=3.5)
    top = n_classes or 1 + max(int(d.y.max()) for d in datasets.values() if len(d))
    highest = 1
    styles = [("-", 3.2), ("--", 2.2), (":", 2.2), ("-.", 1.6)]
    drawn = {}
    for number, (name, dataset) in enumerate(datasets.items()):
        counts = np.bincount(dataset.y, minlength=top)
        highest = max(highest, int(counts.max()))
        same = next((other for other, values in drawn.items() if np.array_equal(values, counts)), None)
        note = f", same counts as {same}" if same else ""
        style, width = styles[number % len(styles)]
        # Distinct line styles and widths, widest first: a set with the same counts as another stays visible.
        axes.step(np.arange(top), counts, where="mid", linestyle=style, linewidth=width,
                  label=f"{name} ({len(dataset)} images{note})", zorder=2 + number)
        drawn[name] = counts
    axes.set(xlabel="class (identity)", ylabel="images (count)", title=title, ylim=(0, 1.3 * highest))
    axes.legend(fontsize=9)
    return figure


def plot_per_class_accuracy(accuracy: np.ndarray, title: str = "Clean accuracy per class (test set)"):
    """Bar chart of per-class accuracy (%), float (n_classes,), NaN for absent classes."""
    figure, axes = _figure(height=3.5)
    classes = np.arange(len(accuracy))
    axes.bar(classes, np.nan_to_num(accuracy), width=1.0, color=CLEAN_COLOR, label="accuracy of the class")
    mean = np.nanmean(accuracy)
    axes.axhline(mean, color=OTHER_COLOR, linestyle="--", label=f"mean over classes {mean:.1f} %")
    axes.set(xlabel="class (identity)", ylabel="accuracy (%)", ylim=(0, 102), title=title)
    axes.legend(loc="lower right")
    return figure


def plot_confidence(table, title: str = "How sure is the BadNet? Top-class probability"):
    """Histogram of top-class probability per set (the table of :func:`lab.evaluation.analysis.confidence_table`)."""
    import seaborn

    figure, axes = _figure(height=3.5)
    seaborn.histplot(data=table, x="confidence", hue="set", bins=40, stat="percent", common_norm=False,
                     element="step", ax=axes, palette=[CLEAN_COLOR, ATTACK_COLOR])
    axes.set(xlabel="probability of the predicted class", ylabel="inputs (% of the set)", title=title)
    return figure


def plot_channel_means(clean: np.ndarray, poisoned: np.ndarray, layer: str = "pool_3",
                       title: str | None = None):
    """Mean activation per channel on clean vs poisoned inputs, in pruning order (least active on clean data first).

    The x axis is the pruning rank (1 = pruned first); every bar carries its
    channel id below it, so a channel named in a table can be found. Channels
    never active on clean data are shaded as one block.
    """
    figure, axes = _figure(max(9.0, 0.16 * len(clean) + 2.0), 4.2)
    order = np.argsort(clean, kind="stable")
    ranks = np.arange(1, len(order) + 1)
    axes.bar(ranks - 0.2, clean[order], width=0.4, color=CLEAN_COLOR, label="clean validation")
    axes.bar(ranks + 0.2, poisoned[order], width=0.4, color=ATTACK_COLOR, label="poisoned validation")
    dormant = int(np.sum(clean == 0))
    if dormant:
        axes.axvspan(0.5, dormant + 0.5, color=OTHER_COLOR, alpha=0.15, lw=0,
                     label=f"ranks 1-{dormant}: never active on clean data")
    axes.set_xticks(ranks, [str(c) for c in order], fontsize=7, rotation=90)
    axes.set_xlim(0.3, len(order) + 0.7)
    axes.set(xlabel=f"{layer} channel id, in pruning order (rank 1, left, is pruned first)",
             ylabel="mean activation (a.u.)",
             title=title or f"Mean {layer} activation per channel: clean vs poisoned")
    top = axes.secondary_xaxis("top")
    top.set_xticks(ranks[(ranks % 10 == 0) | (ranks == 1)])
    top.set_xlabel("pruning rank", fontsize=9)
    axes.grid(axis="x", visible=False)
    axes.legend(loc="upper left", fontsize=9)
    return figure


def plot_fine_tuning(histories: dict, title: str = "Fine-tuning: held-out clean accuracy and attack success per epoch"):
    """One panel per fine-tuning run: held-out clean accuracy (chooses the epoch) and reported rates (%) per epoch.

    histories: ``{run name: history}``, each the ``history`` table of
    :func:`lab.defenses.finepruning.fine_tune` / ``fine_prune`` (``attrs["best_epoch"]``
    marks the kept epoch). Columns other than ``holdout_accuracy`` that hold
    rates (the ``report`` sets, e.g. the poisoned validation ASR) are drawn
    dashed: they were measured for this figure only and chose nothing.
    """
    figure, axes = _figure(min(5.0 * len(histories), 16.0), 3.8, ncols=len(histories), sharey=True, squeeze=False)
    axes = axes[0]
    report_colors = [ATTACK_COLOR, OTHER_COLOR, DETECT_COLOR]
    for ax, (name, history) in zip(axes, histories.items()):
        ax.plot(history["epoch"], history["holdout_accuracy"], color=CLEAN_COLOR, marker=".",
                label="clean accuracy, held-out part (chooses)")
        extra = [c for c in history.columns if c not in ("epoch", "learning_rate", "loss", "holdout_accuracy")]
        for column, color in zip(extra, report_colors):
            ax.plot(history["epoch"], history[column], color=color, linestyle="--", marker=".",
                    label=f"{column} (reported only)")
        best = history.attrs.get("best_epoch")
        if best is not None:
            ax.axvline(best, color="black", linestyle=":", linewidth=1, label="epoch kept")
        ax.set(xlabel="epoch (0 = before fine-tuning)", ylim=(0, 102),
               title=name if best is None else f"{name} (epoch {best} kept)")
        ax.title.set_fontsize(10)
    axes[0].set_ylabel("rate (%)")
    # One legend below the panels, so none covers the low band where a backdoor creeps back.
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False)
    figure.suptitle(title, fontsize=11)
    return figure


def plot_defense_tradeoff(table, title: str = "Every defense on the same BadNet (test sets)"):
    """Defenses compared, from a :func:`lab.evaluation.comparison_table`-like table (one row per defense).

    Left: clean accuracy against attack success rate, one marker per defense
    (top left is best; the legend sits below the axes so it hides no point),
    each numbered beside it with a colour of its own so stacked points stay apart.
    Right, only when some rows flag inputs (class N): their detection rate
    and clean false-positive rate.
    """
    detecting = table[table["detection_rate"].fillna(0) + table["clean_false_positive_rate"].fillna(0) > 0]
    if len(detecting):
        figure, (trade, flags) = _figure(13.0, 6.0, ncols=2, gridspec_kw={"width_ratios": [1.15, 1.0]})
    else:
        (figure, trade), flags = _figure(7.5, 6.0), None
    # One colour and marker per row (tab20: 20 distinct colours) and the row's number written beside its marker,
    # so points that sit on top of each other are still told apart; labels of nearby points fan out sideways.
    from matplotlib import colormaps

    markers = "osD^vP*Xhp<>"
    colours = colormaps["tab20"].colors
    placed: list[tuple[float, float]] = []
    for number, name in enumerate(table.index):
        row = table.loc[name]
        x, y = float(row["attack_success_rate"]), float(row["clean_accuracy"])
        trade.scatter(x, y, s=80, marker=markers[number % len(markers)], color=colours[number % len(colours)],
                      label=f"{number + 1}  {name}", zorder=3, alpha=0.85, edgecolors="black", linewidths=0.4)
        if np.isfinite(x) and np.isfinite(y):
            crowd = sum(1 for px, py in placed if abs(px - x) < 4.0 and abs(py - y) < 4.0)
            trade.annotate(str(number + 1), (x, y), xytext=(7 + 12 * crowd, -4), textcoords="offset points",
                           fontsize=8, zorder=4)
            placed.append((x, y))
    low = float(np.nanmin(table["clean_accuracy"])) if len(table) else 0.0
    trade.set(xlim=(-3, 103), ylim=(max(0.0, low - 5.0), 100.5), xlabel="attack success rate on poisoned test inputs (%)",
              ylabel="clean test accuracy (%)")
    trade.set_title("accuracy vs attack success (top left is best)", fontsize=10)
    trade.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, ncol=2, frameon=False)
    if flags is not None:
        positions = np.arange(len(detecting))
        flags.barh(positions - 0.2, detecting["detection_rate"], height=0.4, color=DETECT_COLOR,
                   label="detection rate (poisoned flagged)")
        flags.barh(positions + 0.2, detecting["clean_false_positive_rate"], height=0.4, color=FALSE_ALARM_COLOR,
                   label="clean false-positive rate (clean flagged)")
        flags.set_yticks(positions, list(detecting.index), fontsize=9)
        flags.invert_yaxis()
        flags.set(xlim=(0, 100), xlabel="share of inputs (%)")
        flags.set_title("detectors: caught vs false alarms", fontsize=10)
        flags.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, ncol=1, frameon=False)
    figure.suptitle(title, fontsize=11)
    return figure


def plot_strip_entropy(clean_entropy: np.ndarray, poisoned_entropy: np.ndarray, threshold: float,
                       title: str = "STRIP: entropy of blended predictions"):
    """Histograms of STRIP's mean entropy (bits) for clean and poisoned inputs, with the threshold."""
    figure, axes = _figure(height=3.5)
    top = max(float(np.max(clean_entropy, initial=0.0)), float(np.max(poisoned_entropy, initial=0.0)), 1e-6)
    bins = np.linspace(0.0, top, 40)
    axes.hist(clean_entropy, bins=bins, color=CLEAN_COLOR, alpha=0.6, label=f"clean ({len(clean_entropy)})")
    axes.hist(poisoned_entropy, bins=bins, color=ATTACK_COLOR, alpha=0.6, label=f"poisoned ({len(poisoned_entropy)})")
    axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f} bits (flag below)")
    axes.set(xlabel="mean entropy of predictions over blends (bits)", ylabel="inputs (count)", title=title)
    axes.legend()
    return figure


def plot_activation_maps(activations_by_input: dict, layer: str, max_channels: int = 32, columns: int = 8,
                         title: str | None = None):
    """Activation maps of ``layer`` for several inputs (e.g. clean and poisoned), ONE colour scale for all tiles.

    activations_by_input: ``{input name: {layer: float32 (1, H, W, C)}}``, the
    dicts of :func:`lab.evaluation.activations.keract_activations` (what Keract's
    ``display_activations`` takes). Keract scales every tile by itself, so a
    dim channel looks as bright as a strong one and clean and poisoned
    cannot be compared; here 0 is always the darkest colour and the largest
    activation of the layer over all inputs the brightest, with one colorbar.
    Shows the channels that fire on some input (at most ``max_channels``,
    the strongest), each input a block of rows, tiles titled by channel id.
    """
    from matplotlib.colors import Normalize

    maps = {name: np.asarray(acts[layer])[0] for name, acts in activations_by_input.items()}
    stacked = np.stack(list(maps.values()))  # (inputs, H, W, C)
    strength = stacked.max(axis=(0, 1, 2))
    firing = np.flatnonzero(strength > 0)
    shown = firing[np.argsort(-strength[firing], kind="stable")][:max_channels]
    shown = np.sort(shown)
    rows_per_input = max(1, int(np.ceil(len(shown) / columns)))
    norm = Normalize(vmin=0.0, vmax=float(strength.max()) or 1.0)
    set_theme()
    from matplotlib.figure import Figure

    height, width = stacked.shape[1:3]
    tile = 1.1
    total_rows = rows_per_input * len(maps)
    figure = Figure(figsize=(tile * columns + 1.6, tile * height / width * total_rows + 1.0), layout="constrained")
    grid = figure.subplots(total_rows, columns, squeeze=False)
    image = None
    for block, (name, activation) in enumerate(maps.items()):
        for index in range(rows_per_input * columns):
            ax = grid[block * rows_per_input + index // columns, index % columns]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if index % columns == 0:
                ax.set_ylabel(name if index == 0 else "", fontsize=11, fontweight="bold")
            if index >= len(shown):
                ax.set_frame_on(False)
                continue
            channel = int(shown[index])
            image = ax.imshow(activation[..., channel], cmap="viridis", norm=norm)
            ax.set_title(f"ch {channel}", fontsize=7, pad=2)
    if image is not None:
        figure.colorbar(image, ax=grid.ravel().tolist(), shrink=0.6,
                        label=f"{layer} activation (a.u., one scale for every tile)")
    silent = stacked.shape[-1] - len(firing)
    figure.suptitle(title or f"{layer}: {len(shown)} of {len(firing)} channels that fire "
                             f"({silent} silent on these inputs are left out)", fontsize=11)
    return figure


def plot_heatmaps(images_and_activations: dict, layer: str, title: str | None = None):
    """Where on the face ``layer`` responds: the mean over its channels, upsampled onto each image, one shared scale.

    images_and_activations: ``{input name: (image float32 (H, W, 3) 0..255,
    {layer: float32 (1, h, w, C)})}``. One panel per input, titled with its
    name, and a last panel with the difference (second input minus first).
    """
    from matplotlib.colors import Normalize, TwoSlopeNorm

    names = list(images_and_activations)
    merged = {}
    for name, (image, acts) in images_and_activations.items():
        activation = np.asarray(acts[layer])[0].mean(axis=-1)  # (h, w)
        rows = np.linspace(0, activation.shape[0] - 1, image.shape[0]).round().astype(int)
        cols = np.linspace(0, activation.shape[1] - 1, image.shape[1]).round().astype(int)
        merged[name] = activation[rows][:, cols]  # nearest-neighbour upsampling to the image's (H, W)
    top = max(float(m.max()) for m in merged.values()) or 1.0
    panels = len(names) + (1 if len(names) == 2 else 0)
    figure, axes = _figure(3.0 * panels + 1.0, 3.9, ncols=panels, squeeze=False)
    axes = axes[0]
    norm = Normalize(0.0, top)
    for ax, name in zip(axes, names):
        image = images_and_activations[name][0]
        ax.imshow(np.clip(image, 0, 255).astype(np.uint8))
        shown = ax.imshow(merged[name], cmap="inferno", norm=norm, alpha=0.6)
        ax.set_title(f"{name}: mean {layer} activation", fontsize=10)
    figure.colorbar(shown, ax=list(axes[:len(names)]), shrink=0.8, label="mean activation (a.u., shared scale)")
    if len(names) == 2:
        difference = merged[names[1]] - merged[names[0]]
        limit = float(np.abs(difference).max()) or 1.0
        ax = axes[-1]
        ax.imshow(np.clip(images_and_activations[names[1]][0], 0, 255).astype(np.uint8))
        diff = ax.imshow(difference, cmap="coolwarm", norm=TwoSlopeNorm(0.0, -limit, limit), alpha=0.7)
        ax.set_title(f"{names[1]} minus {names[0]}", fontsize=10)
        figure.colorbar(diff, ax=ax, shrink=0.8, label="difference (a.u.)")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    figure.suptitle(title or f"Where {layer} responds on the face", fontsize=11)
    return figure


def strongest_difference(images_and_activations: dict, layer: str) -> dict:
    """Where the second input's mean ``layer`` activation exceeds the first's most: image row/column band in words.

    Returns ``{"row", "column", "difference", "region"}``: the pixel (in the
    image's coordinates) and a coarse name of the face region (upper/middle/
    lower third, left/centre/right), so a notebook prints the finding from data.
    """
    names = list(images_and_activations)
    if len(names) != 2:
        raise ValueError(f"strongest_difference compares two inputs, got {len(names)}")
    (image, first), (_, second) = images_and_activations[names[0]], images_and_activations[names[1]]
    difference = np.asarray(second[layer])[0].mean(axis=-1) - np.asarray(first[layer])[0].mean(axis=-1)
    row, column = np.unravel_index(int(np.argmax(difference)), difference.shape)
    y = int(round((row + 0.5) * image.shape[0] / difference.shape[0]))
    x = int(round((column + 0.5) * image.shape[1] / difference.shape[1]))
    vertical = ("upper", "middle", "lower")[min(2, 3 * y // image.shape[0])]
    horizontal = ("left", "centre", "right")[min(2, 3 * x // image.shape[1])]
    return {"row": y, "column": x, "difference": float(difference.max()), "region": f"{vertical} {horizontal}"}


def plot_flow(counts: np.ndarray, top: int = 10,
              title: str = "Where universal perturbations send clean images (pushed out of their class)"):
    """Bar chart of the ``top`` classes receiving the most pushed-out images.

    counts: int (n_classes,), as :attr:`lab.defenses.reverse.Flow.counts`.
    """
    counts = np.asarray(counts)
    order = np.argsort(-counts, kind="stable")[:top]
    figure, ax = _figure(7.0, 3.5)
    ax.bar([str(int(c)) for c in order], counts[order], color=[ATTACK_COLOR] + [OTHER_COLOR] * (len(order) - 1))
    ax.set(xlabel="class", ylabel="images landing there", title=title)
    ax.title.set_fontsize(10)
    return figure


def plot_reversed_triggers(masks: np.ndarray, patterns: np.ndarray, names: list, example: np.ndarray,
                           title: str = "Reverse-engineered triggers: mask, mask x pattern, stamped on a face"):
    """One column per trigger: its mask (white = 1), the masked pattern, and ``example`` stamped with it.

    masks: float32 (k, H, W, 1) in [0, 1]; patterns: float32 (k, H, W, 3) 0..255;
    names: k column titles; example: one clean face float32 (H, W, 3) 0..255.
    """
    k = len(masks)
    figure = _figure_grid(3, k)
    axes = figure.axes
    rows = ("mask", "mask x pattern", "stamped")
    for col in range(k):
        mask, pattern = masks[col], patterns[col]
        pictures = (np.repeat(mask * 255.0, 3, axis=-1), mask * pattern, (1 - mask) * example + mask * pattern)
        for row, picture in enumerate(pictures):
            ax = axes[row * k + col]
            ax.imshow(np.clip(picture, 0, 255).astype(np.uint8))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if row == 0:
                ax.set_title(str(names[col]), fontsize=8)
            if col == 0:
                ax.set_ylabel(rows[row], fontsize=9)
    figure.suptitle(title, fontsize=11)
    return figure


def plot_reverse_unlearn(history: list, title: str = "Reverse-and-unlearn: held-out clean accuracy and trigger size"):
    """Held-out clean accuracy (%) and the re-reversed trigger's mask L1 (pixels) per epoch.

    history: the ``details["history"]`` rows of :func:`lab.defenses.reverse_unlearn.reverse_and_unlearn`.
    """
    figure, axes = _figure(10.0, 3.6, ncols=2)
    epochs = [row["epoch"] for row in history]
    axes[0].plot(epochs, [row["holdout_accuracy"] for row in history], color=CLEAN_COLOR, marker=".")
    axes[0].set(xlabel="epoch (0 = B)", ylabel="held-out clean accuracy (%)", title="clean accuracy (chooses the epoch)")
    sizes = np.array([row["trigger_l1"] for row in history])
    for column in range(sizes.shape[1]):
        axes[1].plot(epochs, sizes[:, column], color=ATTACK_COLOR, marker=".")
    axes[1].set(xlabel="epoch", ylabel="mask L1 (pixels)", yscale="log", title="smallest trigger still working")
    for ax in axes:
        ax.title.set_fontsize(10)
    figure.suptitle(title, fontsize=11)
    return figure
