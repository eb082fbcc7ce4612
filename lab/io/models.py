"""DeepID models: the course architecture, loading and saving with an explicit input scale.

Input scale is a property of the model, not of the data: data files hold
pixels in 0..255; a model whose scale is ``"raw"`` takes them as they are
(the Lab 3 ``bd_net.h5``), one whose scale is ``"unit"`` takes ``x / 255``
(the 2020 challenge models). The lab never guesses it silently: it comes
from the caller, from metadata the lab saved beside the model, from the
recorded SHA-256 of a known course file, or from the course's file naming
convention, and :attr:`LoadedModel.scale_source` says which.

Security: full models load with ``safe_mode=True`` and files whose
configuration (parsed as JSON, nested models and wrappers included) holds a
``Lambda`` layer or a serialised Python function are refused before
deserialising anything; models the lab saves contain no ``Lambda`` layers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path

import h5py
import numpy as np

from lab.constants import BATCH_SIZE
from lab.io.data import IMAGE_SHAPE, Dataset, check_image_shape, check_labels
from lab.errors import LabInputError, check_writable

SCALES = {"raw": 1.0, "unit": 1.0 / 255.0}  # multiply 0..255 pixels by this
DEEPID_LAYERS = ("conv_1", "pool_1", "conv_2", "pool_2", "conv_3", "pool_3", "conv_4",
                 "flatten_1", "flatten_2", "fc_1", "fc_2", "add_1", "activation_1", "output")

# SHA-256 of the real course weight files (DeepID, 1283 classes) and the
# input scale each was trained with. Lab 3 feeds raw pixels; 2020 divides by 255.
KNOWN_COURSE_FILES = {
    "68ec7afdfc570d39acbded72025fe37d4d14e770585001d75a393490d50fc629": ("Lab 3 sunglasses BadNet weights", "raw"),
    "22322bcef622afc817ebf2a3fd836b353423ab48e9863c83e4c02d6838fc4f0d": ("2020 sunglasses BadNet weights", "unit"),
    "7921670af9bc6cc5cd3d4ec35668c9fdfe859886629e2bc319cd5d8d9912fe5c": ("2020 anonymous_1 BadNet weights", "unit"),
    "f4bde8b26be089bed608ea14eb8e5bd37493c600035fb0d7e9d7a9a3b9086881": ("2020 anonymous_2 BadNet weights", "unit"),
    "0296dc09bb73bcbc439e02fb3af12f3db174b1fcc58287719c104286e77b728a": ("2020 multi-trigger multi-target BadNet weights", "unit"),
}
META_SUFFIX = ".lab.json"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_deepid(n_classes: int = 1283, input_scale: str = "unit", name: str = "deepid"):
    """The course's DeepID network with its original layer names.

    ``conv_1..conv_4``, ``pool_1..pool_3``, ``fc_1``, ``fc_2``, ``output``; input
    (55, 47, 3). ``conv_4`` reads ``pool_3`` and both ``pool_3`` and ``conv_4``
    feed the dense layers (the DeepID "multi-scale" shortcut). With
    ``input_scale="raw"`` a ``Rescaling`` layer (``rescale``) divides by 255
    inside the model, so the model takes raw 0..255 pixels like the Lab 3 file.
    """
    import keras
    from keras import layers

    if input_scale not in SCALES:
        raise ValueError(f"input_scale must be one of {sorted(SCALES)}, got {input_scale!r}")
    inputs = keras.Input(shape=IMAGE_SHAPE, name="input")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs) if input_scale == "raw" else inputs
    x = layers.Conv2D(20, (4, 4), activation="relu", name="conv_1")(x)
    x = layers.MaxPooling2D((2, 2), name="pool_1")(x)
    x = layers.Conv2D(40, (3, 3), activation="relu", name="conv_2")(x)
    x = layers.MaxPooling2D((2, 2), name="pool_2")(x)
    x = layers.Conv2D(60, (3, 3), activation="relu", name="conv_3")(x)
    pool_3 = layers.MaxPooling2D((2, 2), name="pool_3")(x)
    conv_4 = layers.Conv2D(80, (2, 2), activation="relu", name="conv_4")(pool_3)
    fc_1 = layers.Dense(160, name="fc_1")(layers.Flatten(name="flatten_1")(pool_3))
    fc_2 = layers.Dense(160, name="fc_2")(layers.Flatten(name="flatten_2")(conv_4))
    merged = layers.Activation("relu", name="activation_1")(layers.Add(name="add_1")([fc_1, fc_2]))
    outputs = layers.Dense(n_classes, activation="softmax", name="output")(merged)
    return keras.Model(inputs, outputs, name=name)


@dataclasses.dataclass
class LoadedModel:
    """A Keras model with the input scale it expects.

    model: ``keras.Model`` taking ``float32 (n, 55, 47, 3)`` scaled by ``input_scale``.
    input_scale: ``"raw"`` (0..255) or ``"unit"`` (0..1).
    scale_source: where the scale came from, in words.
    metadata: what the lab recorded beside the file (``<file>.lab.json``) or about the copy.
    Meets :class:`lab.defenses.base.Classifier` (``n_classes``, ``backdoor_class``,
    ``metadata``, ``predict_labels``).
    """

    model: object
    input_scale: str
    path: str | None = None
    scale_source: str = "given"
    metadata: dict = dataclasses.field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return int(self.model.output_shape[-1])

    @property
    def backdoor_class(self) -> int | None:
        """N, the "backdoor detected" class, for a GoodNet whose metadata records it; else None (a plain model)."""
        value = self.metadata.get("backdoor_class")
        return None if value is None else int(value)

    def preprocess(self, x: np.ndarray) -> np.ndarray:
        """Pixels 0..255 -> what the model takes (float32)."""
        x = np.asarray(x, dtype=np.float32)
        return x if self.input_scale == "raw" else x * np.float32(SCALES["unit"])

    def predict_proba(self, x: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Class probabilities, float32 (n, n_classes), for pixels 0..255 (n, 55, 47, 3)."""
        outputs = [np.asarray(self.model(self.preprocess(x[i:i + batch_size]), training=False))
                   for i in range(0, len(x), batch_size)]
        return np.concatenate(outputs) if outputs else np.zeros((0, self.n_classes), np.float32)

    def predict_labels(self, x: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """argmax labels, int64 (n,), for pixels 0..255."""
        return self.predict_proba(x, batch_size).argmax(axis=1).astype(np.int64)

    def check_data(self, dataset: Dataset, n_classes: int | None = None) -> None:
        """Raise one line if ``dataset`` does not fit this model (image shape, label range)."""
        check_image_shape(dataset, self.model.input_shape[1:], self.path)
        check_labels(dataset, n_classes or self.n_classes, self.path)


def _h5_kind(path: Path) -> tuple[str, dict]:
    """'full', 'weights' or 'data' for an .h5 file, plus its root attributes."""
    try:
        with h5py.File(path, "r") as handle:
            for key in handle.attrs:
                size = handle.attrs.get_id(key).get_storage_size()
                if size > CONFIG_MAX_BYTES:
                    raise LabInputError(path, f"a model file whose attributes fit in {CONFIG_MAX_BYTES >> 20} MiB",
                                        f"attribute {key!r} of {size / (1 << 20):.0f} MiB")
            attrs = {key: handle.attrs[key] for key in handle.attrs}
            if "model_config" in attrs:
                return "full", attrs
            if "layer_names" in attrs:
                return "weights", attrs
            if "data" in handle and "label" in handle:
                return "data", attrs
            return "unknown:" + ",".join(sorted(handle.keys())), attrs
    except OSError:
        with open(path, "rb") as handle:
            head = handle.read(8)
        found = "a truncated or damaged HDF5 file" if head.startswith(b"\x89HDF") else f"not an HDF5 file (starts with {head!r})"
        raise LabInputError(path, "a Keras model (.h5/.keras) or DeepID weights file", found) from None


CONFIG_MAX_BYTES = 16 << 20  # a model's configuration (config.json, h5 attributes); DeepID's is a few kB
# Layer and function classes that carry Python code: refused before Keras deserialises anything.
CODE_CLASSES = frozenset({"Lambda", "TFOpLambda", "SlicingOpLambda", "__lambda__"})


def _code_classes(node) -> set[str]:
    """Every ``class_name`` in CODE_CLASSES anywhere in a parsed model configuration.

    Walks all dicts and lists, so nested models (Functional in Sequential,
    ``config.layers``), wrappers (``TimeDistributed``/``Bidirectional``'s
    ``config.layer``) and serialised activations are all covered; a Keras-2
    marshalled function (``function_type``) counts as a Lambda too.
    """
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            name = item.get("class_name")
            if isinstance(name, str) and name in CODE_CLASSES:
                found.add(name)
            if item.get("function_type") == "lambda":
                found.add("Lambda")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _refuse_lambda(path: Path, config_text: str) -> None:
    """Raise unless ``config_text`` is a JSON model configuration without code-carrying layers.

    Parsed, not searched as text: an escaped ``\\u004cambda`` is a Lambda too.
    """
    expected = ("a model without Lambda layers (Lambda runs arbitrary code; the lab loads models in safe mode)")
    try:
        config = json.loads(config_text)
    except (ValueError, RecursionError):
        raise LabInputError(path, expected, "a model configuration that is not JSON") from None
    found = _code_classes(config)
    if found:
        raise LabInputError(path, expected, f"{'/'.join(sorted(found))} in the model configuration")


META_MAX_BYTES = 1 << 20  # the lab's sidecars are a few kB; a bigger one is not ours
SHA256_HEX = frozenset("0123456789abcdef")


def _meta_type_error(meta_path: Path, key: str, expected: str, value) -> LabInputError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return LabInputError(meta_path, f"{key!r} {expected}", f"{type(value).__name__} {shown}")


def check_metadata(metadata, meta_path: str | os.PathLike) -> dict:
    """``metadata`` (a parsed sidecar) checked field by field; raises one line naming ``meta_path``.

    It must be a JSON object. The fields the lab reads must have their type:
    ``input_scale`` one of :data:`SCALES` (a typo is never taken as ``x/255``),
    ``sha256`` 64 lowercase hex digits, ``n_classes`` an integer >= 1,
    ``backdoor_class`` an integer >= 1 or null. Other fields are free.
    """
    meta_path = Path(meta_path)
    if not isinstance(metadata, dict):
        raise LabInputError(meta_path, "a JSON object (the lab's model metadata)", f"a JSON {_json_kind(metadata)}")
    scale = metadata.get("input_scale")
    if "input_scale" in metadata and (not isinstance(scale, str) or scale not in SCALES):
        raise _meta_type_error(meta_path, "input_scale", f"one of {sorted(SCALES)}", scale)
    digest = metadata.get("sha256")
    if "sha256" in metadata and not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= SHA256_HEX):
        raise _meta_type_error(meta_path, "sha256", "64 lowercase hex digits", digest)
    for key, minimum, nullable in (("n_classes", 1, False), ("backdoor_class", 1, True)):
        if key not in metadata or (nullable and metadata[key] is None):
            continue
        value = metadata[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _meta_type_error(meta_path, key, f"an integer >= {minimum}" + (" or null" if nullable else ""), value)
    return metadata


def _json_kind(value) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def read_metadata(path: str | os.PathLike) -> dict:
    """The lab's metadata saved beside a model (``<file>.lab.json``), or {} when there is none.

    Raises :class:`LabInputError` (one line naming the sidecar) for a sidecar
    that is a directory, too big, not UTF-8, not JSON, or whose fields do not
    have the types :func:`check_metadata` requires.
    """
    meta_path = Path(os.fspath(path) + META_SUFFIX)
    expected = "the lab's model metadata (a JSON object)"
    if not os.path.lexists(meta_path):
        return {}
    if not meta_path.is_file():
        found = "a broken symbolic link" if not meta_path.exists() else "a directory or special file"
        raise LabInputError(meta_path, expected, found)
    size = meta_path.stat().st_size
    if size > META_MAX_BYTES:
        raise LabInputError(meta_path, f"{expected} under {META_MAX_BYTES} bytes", f"{size} bytes")
    try:
        text = meta_path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise LabInputError(meta_path, expected + " in UTF-8", f"byte {error.start} not UTF-8") from None
    except OSError as error:
        raise LabInputError(meta_path, expected, f"an unreadable file ({error.strerror or error})") from None
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as error:
        raise LabInputError(meta_path, expected, f"invalid JSON ({error.msg} at line {error.lineno} "
                            f"column {error.colno})") from None
    except RecursionError:
        raise LabInputError(meta_path, expected, "JSON nested too deeply to read") from None
    except ValueError as error:  # e.g. an integer with more digits than Python converts
        raise LabInputError(meta_path, expected, f"unreadable JSON ({' '.join(str(error).split())[:120]})") from None
    return check_metadata(metadata, meta_path)


def _resolve_scale(path: Path, scale: str | None, metadata: dict, digest: str) -> tuple[str, str]:
    if scale is not None:
        if scale not in SCALES:
            raise LabInputError(None, f"--scale one of {sorted(SCALES)}", repr(scale))
        return scale, "given by the caller"
    if "input_scale" in metadata:
        return metadata["input_scale"], f"recorded in {path.name}{META_SUFFIX}"
    if digest in KNOWN_COURSE_FILES:
        name, known = KNOWN_COURSE_FILES[digest]
        return known, f"recorded SHA-256 of the {name}"
    if path.name == "bd_net.h5":
        return "raw", "Lab 3 convention (models/bd_net.h5 takes raw 0..255 pixels; override with scale=/--scale)"
    if path.name.endswith(("_bd_net.h5", "_bd_weights.h5")):
        return "unit", "2020 challenge convention (*_bd_net.h5 takes x/255; override with scale=/--scale)"
    raise LabInputError(path, "a known input scale: pass scale='raw' (0..255) or 'unit' (x/255), CLI --scale",
                        "no metadata, no recorded checksum and no course file name")


def load_model(path: str | os.PathLike, scale: str | None = None, verify: bool = True) -> LoadedModel:
    """Load a BadNet (or any lab model) from ``.keras``, full ``.h5`` or DeepID weights ``.h5``.

    Full models load with ``compile=False`` and ``safe_mode=True``; a weights
    file is loaded into :func:`build_deepid` with the class count read from
    the file. If the lab recorded a SHA-256 beside the model and ``verify``
    is true, the file must still match it. Raises :class:`LabInputError` in
    one line for a missing, damaged, foreign or tampered file.
    """
    path = Path(path)
    expected = "a Keras model (.h5/.keras) or DeepID weights file"
    if not path.exists():
        raise LabInputError(path, expected, "no such file")
    if not path.is_file():
        raise LabInputError(path, expected, "a directory" if path.is_dir() else "not a regular file")
    kind, attrs = ("keras", {}) if path.suffix == ".keras" else _h5_kind(path)
    if kind == "data":
        raise LabInputError(path, expected, "a data file (datasets 'data' and 'label'); did you swap --model and --clean?")
    if kind.startswith("unknown"):
        raise LabInputError(path, expected, f"an HDF5 file with keys {kind.split(':', 1)[1] or 'none'}")
    metadata = read_metadata(path)
    digest = sha256_file(path)
    if verify and metadata.get("sha256") and metadata["sha256"] != digest:
        raise LabInputError(path, f"SHA-256 {metadata['sha256'][:16]}... recorded in {path.name}{META_SUFFIX}",
                            f"{digest[:16]}... (the file changed since the lab saved it)")
    input_scale, source = _resolve_scale(path, scale, metadata, digest)
    if kind == "keras":
        model = _load_keras_archive(path, expected)
    elif kind == "full":
        config = attrs["model_config"]
        _refuse_lambda(path, config.decode("utf-8", errors="replace") if isinstance(config, bytes) else str(config))
        model = _load_full(path, expected)
    else:
        model = _load_deepid_weights(path, attrs, input_scale)
    return LoadedModel(model, input_scale, os.fspath(path), source, metadata)


def load_lab_model(model: str | os.PathLike | None, scale: str | None, root: str | os.PathLike | None = None,
                   parameter: str = "SCALE") -> LoadedModel:
    """The notebooks' BadNet: :func:`load_model` of the file their ``MODEL`` and ``SCALE`` parameters name.

    Notebooks only: where a parameter is None, the grader's switch for every
    notebook is read instead, ``$BADNET_LAB_MODEL`` / ``$BADNET_LAB_SCALE``
    (:func:`lab.paths.model_file`, :func:`lab.paths.input_scale`); ``model``
    is relative to ``root`` (the notebook's LAB_ROOT). Code that knows its
    file calls :func:`load_model` with the path and scale, which reads no
    environment. A model whose input scale cannot be established is refused
    with a message naming the notebook's ``SCALE`` parameter (``parameter``)
    and the variable.
    """
    from lab import paths

    path = paths.model_file(model, root)
    try:
        return load_model(path, scale=paths.input_scale(scale))
    except LabInputError as error:
        if "a known input scale" not in error.expected:
            raise
        raise LabInputError(path, f"a known input scale: set this notebook's {parameter} parameter to 'raw' "
                            f"(0..255) or 'unit' (x/255), or ${paths.SCALE_ENV} for every notebook",
                            error.found) from None


def _load_keras_archive(path: Path, expected: str):
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            size = archive.getinfo("config.json").file_size
            if size > CONFIG_MAX_BYTES:  # checked before anything is read: a config can be a decompression bomb
                raise LabInputError(path, f"a .keras archive whose config.json fits in {CONFIG_MAX_BYTES >> 20} MiB",
                                    f"config.json of {size / (1 << 20):.0f} MiB")
            _refuse_lambda(path, archive.read("config.json").decode("utf-8", errors="replace"))
    except (zipfile.BadZipFile, KeyError):
        raise LabInputError(path, "a .keras archive with config.json", "a damaged or foreign file") from None
    return _load_full(path, expected)


def _load_full(path: Path, expected: str):
    import keras

    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # keep the one-line contract
        raise LabInputError(path, expected, f"a model Keras cannot load ({str(error).splitlines()[0][:160]})") from None


def _load_deepid_weights(path: Path, attrs: dict, input_scale: str):
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in attrs["layer_names"]]
    missing = [n for n in ("conv_1", "conv_2", "conv_3", "conv_4", "fc_1", "fc_2", "output") if n not in names]
    if missing:
        raise LabInputError(path, "DeepID weights (layers conv_1..conv_4, fc_1, fc_2, output)", f"layers {names}")
    with h5py.File(path, "r") as handle:
        group = handle["output"]
        biases = [group[k] for k in _walk(group) if k.endswith("bias:0") or k.endswith("bias")]
        if not biases:
            raise LabInputError(path, "an 'output' layer with a bias", f"{list(_walk(group))}")
        n_classes = int(biases[0].shape[0])
    # Weight files carry no preprocessing: the scale is applied outside the model.
    model = build_deepid(n_classes, input_scale="unit", name=path.stem)
    try:
        model.load_weights(path)
    except Exception as error:
        raise LabInputError(path, "DeepID weights matching the course architecture",
                            f"weights Keras cannot load ({str(error).splitlines()[0][:160]})") from None
    return model


