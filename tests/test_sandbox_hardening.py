"""Sandbox hardening (issue 23, item 5): the kernel surface a sandboxed submission can reach, and memory limits
everywhere.

Threat model: a submission that is already inside bwrap tries to reach kernel code that unprivileged processes
rarely need and that local privilege escalations keep coming from: new user namespaces (in one it holds every
capability, so mounts, netfilter and the like open up), io_uring, eBPF, keyrings, perf events, userfaultfd
(which makes kernel races easy to win), ptrace. Every check below runs the real sandbox (bwrap, real processes)
and calls the system calls for real; they skip only where bwrap is absent and this is not root, like
tests/test_grader.py. The cgroup v2 strategy is checked against a folder tree laid out as the kernel lays out
cgroup2 (this machine and CI have cgroup v1), with the real code writing the real files.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from lab.course import sandbox

if shutil.which("bwrap") is None and os.geteuid() != 0:
    pytestmark = pytest.mark.skip(reason="bwrap is not installed and this is not root (cannot apt-get install "
                                         "bubblewrap): sandbox tests need it; CI installs it")

# System call numbers of the two architectures the lab supports on Linux.
SYSCALLS = {"x86_64": {"clone": 56, "mount": 165, "keyctl": 250, "perf_event_open": 298, "bpf": 321},
            "aarch64": {"clone": 220, "mount": 40, "keyctl": 219, "perf_event_open": 241, "bpf": 280}}
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
SIGCHLD = 17

# Runs inside: each probe prints what the call answered ("ok" or the errno's name). Raw system calls through
# ctypes so nothing of Python's wrappers (os.unshare needs 3.12) stands between the script and the kernel.
PROBES = """
import ctypes, errno, json, os, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
NR = {nr}
seen = {{}}

def answer(result):
    return "ok" if result >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

def raw(nr, *args):
    ctypes.set_errno(0)
    return answer(libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args]))

def in_child(flags):
    # unshare() in a child process: a namespace that works must not change the probing process itself.
    pid = os.fork()
    if pid == 0:
        os._exit(0 if libc.unshare(flags) == 0 else ctypes.get_errno())
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return "ok" if status == 0 else errno.errorcode.get(status, str(status))

seen["unshare user"] = in_child({CLONE_NEWUSER})
seen["unshare net"] = in_child({CLONE_NEWNET})
seen["unshare user+net"] = in_child({CLONE_NEWUSER} | {CLONE_NEWNET})
seen["unshare user+mount"] = in_child({CLONE_NEWUSER} | {CLONE_NEWNS})
if os.path.exists("/usr/bin/unshare"):
    seen["unshare -U"] = subprocess.run(["/usr/bin/unshare", "-U", "true"], capture_output=True).returncode
