"""Child process that loads one model submission and classifies a batch (run inside the sandbox).

``python -m lab.course.challenge.model_worker MODEL IMAGES.npy SCALE N_CLASSES``

MODEL: the submitted ``.keras``/``.h5`` file (a ``<file>.lab.json`` beside
it may record its input scale); IMAGES: uint8 (n, 55, 47, 3); SCALE: the
BadNet's input scale, used when the submission records none; N_CLASSES: the
BadNets' class count N (a submission has N or N + 1 outputs). The last line
of standard output is ``LAB-RESULT {json}``: ``{"answers": [...], "note":
...}`` or ``{"failed": reason}``. Any error, however exotic, ends up there:
a broken or hostile model costs its own score only, never the grader.
"""

from __future__ import annotations

import json
import sys

RESULT_PREFIX = "LAB-RESULT "


def _one_line(text: str, limit: int = 200) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[:limit - 3] + "..."


def answers(model_path: str, images_path: str, default_scale: str, n_classes: int) -> dict:
    """``{"answers", "note"}`` for a loadable model; raises ValueError (the reason) otherwise."""
    from pathlib import Path

    import numpy as np

    from lab.io import models
    from lab.io.data import IMAGE_SHAPE
    from lab.errors import LabError

    path = Path(model_path)
    if not path.is_file():
        raise ValueError(f"no such file {path.name}")
    images = np.load(images_path, allow_pickle=False).astype(np.float32)
    try:
        recorded = models.read_metadata(path)
        if not isinstance(recorded, dict):
            raise ValueError(f"{path.name}{models.META_SUFFIX} holds a {type(recorded).__name__}, not an object")
        scale = recorded.get("input_scale")
    except LabError as error:
        raise ValueError(f"does not load: {error}") from None
    except Exception as error:  # malformed sidecar: the submission's problem, in one line
        raise ValueError(f"does not load: {path.name}{models.META_SUFFIX}: {error.__class__.__name__}: "
                         f"{_one_line(error)}") from None
    note = "" if scale else f"input scale not recorded: the BadNet's ({default_scale})"
    try:
        loaded = models.load_model(path, scale=None if scale else default_scale)
    except LabError as error:
        raise ValueError(f"does not load: {error}") from None
    except Exception as error:
        raise ValueError(f"does not load: {error.__class__.__name__}: {_one_line(error)}") from None
    if loaded.n_classes not in (n_classes, n_classes + 1):
        raise ValueError(f"has {loaded.n_classes} outputs; expected {n_classes + 1} (classes 0..{n_classes})")
    if tuple(loaded.model.input_shape[1:]) != IMAGE_SHAPE:
        raise ValueError(f"takes input {tuple(loaded.model.input_shape[1:])}; expected {IMAGE_SHAPE}")
    try:
        labels = loaded.predict_labels(images)
    except Exception as error:
        raise ValueError(f"failed to predict: {error.__class__.__name__}: {_one_line(error)}") from None
    return {"answers": [int(label) for label in labels], "note": note}


def main(argv: list[str]) -> int:
    try:
        if len(argv) != 4:
            raise ValueError("usage: model_worker MODEL IMAGES.npy SCALE N_CLASSES")
        result = answers(argv[0], argv[1], argv[2], int(argv[3]))
    except ValueError as error:
        result = {"failed": _one_line(error)}
    except BaseException as error:  # noqa: BLE001 - anything a foreign file triggers becomes its reason
        result = {"failed": f"{error.__class__.__name__}: {_one_line(error)}"}
    sys.stdout.flush()
    print("\n" + RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
