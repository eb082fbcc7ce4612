"""Shared fixtures: a tiny embedded default built once per test session, the real course files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# Hermetic: nothing of the environment the suite was started in chooses the lab's data, models, scale or cache
# (tests that need one of these set it themselves). Results are recomputed: the cache has its own tests.
for _name in [name for name in os.environ if name.startswith("BADNET_LAB_")]:
    del os.environ[_name]
os.environ["BADNET_LAB_CACHE"] = "off"

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "csaw"
FIXTURE_FILES = ("lab3_sunglasses_bd_weights.h5", "sunglasses_bd_weights.h5", "anonymous_1_bd_weights.h5",
                 "anonymous_2_bd_weights.h5", "multi_trigger_multi_target_bd_weights.h5")


# TensorFlow/absl C++ log lines (glog prefix: I/W/E/F, MMDD, time), oneDNN's notice, grappler, Jupyter's transport
# warning: none may reach a student (issue 10). Written independently of lab._quiet, which removes them.
LOG_NOISE = re.compile(r"absl::InitializeLog|oneDNN custom operations|^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+|grappler"
                       r"|Kernel is running over TCP", re.MULTILINE)


def assert_no_log_noise(text: str, where: str) -> None:
    """Fail naming ``where`` and the first offending line when ``text`` holds C++ log noise."""
    match = LOG_NOISE.search(text)
    if match:
        line = text[text.rfind("\n", 0, match.start()) + 1:].split("\n", 1)[0]
        pytest.fail(f"{where}: log noise {line[:200]!r}")


def tiny_config():
    """A default small enough for tests (~20 s) that still learns its backdoor."""
    from lab.synthetic.default import DefaultConfig
    from lab.attacks.training import TrainingConfig

    return DefaultConfig(n_identities=10, train_per_identity=40, valid_per_identity=8, test_per_identity=8,
                         training=TrainingConfig(clean_epochs=4, poisoned_epochs=4))


@pytest.fixture(scope="session")
def tiny_default(tmp_path_factory) -> Path:
    """A tiny embedded default (Lab 3 layout) under a temporary directory, built once."""
    from lab.synthetic.default import make_default

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
    """``python -m lab ARGS`` in a fresh process, output captured as text (the user's environment as it is:
    the lab itself keeps TensorFlow's C++ log lines out of stderr)."""
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, cwd=cwd,
                          env={k: v for k, v in os.environ.items() if not k.startswith("TF_CPP_")}, timeout=900)


CHALLENGE_IDENTITIES = 8  # classes of the tiny challenge below


@pytest.fixture(scope="session")
def made(tmp_path_factory) -> Path:
    """``make-challenge`` with three BadNets, by the command line (about 20 s alone; shared by the
    challenge and grader tests). Three epochs leave some BadNets below the floors: --force-weak."""
    out = tmp_path_factory.mktemp("challenge")
    result = run_cli("make-challenge", "--out", str(out), "--badnets", "3", "--seed", "5", "--identities",
                     str(CHALLENGE_IDENTITIES), "--epochs", "3", "--keep-work", "--quiet", "--force-weak")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "student folder (hand out)" in result.stdout
    assert "anyone who knows that seed can rebuild the hidden test data" in result.stdout  # --seed given
    return out


@pytest.fixture(scope="session")
def key(made) -> dict:
    from lab.course import challenge

    return challenge.read_answer_key(made / "grader")


@pytest.fixture(scope="session")
def reference(made, tmp_path_factory) -> dict[str, Path]:
    """The course's pruning GoodNet for every BadNet of ``made``, from the student folder alone."""
    from lab.course import challenge

    return challenge.reference_submission(made / "student", tmp_path_factory.mktemp("reference"), threshold=10)


def processes_with(marker: str, wait: float = 5.0) -> list[int]:
    """Live processes whose command line holds ``marker``, after up to ``wait`` seconds for them to go
    (a killed orphan is a zombie until init reaps it, which does not count)."""
    import time

    deadline = time.monotonic() + wait
    while True:
        alive = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker.encode() not in (entry / "cmdline").read_bytes():
                    continue
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state not in ("Z", "X"):
                alive.append(int(entry.name))
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


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
    assert_no_log_noise(result.stderr, "prune stderr")  # a whole sweep: TensorFlow imported, models run and saved
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
