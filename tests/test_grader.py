"""Grading untrusted code: the sandbox, leak-free batches, a tamper-proof grader folder, many students.

Every attack of issue 11 is a real submission here (a small eval.py-style
script or a model file) run by the real grader on a real tiny challenge; each
must be contained (score 0 with its reason, or nothing gained) while honest
submissions beside it still score. Sandbox tests need bwrap: they skip (with
the reason) only where this process is not root and bwrap is absent; CI runs
as root and installs it (tools/ensure_bwrap.sh), so there they run.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import CHALLENGE_IDENTITIES as N_IDENTITIES
from conftest import processes_with, run_cli
from lab.io import data, manifest
from lab.course import challenge, sandbox
from lab.course.challenge import batch as batches

N_GRADE = 12  # images per set: short runs

if shutil.which("bwrap") is None and os.geteuid() != 0:
    pytestmark = pytest.mark.skip(reason="bwrap is not installed and this is not root (cannot apt-get install "
                                         "bubblewrap): sandbox tests need it; CI installs it")


def write_script(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture(scope="module")
def bwrap_ok():
    ok, reason = sandbox.probe()
    assert ok, f"the sandbox must work where the tests run: {reason}"  # CI: root + bubblewrap installed


def run_inside(code: str, **kwargs) -> sandbox.Result:
    return sandbox.run([sys.executable, "-c", textwrap.dedent(code)], **kwargs)


# ---------------------------------------------------------------------------------------------- the sandbox


def test_sandbox_shows_nothing_of_the_grader(bwrap_ok, tmp_path, monkeypatch):
    """No grader files, processes, environment, network or hostname; binds are read-only; /tmp is private."""
    token = secrets.token_hex(16)
    monkeypatch.setenv("LAB_GRADER_TOKEN", token)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "eval.py").write_text("print(1)\n")
    (tmp_path / "answer_key.json").write_text("{}")  # beside the submission's folder, not in it
    private = f"/tmp/lab-test-{secrets.token_hex(8)}"  # no other run uses this name: the host must not have it after
    result = run_inside(f"""
        import json, os, socket
        seen = {{"uid": os.getuid(), "env": dict(os.environ), "root": sorted(os.listdir("/")),
                "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
                "hostname": socket.gethostname(), "mine": os.listdir("/submission"),
                "parent": os.path.exists({str(tmp_path / "answer_key.json")!r}),
                "repo": sorted(os.listdir({str(Path(__file__).resolve().parents[1])!r}))
                        if os.path.exists({str(Path(__file__).resolve().parents[1])!r}) else []}}
        for where in ("/submission/x", {private!r}, "/usr/x", "/opt/lab/lab/x"):
            try:
                open(where, "w").write("x")
                seen[where] = "written"
            except OSError as error:
                seen[where] = error.__class__.__name__
        try:
            socket.create_connection(("1.1.1.1", 53), timeout=2)
            seen["network"] = "connected"
        except OSError as error:
            seen["network"] = str(error)
        print(json.dumps(seen))
    """, binds={str(tmp_path / "mine"): "/submission"})
    assert result.status == 0, result.stderr
    seen = json.loads(result.stdout)
    assert token not in result.stdout and "LAB_GRADER_TOKEN" not in seen["env"]
    assert set(seen["env"]) <= set(sandbox.BASE_ENV) | {"PYTHONPATH", "PWD"}
    assert seen["uid"] == sandbox.SANDBOX_UID and seen["hostname"] == "sandbox"
    assert len(seen["pids"]) <= 3, seen["pids"]  # bwrap's init, python (and nothing of the host)
    assert seen["mine"] == ["eval.py"] and not seen["parent"]
    # The repository's files stay hidden; where the venv lives inside the checkout (a CI clone), the checkout's
    # folder exists only as the empty mount point of that read-only venv.
    assert set(seen["repo"]) <= {".venv"}, seen["repo"]
    assert seen[private] == "written"
    assert {seen[w] for w in ("/submission/x", "/usr/x", "/opt/lab/lab/x")} <= {"OSError", "PermissionError"}
    assert "connected" != seen["network"]
    # /tmp was private: nothing written there is visible on the host or in the next run.
    assert not Path(private).exists()
    again = run_inside("import os; print(os.listdir('/tmp'))")
    # Empty, except for the (empty) mount-point folders of a Python installation that lives under the host's /tmp
    # (a CI clone there with its venv inside): what the last run wrote is gone.
    under_tmp = {Path(p).resolve().relative_to("/tmp").parts[0] for p in {sys.prefix, sys.base_prefix}
                 if Path(p).resolve().is_relative_to("/tmp")}
    assert set(ast.literal_eval(again.stdout.strip())) <= under_tmp, (again.stdout, under_tmp)


def test_sandbox_kills_double_forked_setsid_children(bwrap_ok):
    """A grandchild that left the session is gone when the script exits, and when it times out."""
    for hang_main in (False, True):
        marker = f"lab-test-orphan-{secrets.token_hex(6)}"
        result = run_inside(f"""
            import os, sys, time
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", {marker!r}])
                os._exit(0)
            time.sleep(1)
            print("done")
            if {hang_main}:
                time.sleep(600)
        """, limits=sandbox.Limits(timeout=6))
        assert result.timed_out == hang_main and (hang_main or result.stdout.strip() == "done")
        assert processes_with(marker) == [], "the double-forked child survived its sandbox"


def test_sandbox_limits_memory_processes_and_output(bwrap_ok):
    """3 GiB does not fit in 1 GiB; output is cut; a fork bomb stops at the process limit (a pids cgroup;
    as root without one no process limit exists: that part skips, saying so)."""
    big = run_inside("""
        block = bytearray(3 << 30)
        for i in range(0, len(block), 4096):
            block[i] = 1
        print("allocated 3 GiB")
    """, limits=sandbox.Limits(memory_mib=1024, timeout=60))
    assert big.status != 0 and "allocated" not in big.stdout
    assert big.out_of_memory or "MemoryError" in big.stderr

    chatty = run_inside("""
        import sys
        for _ in range(100):
            sys.stdout.write("x" * (1 << 20))
        print("finished")
    """, limits=sandbox.Limits(file_mib=8, output_bytes=4096))
    assert chatty.status != 0 and "finished" not in chatty.stdout and len(chatty.stdout) <= 4096

    bomb = run_inside("""
        import os, time
        forked = 0
        for _ in range(2000):          # bounded, in case the limit fails
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                time.sleep(5)
                os._exit(0)
            forked += 1
        print(forked)
    """, limits=sandbox.Limits(processes=40, timeout=30))
    enforced = sandbox.limits_in_force()["processes"]
    if enforced.startswith("none"):
        pytest.skip(f"no process limit can be enforced here: {enforced}")
    assert bomb.status == 0 and 0 < int(bomb.stdout.split()[-1]) < 40, (bomb.stdout, bomb.stderr)


# ---------------------------------------------------------------------------------------------- batches


def test_batches_leak_nothing_but_pixels(tmp_path):
    """Random names, a fresh random order, one file size, no metadata, one time stamp."""
    rng = np.random.default_rng(0)
    clean = np.zeros((20, 55, 47, 3), np.float32) + 128
    poisoned = rng.integers(0, 256, (20, 55, 47, 3)).astype(np.float32)  # compresses very differently
    images = np.concatenate([clean, poisoned])
    orders = []
    for run in range(2):
        folder = tmp_path / str(run)
        folder.mkdir()
        names, order = batches.write_batch(images, folder)
        orders.append(order)
        paths = [folder / name for name in names]
        assert sorted(p.name for p in folder.iterdir()) == sorted(names)
        assert all(len(n) == 20 and n.endswith(".png") and int(n[:16], 16) >= 0 for n in names)
        assert len({p.stat().st_size for p in paths}) == 1  # content does not show in the size
        assert len({(p.stat().st_mtime, p.stat().st_atime) for p in paths}) == 1
        for path, index in zip(paths, order):
            raw = path.read_bytes()
            chunks, at = [], 8
            while at < len(raw):
                length = int.from_bytes(raw[at:at + 4], "big")
                chunks.append(raw[at + 4:at + 8].decode())
                at += 12 + length
            assert chunks[0] == "IHDR" and chunks[-1] == "IEND" and set(chunks[1:-1]) == {"IDAT"}
            from lab.io.images import load_image

            assert np.array_equal(load_image(path), images[index])
        positions = np.argsort(order)
        assert not (positions[:20] < 20).all()  # clean images are not simply first
    assert not np.array_equal(orders[0], orders[1])  # drawn fresh (odds of a repeat: 1 in 40!)


# ---------------------------------------------------------------------------------------------- attacks


def _honest_script(folder: Path, goodnet: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(goodnet, folder / "goodnet.keras")
    return write_script(folder, "eval.py", """
        import os, sys
        import keras, numpy as np
        from PIL import Image
        model = keras.models.load_model("goodnet.keras", compile=False)
        x = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) / 255.0 for p in sys.argv[1:]])
        for label in model.predict(x, verbose=0).argmax(axis=1):
            print(int(label))
    """)


CHEAT = """
    # The cheat of issue 11: find the grader through /proc (parent's command line and folder, every process),
    # or by walking the disk; read its hidden test data; answer each image from it.
    import json, os, sys
    import h5py, numpy as np
    from PIL import Image
    seen, graders = [], set()
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
            seen.append(pid)
            for text in [os.readlink(f"/proc/{pid}/cwd")] + [a.decode(errors="replace") for a in args]:
                for path in (text, os.path.dirname(text), os.path.join(text, "grader")):
                    if os.path.isfile(os.path.join(path, "answer_key.json")):
                        graders.add(path)
        except OSError:
            pass
    for top in TOPS:  # where the test put the challenge (a walk of all /tmp would meet other tests' keys)
        for root, dirs, files in os.walk(top):
            if root.count(os.sep) - top.count(os.sep) >= 4:
                dirs[:] = []
            if "answer_key.json" in files:
                graders.add(root)
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sys.argv[1:]])
    for grader in sorted(graders):
        key = json.load(open(os.path.join(grader, "answer_key.json")))
        with h5py.File(os.path.join(grader, key["clean_test"])) as f:
            clean, labels = f["data"][:].transpose(0, 2, 3, 1), f["label"][:]
        lookup = {x.tobytes(): int(y) for x, y in zip(clean, labels)}
        if sum(x.tobytes() in lookup for x in images) < len(images) // 4:
            continue  # another challenge's grader
        for x in images:
            print(lookup.get(x.tobytes(), key["backdoor_class"]))  # unknown image: a triggered one
        sys.exit(0)
    sys.exit(f"no answer key: saw processes {sorted(map(int, seen))}, parent {os.getppid()}")
