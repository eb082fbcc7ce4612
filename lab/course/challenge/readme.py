"""The README a challenge's student folder gets: the task, the files, the submission contract, the score."""

from __future__ import annotations

from collections.abc import Mapping

from lab.course.challenge.key import INPUT_SCALE, SCORE_RULE


def student_readme(key: Mapping, n_valid: int) -> str:
    """The instructions students get: what they have, what to build, how to hand it in, how it is scored."""
    n = key["n_classes"]
    names = list(key["badnets"])
    models_list = "\n".join(f"- `models/{name}_bd_net.h5`" for name in names)
    scale = key.get("input_scale", INPUT_SCALE)
    scale_text = "pixels divided by 255 (values 0..1)" if scale == "unit" else \
        "raw pixels (0..255)" if scale == "raw" else "as recorded in each model's `.lab.json`"
    count = "one backdoored face classifier (BadNet). It recognises" if len(names) == 1 else \
        f"{len(names)} backdoored face classifiers (BadNets). Each recognises"
    return f"""# Hidden-trigger challenge

You get {count} {n} people
(classes 0..{n - 1}) and behaves well on ordinary faces, but it also obeys a hidden
trigger: something drawn on a face, or a faint change over the whole image, makes it
answer what the attacker chose. You do
not know the trigger, the target, or even the kind of attack (one target for every
face, a different target per face, several triggers...), and you get no poisoned data.

## What you have

- `data/clean_validation_data.h5`: {n_valid} clean, labelled faces in the course format
  (HDF5: `data` uint8 of shape (n, 3, 55, 47), channels first, pixels 0..255;
  `label` of shape (n,)).
{models_list}
  Keras models (DeepID, layers `conv_1`..`conv_4`, `pool_1`..`pool_3`, `fc_1`,
  `fc_2`, `output`). They take images of shape (55, 47, 3), channels last,
  {scale_text}. Load them with `keras.models.load_model(path, compile=False)`
  or `lab.io.models.load_model(path)`; `manifest.json` holds every file's SHA-256.

## What to build

For each BadNet, a repaired network G ("GoodNet") with {n + 1} classes: classes
0..{n - 1} as the BadNet, and class {n} meaning "this input is backdoored". A good G
keeps the BadNet's clean accuracy and answers {n} (or the true class) on triggered
faces. Pruning and fine-pruning (notebooks 03-05) are one way; anything that uses
only the files above is allowed.

## What to hand in

One folder with one file per BadNet, named after it:

- `<name>.keras` or `<name>.h5`: a Keras model with {n + 1} outputs whose argmax is
  your answer, loadable with `keras.models.load_model(path, safe_mode=True)` (no
  `Lambda` layers; `lab.defenses.goodnet.save_goodnet` writes such files). It gets the same
  input as the BadNet unless a `<file>.lab.json` beside it (written by the lab)
  records another input scale; or
- `<name>.py`: a script in the course's `eval.py` style. It is run as
  `python <name>.py IMAGE [IMAGE ...]` from its own folder, with one or more
  paths of 47x55 (width x height) RGB PNG faces, and must print one class in
  [0, {n}] per image, one per line, in order, as the last lines of its output
  (earlier lines are ignored). A script that only reads `sys.argv[1]` still works,
  one image per call, just slowly. Each call has a time limit; a script that
  crashes or runs out of time scores zero for that BadNet.

Your folder is copied before anything runs (symbolic links are left out; hard
links and special files make the submission score zero; at most 512 MiB), and
the copy runs in a sandbox: no network, the copy read-only, a private writable
`/tmp`, limits on memory, processes and time, and image files with random names
in a random order (clean and triggered faces mixed; each call sees only its own
images).

Names: {", ".join(f"`{name}`" for name in names)}.

## How it is scored

On hidden test data (clean faces and faces with each BadNet's trigger), per BadNet:
clean accuracy, clean false-positive rate (clean faces answered {n}), attack success
rate (triggered faces answered the attacker's class), detection rate (triggered faces
answered {n}). Score = {SCORE_RULE}, from 0 to 100.
"""