# clone() with CLONE_NEWUSER and no new stack: a fork into a new user namespace, if it works.
ctypes.set_errno(0)
child = libc.syscall(ctypes.c_long(NR["clone"]), ctypes.c_long({CLONE_NEWUSER} | {SIGCHLD}), ctypes.c_long(0),
                     ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
if child == 0:
    os._exit(0)
if child > 0:
    os.waitpid(child, 0)
seen["clone newuser"] = answer(child)
# Null pointers: without a filter the kernel answers EFAULT (or EINVAL) on reading them; the filter answers first.
seen["mount"] = raw(NR["mount"], 0, 0, 0, 0, 0)
seen["perf_event_open"] = raw(NR["perf_event_open"], 0, 0, -1, -1, 0)
seen["bpf"] = raw(NR["bpf"], 9999, 0, 0)
seen["keyctl"] = raw(NR["keyctl"], 0, -3, 0)  # KEYCTL_GET_KEYRING_ID of the session keyring
print(json.dumps(seen))
"""


def arch_numbers() -> dict[str, int]:
    numbers = SYSCALLS.get(platform.machine())
    if numbers is None:
        pytest.skip(f"system call numbers are written here for x86_64 and aarch64 only, this is {platform.machine()}")
    return numbers


def run_inside(code: str, **kwargs) -> sandbox.Result:
    return sandbox.run([sys.executable, "-c", textwrap.dedent(code)], **kwargs)


def probe_inside() -> dict:
    code = PROBES.format(nr=arch_numbers(), CLONE_NEWUSER=CLONE_NEWUSER, CLONE_NEWNET=CLONE_NEWNET,
                         CLONE_NEWNS=CLONE_NEWNS, SIGCHLD=SIGCHLD)
    result = run_inside(code, limits=sandbox.Limits(timeout=60))
    assert result.status == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def bwrap_ok():
    ok, reason = sandbox.probe()
    assert ok, f"the sandbox must work where the tests run: {reason}"


@pytest.fixture(scope="module")
def filtered(bwrap_ok):
    program, description = sandbox._seccomp_program()
    assert program, f"the seccomp filter must be built where the tests run (pyseccomp, libseccomp): {description}"


# ---------------------------------------------------------------------------------------------- seccomp, userns


def test_no_new_namespaces_inside(filtered):
    """No user namespace (so no capabilities) and no other namespace: unshare, clone, unshare(1) all fail."""
    seen = probe_inside()
    for what in ("unshare user", "unshare net", "unshare user+net", "unshare user+mount", "clone newuser"):
        assert seen[what] == "EPERM", (what, seen)
    if "unshare -U" in seen:
        assert seen["unshare -U"] != 0, seen


def test_kernel_attack_surface_is_denied(filtered):
    """mount, perf_event_open, bpf and keyctl answer EPERM before the kernel looks at their arguments."""
    seen = probe_inside()
    for what in ("mount", "perf_event_open", "bpf", "keyctl"):
        assert seen[what] == errno.errorcode[errno.EPERM], (what, seen)


def test_user_namespaces_stay_off_without_the_filter(bwrap_ok, monkeypatch):
    """bwrap --disable-userns alone (no seccomp filter) already stops a nested user namespace."""
    if "--disable-userns" not in sandbox._bwrap_options(shutil.which("bwrap")):
        pytest.skip("this bwrap has no --disable-userns (it came in 0.8.0)")
    monkeypatch.setattr(sandbox, "_seccomp_program", lambda: (None, "none: switched off by this test"))
    seen = probe_inside()
    assert seen["unshare user"] != "ok" and seen["clone newuser"] != "ok", seen


def test_threads_processes_and_numpy_still_work(filtered):
    """What honest submissions need: threads (clone without namespace flags), subprocess, numpy."""
    result = run_inside("""
        import subprocess, sys, threading
        import numpy as np
        out = []
        threads = [threading.Thread(target=out.append, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        child = subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True, text=True, check=True)
        print(sorted(out) == list(range(8)), child.stdout.strip(), int(np.arange(10).sum()))
    """)
    assert result.status == 0, result.stderr
    assert result.stdout.split() == ["True", "1", "45"], (result.stdout, result.stderr)


@pytest.mark.slow
def test_tensorflow_still_works(filtered):
    """TensorFlow's import and a small op (its thread pools start) under the filter."""
    result = run_inside("""
        import tensorflow as tf
        print(int(tf.reduce_sum(tf.matmul(tf.ones((64, 64)), tf.ones((64, 64))))))
    """, limits=sandbox.Limits(timeout=180))
    assert result.status == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == str(64 * 64 * 64)


def test_limits_in_force_names_the_filter(filtered):
    syscalls = sandbox.limits_in_force()["syscalls"]
    assert syscalls.startswith("seccomp filter: ") and "system calls denied" in syscalls, syscalls
    assert int(syscalls.split()[2]) >= 20, syscalls


def test_without_libseccomp_runs_go_on_unfiltered_and_say_so(bwrap_ok, monkeypatch):
    """Where pyseccomp cannot be imported (macOS, a Linux without libseccomp) the line says so; runs still work."""
    monkeypatch.setitem(sys.modules, "pyseccomp", None)  # import pyseccomp raises ImportError
    monkeypatch.setattr(sandbox, "_SECCOMP", None)
    program, description = sandbox._seccomp_program()
    assert program is None and description.startswith("none: libseccomp not available"), description
    assert sandbox.limits_in_force()["syscalls"].startswith("none: libseccomp not available")
    result = run_inside("print('unfiltered')")
    assert result.status == 0 and result.stdout.strip() == "unfiltered", result.stderr


# ---------------------------------------------------------------------------------------------- cgroup v2


def fake_cgroup2(tmp_path: Path, subtree: str, controllers: str = "cpuset cpu io memory hugetlb pids rdma misc"
                 ) -> tuple[Path, Path, Path]:
    """A cgroup2 mount (root, the grader's own cgroup ``/grader.slice/grade``) and its /proc/self/cgroup."""
    root = tmp_path / "cgroup"
    own = root / "grader.slice" / "grade"
    own.mkdir(parents=True)
    for folder in (root, root / "grader.slice", own):
        (folder / "cgroup.controllers").write_text(controllers + "\n")
        (folder / "cgroup.procs").write_text("")
    (root / "cgroup.subtree_control").write_text(controllers + "\n")
    (root / "grader.slice" / "cgroup.subtree_control").write_text(controllers + "\n")
    (own / "cgroup.subtree_control").write_text(subtree)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("0::/grader.slice/grade\n")
    return root, own, proc


def test_cgroup_v2_is_chosen_on_a_unified_hierarchy(tmp_path):
    root, _, _ = fake_cgroup2(tmp_path, "memory pids\n")
    assert sandbox._cgroup_strategy(root) is sandbox._CgroupsV2
    assert sandbox._cgroup_strategy(tmp_path / "v1") is sandbox._CgroupsV1


def test_cgroup_v2_child_gets_the_limits(tmp_path):
    """A child of the delegated cgroup per run: memory.max, memory.swap.max, pids.max; OOM from memory.events;
    cgroup.kill kills it; close() removes it."""
    root, own, proc = fake_cgroup2(tmp_path, "memory pids\n")
    limits = sandbox.Limits(memory_mib=1024, processes=40)
    cgroups = sandbox._CgroupsV2(limits, root=root, proc_self=proc)
    assert cgroups.controllers == {"memory", "pids"}
    child = Path(cgroups.procs_files()[0]).parent
    assert child.parent == own and child.name.startswith("lab-sandbox-")
    assert (child / "memory.max").read_text() == str(1024 << 20)
    assert (child / "memory.swap.max").read_text() == "0"
    assert (child / "pids.max").read_text() == "40"
    assert sandbox._rlimits(limits, cgroups) == {"RLIMIT_CORE": 0, "RLIMIT_FSIZE": 64 << 20}  # no AS, no NPROC

    (child / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\noom_group_kill 0\n")
    assert not cgroups.out_of_memory()
    (child / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\noom_group_kill 0\n")
    assert cgroups.out_of_memory()

    (child / "cgroup.kill").write_text("")
    (child / "cgroup.procs").write_text("")
    cgroups.kill_all()
    assert (child / "cgroup.kill").read_text() == "1"

    for entry in child.iterdir():  # the kernel removes a cgroup's interface files with it
        entry.unlink()
    cgroups.close()
    assert not child.exists()


def test_cgroup_v2_enables_controllers_it_may(tmp_path):
    """Controllers available but not yet enabled for children are enabled in the own cgroup's subtree_control."""
    root, own, proc = fake_cgroup2(tmp_path, "")
    cgroups = sandbox._CgroupsV2(sandbox.Limits(), root=root, proc_self=proc)
    assert cgroups.controllers == {"memory", "pids"}
    assert set((own / "cgroup.subtree_control").read_text().split()) == {"+memory", "+pids"}
    assert sandbox._CgroupsV2.usable(root, proc)[0] == {"memory", "pids"}


def test_cgroup_v2_without_a_memory_controller_keeps_rlimit_as(tmp_path):
    """Only pids delegated: the child limits processes, the address-space limit stays for memory."""
    root, own, proc = fake_cgroup2(tmp_path, "pids\n", controllers="cpu pids")
    limits = sandbox.Limits(memory_mib=2048, processes=64)
    cgroups = sandbox._CgroupsV2(limits, root=root, proc_self=proc)
    assert cgroups.controllers == {"pids"}
    child = Path(cgroups.procs_files()[0]).parent
    assert (child / "pids.max").read_text() == "64" and not (child / "memory.max").exists()
    assert sandbox._rlimits(limits, cgroups)["RLIMIT_AS"] == 2048 << 20
    assert not cgroups.out_of_memory()


def test_cgroup_v2_without_a_delegated_subtree_falls_back(tmp_path):
    """Own cgroup without the controllers (nothing delegated): no child; RLIMIT_AS and RLIMIT_NPROC, said so."""
    root, own, proc = fake_cgroup2(tmp_path, "", controllers="cpu io")
    limits = sandbox.Limits()
    cgroups = sandbox._CgroupsV2(limits, root=root, proc_self=proc)
    assert cgroups.controllers == frozenset() and cgroups.procs_files() == []
    assert [p.name for p in own.iterdir() if p.is_dir()] == []
    assert set(sandbox._rlimits(limits, cgroups)) == {"RLIMIT_CORE", "RLIMIT_FSIZE", "RLIMIT_AS", "RLIMIT_NPROC"}
    usable, why = sandbox._CgroupsV2.usable(root, proc)
    assert usable == set() and why, why


# ---------------------------------------------------------------------------------------------- unsandboxed runs


ALLOCATE_3_GIB = """
block = bytearray(3 << 30)
for i in range(0, len(block), 4096):
    block[i] = 1
print("allocated 3 GiB")
"""


def test_run_unsandboxed_limits_memory(tmp_path):
    """3 GiB does not fit in 1 GiB without bwrap either (memory cgroup here, RLIMIT_AS elsewhere)."""
    result = sandbox.run_unsandboxed([sys.executable, "-c", ALLOCATE_3_GIB], tmp_path,
                                     sandbox.Limits(memory_mib=1024, timeout=60))
    assert result.status != 0 and "allocated" not in result.stdout, (result.status, result.stdout)
    assert result.out_of_memory or "MemoryError" in result.stderr, result.stderr[-500:]


def test_run_unsandboxed_limits_memory_without_cgroups(tmp_path, monkeypatch):
    """No cgroup can be made (an empty cgroup mount point): the address-space limit applies."""
    monkeypatch.setattr(sandbox, "CGROUP_ROOT", tmp_path / "no-cgroups")
    result = sandbox.run_unsandboxed([sys.executable, "-c", ALLOCATE_3_GIB], tmp_path,
                                     sandbox.Limits(memory_mib=1024, timeout=60))
    assert result.status != 0 and "MemoryError" in result.stderr, (result.status, result.stderr[-500:])


def test_run_unsandboxed_keeps_its_behaviour(tmp_path, monkeypatch):
    """Its cwd, the minimal environment, a bare command name found on PATH, and the 127 of a missing program."""
    monkeypatch.setenv("LAB_GRADER_SECRET", "x")
    result = sandbox.run_unsandboxed(["python3" if shutil.which("python3") else sys.executable, "-c",
                                      "import os; print(os.getcwd()); print(sorted(os.environ))"], tmp_path)
    assert result.status == 0, result.stderr
    cwd, names = result.stdout.splitlines()
    assert Path(cwd).resolve() == tmp_path.resolve() and "LAB_GRADER_SECRET" not in names
    missing = sandbox.run_unsandboxed([str(tmp_path / "no-such-program")], tmp_path)
    assert missing.status == 127 and missing.stderr.startswith("could not start:"), (missing.status, missing.stderr)