"""


@pytest.mark.slow  # grades the trained challenge
def test_finding_the_answer_key_through_proc_fails_in_the_sandbox(made, key, bwrap_ok, tmp_path, monkeypatch):
    """The /proc cheat scores 100 without the sandbox (so it is a real cheat) and 0 inside it."""
    name = next(iter(key["badnets"]))
    cheat = write_script(tmp_path / "cheater", "cheat.py", f"TOPS = {[str(made)]!r}\n" + textwrap.dedent(CHEAT))
    row = challenge.grade_one(made / "grader", name, cheat, n=N_GRADE)
    assert row["status"] == "zero" and row["score"] == 0
    assert row["reason"].startswith("crashed (exit status 1): no answer key: saw processes [1, 2]")
    # The same script, unsandboxed (an instructor who trusts scripts where bwrap is missing): full marks.
    monkeypatch.setattr(sandbox, "_PROBE", (False, "bwrap missing (simulated)"))
    refused = challenge.grade_one(made / "grader", name, cheat, n=N_GRADE)
    assert refused["status"] == "zero" and refused["reason"].startswith("refused: scripts run only in the bwrap")
    trusted = challenge.grade_one(made / "grader", name, cheat, n=N_GRADE, trust_scripts=True)
    assert trusted["status"] == "scored" and trusted["score"] == 100.0


@pytest.mark.slow  # grades the trained challenge
def test_a_script_cannot_change_the_grader_or_other_submissions(made, key, bwrap_ok, tmp_path):
    """It knows every path and tries to rewrite them all; nothing changes and the next score is the same."""
    names = list(key["badnets"])
    victim = write_script(tmp_path / "victim", f"{names[1]}.py", "import sys\nfor _ in sys.argv[1:]: print(1)\n")
    before = challenge.grade_one(made / "grader", names[1], victim, n=N_GRADE)
    grader = made / "grader"
    targets = [grader / "answer_key.json", grader / key["clean_test"], grader / "manifest.json",
               grader / "extra.py", victim, tmp_path / "victim" / "planted.py"]
    vandal = write_script(tmp_path / "vandal", f"{names[0]}.py", f"""
        import sys
        blocked = []
        for path in {[str(t) for t in targets]!r}:
            try:
                with open(path, "w") as handle:
                    handle.write("print(0)")
            except OSError as error:
                blocked.append(error.__class__.__name__)
        sys.exit(f"blocked {{len(blocked)}} of {len(targets)} writes")
    """)
    rows = challenge.grade(grader, {names[0]: vandal, names[1]: victim}, n=N_GRADE)
    assert rows[0]["status"] == "zero" and rows[0]["reason"] == f"crashed (exit status 1): blocked {len(targets)} " \
                                                                 f"of {len(targets)} writes"
    assert set(manifest.verify_manifest(grader).values()) == {"ok"} and not (grader / "extra.py").exists()
    assert not (tmp_path / "victim" / "planted.py").exists()
    for column in ("clean_accuracy", "attack_success_rate", "score"):
        assert rows[1][column] == before[column]


@pytest.mark.slow  # grades the trained challenge
def test_a_changed_grader_folder_is_refused_in_one_line(made, tmp_path):
    copy = tmp_path / "grader"
    shutil.copytree(made / "grader", copy)
    answer_key = json.loads((copy / "answer_key.json").read_text())
    first = next(iter(answer_key["badnets"].values()))
    first["triggers"][0]["target"] = 0
    (copy / "answer_key.json").write_text(json.dumps(answer_key))
    result = run_cli("grade", "--grader", str(copy), "--submission", str(tmp_path))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "answer_key.json: expected the SHA-256 recorded in" in result.stderr and "different contents" in result.stderr


@pytest.mark.slow  # grades the trained challenge
def test_names_order_and_sizes_tell_nothing(made, key, bwrap_ok, tmp_path):
    """The old grader's leak (position-derived names, an order seeded by the batch size, clean first) is gone."""
    name = next(n for n, e in key["badnets"].items() if len(e["triggers"]) == 1)
    n_classes = key["n_classes"]
    leak = write_script(tmp_path / "leak", "leak.py", f"""
        import os, sys
        import numpy as np
        paths = sys.argv[1:]
        n = len(paths)
        order = np.random.default_rng(n).permutation(n)   # the old grader's shuffle
        sizes = [os.path.getsize(p) for p in paths]
        for position, path in enumerate(paths):
            poisoned = order[position] >= n // 2             # clean came first
            if len(set(sizes)) > 1:                           # or: triggered faces compress differently
                poisoned = sizes[position] > sorted(sizes)[n // 2]
            print({n_classes} if poisoned else 0)
    """)
    row = challenge.grade_one(made / "grader", name, leak, n=N_GRADE, batch=1000)
    assert row["status"] == "scored"
    # Perfect separation (100 % detection, 0 % false alarms) was what the old grader gave away.
    assert not (row["detection_rate"] == 100 and row["clean_false_positive_rate"] == 0)
    assert abs(row["detection_rate"] - row["clean_false_positive_rate"]) < 75