def _walk(group) -> list[str]:
    names: list[str] = []
    group.visit(names.append)
    return names


def save_model(model, path: str | os.PathLike, input_scale: str, description: str = "",
               force: bool = False, extra: dict | None = None) -> Path:
    """Save a Keras model (``.keras`` or legacy ``.h5``) and its metadata beside it.

    Writes ``<path>.lab.json`` with the input scale, the class count, what the
    model is (``description``), anything in ``extra`` and the file's SHA-256,
    which :func:`load_model` verifies. For ``.h5`` files the scale is also
    stored as the root attribute ``lab_input_scale``. Refuses to overwrite
    without ``force``.
    """
    if input_scale not in SCALES:
        raise ValueError(f"input_scale must be one of {sorted(SCALES)}, got {input_scale!r}")
    path = Path(path)
    check_writable(path, force)
    check_writable(Path(os.fspath(path) + META_SUFFIX), force)  # the sidecar is the user's file too
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    with warnings.catch_warnings():
        # Keras calls .h5 "legacy"; the course's eval.py loads exactly that format, so it is deliberate.
        warnings.simplefilter("ignore")
        _quiet_absl(model.save, path)
    if path.suffix == ".h5":
        with h5py.File(path, "a") as handle:
            handle.attrs["lab_input_scale"] = input_scale
    metadata = {"input_scale": input_scale, "n_classes": int(model.output_shape[-1]),
                "description": description, **(extra or {}), "sha256": sha256_file(path)}
    Path(os.fspath(path) + META_SUFFIX).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return path


def _quiet_absl(function, *args):
    """Run ``function`` with absl's WARNING-level log (Keras' legacy-format notice) muted."""
    import logging

    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return function(*args)
    finally:
        logger.setLevel(level)
