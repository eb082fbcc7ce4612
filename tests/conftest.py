"""Shared fixtures: a tiny embedded default built once per test session, the real course files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "csaw"
FIXTURE_FILES = ("lab3_sunglasses_bd_weights.h5", "sunglasses_bd_weights.h5", "anonymous_1_bd_weights.h5",
                 "anonymous_2_bd_weights.h5", "multi_trigger_multi_target_bd_weights.h5")


def tiny_config():
    """A default small enough for tests (~20 s) that still learns its backdoor."""
    from lab.default import DefaultConfig
    from lab.training import TrainingConfig

    return DefaultConfig(n_identities=10, train_per_identity=40, valid_per_identity=8, test_per_identity=8,
                         training=TrainingConfig(clean_epochs=4, poisoned_epochs=4))


@pytest.fixture(scope="session")
def tiny_default(tmp_path_factory) -> Path:
    """A tiny embedded default (Lab 3 layout) under a temporary directory, built once."""
    from lab.default import make_default

    out = tmp_path_factory.mktemp("default")
    make_default(out, seed=7, progress=False, config=tiny_config(), write_train=True)
    return out


@pytest.fixture(scope="session")
def course_fixtures() -> Path:
    """The real course weight files in ../shared/fixtures/csaw (skips when absent)."""
    missing = [name for name in FIXTURE_FILES if not (FIXTURES / name).exists()]
    if missing:
        pytest.skip(f"real course fixtures not available: {FIXTURES} lacks {', '.join(missing)} "
                    "(they live in the project's read-only ../shared, absent outside the course workspace)")
    return FIXTURES


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m lab ARGS`` in a fresh process, output captured as text."""
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=900)


# ---------------------------------------------------------------- the command line on small real files


@pytest.fixture(scope="session")
def cli_files(tmp_path_factory) -> dict[str, Path]:
    """A tiny BadNet saved by the lab and clean/poisoned validation files in the course format."""
    import numpy as np

    import small_models
    from lab.io import data, models

    root = tmp_path_factory.mktemp("cli")
    clean, poisoned = small_models.datasets()
    for name, dataset in {"valid": clean, "bd_valid": poisoned}.items():
        pixels = np.rint(dataset.x).astype(np.uint8).transpose(0, 3, 1, 2)  # NHWC float -> course NCHW uint8
        data.save_h5(root / f"{name}.h5", pixels, dataset.y)
    models.save_model(small_models.trained_deepid().model, root / "badnet.h5", "unit", "tiny test BadNet")
    return {"root": root, "model": root / "badnet.h5", "valid": root / "valid.h5", "bd_valid": root / "bd_valid.h5"}


@pytest.fixture(scope="session")
def cli_pruned(cli_files) -> dict:
    """``prune --json`` on ``cli_files`` in a fresh process, as a student or grader runs it."""
    import json

    out = cli_files["root"] / "pruned"
    result = run_cli("prune", "--model", str(cli_files["model"]), "--valid", str(cli_files["valid"]),
                     "--poisoned-valid", str(cli_files["bd_valid"]), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    return {"out": out, "report": json.loads(result.stdout.strip().splitlines()[-1])}


@pytest.fixture
def lab_main(capsys):
    """``lab_main(*args) -> (status, stdout, stderr)``: ``python -m lab ARGS`` in this process."""
    from lab import cli

    def run(*args) -> tuple[int, str, str]:
        status = cli.main([str(arg) for arg in args])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run