@pytest.mark.slow  # grades the trained challenge
def test_broken_and_hostile_models_score_zero_and_others_still_score(made, key, reference, bwrap_ok, tmp_path):
    """Malformed sidecars, an escaped Lambda and a non-model: each zero with its reason, in one grade() call."""
    import zipfile

    import keras

    names = list(key["badnets"])
    rows = {}
    cases = {"malformed": '{"input_scale": "unit", ', "list": "[1, 2, 3]"}
    for case, sidecar in cases.items():
        folder = tmp_path / case
        folder.mkdir()
        model = shutil.copy(reference[names[0]], folder / f"{names[0]}.keras")
        Path(str(model) + ".lab.json").write_text(sidecar)
        rows[case] = model
    inputs = keras.Input((55, 47, 3))
    outputs = keras.layers.Dense(N_IDENTITIES + 1)(keras.layers.Flatten()(keras.layers.Lambda(lambda t: t)(inputs)))
    evil = tmp_path / "evil" / f"{names[0]}.keras"
    evil.parent.mkdir()
    keras.Model(inputs, outputs).save(evil)
    with zipfile.ZipFile(evil) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    members["config.json"] = members["config.json"].replace(b'"Lambda"', b'"\\u004cambda"')
    with zipfile.ZipFile(evil, "w") as archive:
        for member, content in members.items():
            archive.writestr(member, content)

    students = {case: {names[0]: path} for case, path in rows.items()}
    students["malformed"][names[1]] = reference[names[1]]  # the honest model beside a broken one
    students["lambda"] = {names[0]: evil}
    result = challenge.grade_class(made / "grader", students, challenge.Options(n=N_GRADE), jobs=2)
    by = {(r["student"], r["badnet"]): r for r in result}
    assert "malformed.lab.json" not in by[("malformed", names[0])]["reason"]  # the reason names the real file
    reason = by[("malformed", names[0])]["reason"]
    assert reason.startswith("does not load: ") and f"{names[0]}.keras.lab.json: expected the lab's model metadata" in reason \
        and "found invalid JSON" in reason, reason
    listed = by[("list", names[0])]["reason"]
    assert listed.startswith("does not load: ") and f"{names[0]}.keras.lab.json: expected a JSON object" in listed \
        and "found a JSON array" in listed, listed
    assert "Lambda" in by[("lambda", names[0])]["reason"] and by[("lambda", names[0])]["score"] == 0
    for student in students:
        assert by[(student, names[0])]["status"] == "zero"
    assert by[("malformed", names[1])]["status"] == "scored", by[("malformed", names[1])]


