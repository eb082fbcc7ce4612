"""The one JSON sanitizer (:func:`lab.io.manifest.jsonable`) in each of its uses: manifests and ``--json``
outputs, a repaired model's sidecar, a cache entry's own JSON, the goal table's rows."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from lab.io.manifest import dumps, jsonable


class _Model:  # stands for what a defense's details may hold besides data (a model, a table)
    pass


def _details():
    return {"clean": np.float32(0.5), "epochs": np.int64(3), "history": [1, 2.5, np.int64(4)], "pair": (1, "x"),
            "missing": float("nan"), "far": float("inf"), "nested": {"worst": np.float64(-np.inf), "none": None},
            "small": np.arange(3), "large": np.zeros(100), "model": _Model(), 7: "seven", "rate": np.float64(2.5),
            "na": pd.NA}


def test_strict_json_has_no_nan_and_numpy_becomes_python():
    value = jsonable({k: v for k, v in _details().items() if k not in ("model", "large")})
    assert value == {"clean": 0.5, "epochs": 3, "history": [1, 2.5, 4], "pair": [1, "x"], "missing": None,
                     "far": None, "nested": {"worst": None, "none": None}, "small": [0, 1, 2], "7": "seven",
                     "rate": 2.5, "na": None}
    assert type(value["epochs"]) is int and type(value["rate"]) is float
    assert "NaN" not in dumps({"rate": float("nan")}) and json.loads(dumps([np.float32(1)])) == [1.0]


def test_drop_leaves_out_objects_and_large_arrays():
    value = jsonable(_details(), drop=True, array_limit=64)
    assert "model" not in value and "large" not in value and "na" not in value
    assert value["small"] == [0, 1, 2] and value["missing"] is None
    json.dumps(value, allow_nan=False)  # strict JSON as it is


def test_not_strict_keeps_nan_for_the_labs_own_files():
    value = jsonable({"missing": float("nan"), "clean": np.float32(0.25), "weights": np.ones(2)}, strict=False)
    assert math.isnan(value["missing"]) and value["clean"] == 0.25 and value["weights"] == [1.0, 1.0]


def test_flat_keeps_what_a_table_row_holds():
    value = jsonable(_details(), strict=False, flat=True)
    assert sorted(value, key=str) == ["7", "far", "missing", "pair", "rate"]
    assert value["pair"] == [1, "x"] and value["rate"] == 2.5 and math.isnan(value["missing"])


def test_table_cells_become_json_scalars():
    table = pd.DataFrame({"rate": [np.nan, 1.5], "count": pd.array([None, 2], dtype="Int64")})
    cells = [jsonable(row[column]) for _, row in table.iterrows() for column in table.columns]
    assert cells == [None, None, 1.5, 2]