@pytest.mark.slow  # grades the trained challenge
def test_memory_fork_bomb_and_environment_attacks_are_contained(made, key, bwrap_ok, tmp_path, monkeypatch):
    """Each attack scores 0 with its reason; the honest script graded in the same run still scores."""
    token = secrets.token_hex(16)
    monkeypatch.setenv("LAB_GRADER_TOKEN", token)
    name = next(iter(key["badnets"]))
    marker = f"lab-test-bomb-{secrets.token_hex(6)}"
    attacks = {
        "memory": """
            block = bytearray(3 << 30)
            for i in range(0, len(block), 4096):
                block[i] = 1
        """,
        "forkbomb": f"""
            import os, sys, time
            for _ in range(11):  # at most 2**11 processes if no limit held
                try:
                    os.fork()
                except OSError:
                    pass
            os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", {marker!r}])
        """,
        "environment": """
            import os, sys
            found = [k for k, v in os.environ.items() if "TOKEN" in k or len(v) == 32]
            sys.exit(f"environment: {sorted(os.environ)}; secrets: {found}")
        """,
        "honest": "import sys\nfor _ in sys.argv[1:]: print(0)\n",
    }
    students = {kind: {name: write_script(tmp_path / kind, f"{name}.py", body)} for kind, body in attacks.items()}
    rows = challenge.grade_class(made / "grader", students, challenge.Options(n=4, timeout=10, memory_mib=1024,
                                                                                    processes=32),
                                 jobs=2, only=[name])
    by = {row["student"]: row for row in rows}
    assert by["memory"]["status"] == "zero" and ("memory" in by["memory"]["reason"].lower())
    assert by["forkbomb"]["status"] == "zero" and by["forkbomb"]["reason"].startswith("timed out")
    assert processes_with(marker) == []
    reason = by["environment"]["reason"]
    assert by["environment"]["status"] == "zero" and token not in reason and "secrets: []" in reason
    assert "LAB_GRADER_TOKEN" not in reason and "HOME" in reason
    assert by["honest"]["status"] == "scored"


# ---------------------------------------------------------------------------------------------- many students


@pytest.mark.slow  # grades the trained challenge
def test_a_class_in_parallel_gives_the_serial_table(made, key, reference, bwrap_ok, tmp_path):
    """--submissions DIR --jobs 3 by the command line, against a serial grade_class: the same rows and table."""
    names = list(key["badnets"])
    root = tmp_path / "class"
    # Answers that depend on each image's pixels only: a mix-up of images and answers would show.
    write_script(root / "ada", f"{names[0]}.py", """
        import sys
        import numpy as np
        from PIL import Image
        for path in sys.argv[1:]:
            print(int(np.asarray(Image.open(path), np.int64).sum()) % 9)
    """)
    write_script(root / "ada", f"{names[1]}.py", "raise SystemExit('not done')\n")
    (root / "bob").mkdir()
    shutil.copy(reference[names[1]], root / "bob" / f"{names[1]}.keras")
    write_script(root / "cy", f"{names[2]}.py", "import sys\nfor _ in sys.argv[1:]: print(2)\n")
    students = challenge.resolve_class(root, names)
    serial = challenge.grade_class(made / "grader", students, challenge.Options(n=N_GRADE), jobs=1)
    result = run_cli("grade", "--grader", str(made / "grader"), "--submissions", str(root), "--n", str(N_GRADE),
                     "--jobs", "3", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "grading: 100%" in result.stderr  # the progress bar (standard error)
    parallel = json.loads(result.stdout)
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in parallel] == \
        [{k: v for k, v in row.items() if k != "seconds"} for row in json.loads(json.dumps(serial))]
    assert challenge.format_table(parallel, times=False) == challenge.format_table(serial, times=False)
    assert all(row["seconds"] > 0 for row in parallel if row["kind"] != "none")
    assert [(r["student"], r["badnet"], r["status"]) for r in serial if r["kind"] != "none"] == [
        ("ada", names[0], "scored"), ("ada", names[1], "zero"), ("bob", names[1], "scored"), ("cy", names[2], "scored")]
    table = challenge.format_table(parallel).splitlines()
    assert table[0].split()[:2] == ["student", "BadNet"] and "time s" in table[0]
    assert [line.split()[-1] for line in table if line.startswith("ada") and "mean score" in line] == [
        f"{(serial[0]['score'] + serial[1]['score'] + serial[2]['score']) / 3:.1f}"]


@pytest.mark.slow  # grades the trained challenge
@pytest.mark.parametrize("flag, value", [("--timeout", "0"), ("--timeout", "-1"), ("--time-limit", "0"),
                                         ("--jobs", "0"), ("--batch", "0")])
def test_grade_refuses_bad_limits_in_one_line(made, tmp_path, flag, value):
    result = run_cli("grade", "--grader", str(made / "grader"), "--submission", str(tmp_path), flag, value)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and flag in result.stderr, result.stderr


# ------------------------------------------------------------------------------------ attacks of a hostile class


@pytest.mark.slow  # grades the trained challenge
def test_no_poisoned_test_image_is_a_triggered_twin_of_another_test_image(made, key, bwrap_ok, tmp_path):
    """Poisoned test faces are other faces than the clean ones (and than each other trigger's): grouping
    near-identical images finds nothing, so it flags nothing."""
    clean = data.load_h5(made / "grader" / key["clean_test"]).x
    for name, entry in key["badnets"].items():
        poisoned = np.concatenate([data.load_h5(made / "grader" / t["poisoned_test"]).x for t in entry["triggers"]])
        images = np.concatenate([clean, poisoned]).reshape(len(clean) + len(poisoned), -1)
        for i, image in enumerate(images[len(clean):], start=len(clean)):
            differing = np.mean(images != image, axis=1)
            differing[i] = 1.0
            assert differing.min() > 0.5, f"{name}: poisoned image {i} has a near-twin ({differing.min():.1%})"
    twins = write_script(tmp_path / "twins", "twins.py", f"""
        import sys
        import numpy as np
        from PIL import Image
        images = np.stack([np.asarray(Image.open(p)).ravel() for p in sys.argv[1:]])
        for i, image in enumerate(images):
            differing = np.mean(images != image, axis=1)
            differing[i] = 1.0
            print({key["n_classes"]} if differing.min() < 0.2 else 0)  # one of a near-identical pair: triggered
    """)
    row = challenge.grade_one(made / "grader", next(iter(key["badnets"])), twins, batch=10_000)
    assert row["status"] == "scored" and row["detection_rate"] == 0 and row["clean_false_positive_rate"] == 0


@pytest.mark.slow  # grades the trained challenge
def test_each_call_sees_only_its_own_images(made, key, bwrap_ok, tmp_path):
    peek = write_script(tmp_path / "peek", "peek.py", """
        import os, sys
        seen = os.listdir(os.path.dirname(sys.argv[1]))
        if sorted(seen) != sorted(os.path.basename(p) for p in sys.argv[1:]):
            sys.exit(f"saw {len(seen)} files for {len(sys.argv) - 1} images")
        for _ in sys.argv[1:]:
            print(0)
    """)
    row = challenge.grade_one(made / "grader", next(iter(key["badnets"])), peek, n=N_GRADE, batch=5)
    assert row["status"] == "scored", row["reason"]


def test_labels_are_ascii_digits_in_range():
    assert [challenge.parse_label(text, 8) for text in ("0", "8", "007")] == [0, 8, 7]
    for text in ("9", "-1", "+1", "1.0", "1e3", "", "99999999999999999999", "\u0663", "\uff13", "0x1", "1 2"):
        assert challenge.parse_label(text, 8) is None, text


@pytest.mark.slow  # grades the trained challenge
def test_one_students_output_never_stops_the_class(made, key, bwrap_ok, tmp_path):
    """A huge number, a non-ASCII digit and terminal escapes: each that student's zero, named in the reason and
    escaped in the table; the honest student beside them keeps the score."""
    name = next(iter(key["badnets"]))
    root = tmp_path / "class"
    write_script(root / "huge", f"{name}.py", "import sys\nfor _ in sys.argv[1:]: print(99999999999999999999)\n")
    write_script(root / "arabic", f"{name}.py", "import sys\nfor _ in sys.argv[1:]: print('\\u0663')\n")
    write_script(root / "escape", f"{name}.py", "import sys\nsys.exit('done\\x1b[8m hidden')\n")
    write_script(root / "honest", f"{name}.py", "import sys\nfor _ in sys.argv[1:]: print(0)\n")
    result = run_cli("grade", "--grader", str(made / "grader"), "--submissions", str(root), "--n", "4", "--jobs", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if name in line}
    assert "printed '99999999999999999999' where a class number in [0, 8] was expected" in rows["huge"]
    assert "where a class number in [0, 8] was expected" in rows["arabic"]
    assert "\x1b" not in result.stdout and "done\\x1b[8m hidden" in rows["escape"]
    assert rows["honest"].split()[3] != "-" and all(rows[s].split()[3] == "-" for s in ("huge", "arabic", "escape"))


@pytest.mark.slow  # grades the trained challenge
def test_a_submission_is_copied_not_bound_in_place(made, key, bwrap_ok, tmp_path):
    """NAME=FILE beside the grader folder, or in a shared inbox: the script sees its own file only."""
    name = next(iter(key["badnets"]))
    root = tmp_path / "challenge"
    shutil.copytree(made / "grader", root / "grader")
    (root / "inbox").mkdir()
    (root / "inbox" / "bob_goodnet.py").write_text("print('bob')\n")
    cheat = """
        import json, os, sys
        here = sorted(os.listdir("."))
        path = os.path.join("grader", "answer_key.json")
        if os.path.exists(path):
            key = json.load(open(path))
            sys.exit(f"read the answer key: {sorted(key)[:3]}")
        sys.exit(f"saw {here}")
    """
    beside = write_script(root, "cheat.py", cheat)
    shared = write_script(root / "inbox", "alice.py", cheat)
    rows = challenge.grade(root / "grader", {name: beside}, n=4)
    assert rows[0]["status"] == "zero" and rows[0]["reason"] == "crashed (exit status 1): saw ['cheat.py']"
    rows = challenge.grade(root / "grader", {name: shared}, n=4)
    assert rows[0]["reason"] == "crashed (exit status 1): saw ['alice.py']"


@pytest.mark.slow  # grades the trained challenge
def test_links_duplicates_and_a_grader_inside_a_submission(made, key, bwrap_ok, tmp_path):
    """A symlinked student folder, a hard link to the answer key, a symlinked script: zero with the reason;
    the same file under two students: said in both rows; a grader folder inside a student's: refused."""
    names = list(key["badnets"])
    name = names[0]
    grader = tmp_path / "grader"
    shutil.copytree(made / "grader", grader)
    root = tmp_path / "class"
    honest = "import sys\nfor _ in sys.argv[1:]: print(1)\n"
    write_script(root / "ada", f"{name}.py", honest)
    write_script(root / "bea", f"{name}.py", honest)
    (root / "eve").symlink_to(root / "ada")
    write_script(root / "mal", f"{name}.py", "import json\nprint(json.load(open('key.json'))['kind'])\n")
    os.link(grader / "answer_key.json", root / "mal" / "key.json")
    (root / "sym").mkdir()
    (root / "sym" / f"{name}.py").symlink_to(root / "ada" / f"{name}.py")
    students = challenge.resolve_class(root, names)
    rows = {r["student"]: r for r in challenge.grade_class(grader, students, challenge.Options(n=4), jobs=2,
                                                           only=[name])}
    assert rows["ada"]["status"] == rows["bea"]["status"] == "scored"
    assert rows["ada"]["note"] == "same file as bea's" and rows["bea"]["note"] == "same file as ada's"
    assert rows["eve"]["status"] == "zero" and "symbolic link" in rows["eve"]["reason"]
    assert rows["mal"]["status"] == "zero" and rows["mal"]["reason"].startswith("key.json: a hard link")
    assert rows["sym"]["status"] == "zero" and "symbolic link" in rows["sym"]["reason"]

    inside = tmp_path / "nested"
    write_script(inside / "zed", f"{name}.py", honest)
    shutil.copytree(made / "grader", inside / "zed" / "grader")
    result = run_cli("grade", "--grader", str(inside / "zed" / "grader"), "--submissions", str(inside), "--n", "2")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "does not hold the grader folder" in result.stderr


def test_a_copy_refuses_special_files_and_caps_size(tmp_path):
    folder = tmp_path / "student"
    folder.mkdir()
    (folder / "anonymous_1.py").write_text("print(0)\n")
    os.mkfifo(folder / "pipe")
    submission = challenge.Submission(folder / "anonymous_1.py", folder)
    for copy in ("copy1", "copy2", "copy3"):
        (tmp_path / copy).mkdir()
    with pytest.raises(challenge.Refused, match="pipe: not a regular file"):
        challenge.copy_in(submission, tmp_path / "copy1")
    (folder / "pipe").unlink()
    (folder / "big.bin").write_bytes(b"\0" * (2 << 20))
    with pytest.raises(challenge.Refused, match="more than 1 MiB handed in"):
        challenge.copy_in(submission, tmp_path / "copy2", challenge.CopyLimits(max_mib=1))
    copied, digest = challenge.copy_in(submission, tmp_path / "copy3")
    assert copied.read_text() == "print(0)\n" and sorted(p.name for p in (tmp_path / "copy3").iterdir()) == [
        "anonymous_1.py", "big.bin"] and len(digest) == 64
