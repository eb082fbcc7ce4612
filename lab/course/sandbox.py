"""Run an untrusted command (a student's script or model) in a bubblewrap sandbox.

What the sandboxed process sees and may do (:func:`run`):

- its own user, PID, IPC, UTS, cgroup and network namespaces (``bwrap
  --unshare-all --unshare-user``; no network at all, only ``lo``), uid/gid
  65534 inside, no capabilities, a new session (``--new-session``: no
  terminal to push keys into);
- no new namespaces and a smaller kernel: nested user namespaces are off
  (``--disable-userns``, where bwrap has it) and a seccomp filter
  (``--seccomp``, built with libseccomp) answers EPERM to the system calls
  that local privilege escalations keep starting from and that a grading
  script never needs: namespaces (``unshare``, ``setns``, ``clone`` with a
  ``CLONE_NEW*`` flag; in a new user namespace a process holds every
  capability, so mounts, netfilter and the like open up), mounts, eBPF,
  io_uring, keyrings, perf events, ``ptrace``, ``userfaultfd`` (it makes
  kernel races easy to win), kernel modules. ``clone3`` answers ENOSYS, so
  the C library falls back to ``clone``, whose flags the filter can read.
  Threads, ``subprocess`` and TensorFlow keep working;
- a file system of read-only binds only: ``/usr`` (``/bin``, ``/lib*`` are
  its symlinks), ``/etc/ld.so.cache``, the Python installation and virtual
  environment of the lab (``sys.base_prefix``, ``sys.prefix``), the lab's
  own source (``lab/`` at ``/opt/lab/lab``), the caller's ``binds`` (the
  submission's folder, the batch of images), a private ``/tmp`` (tmpfs), a
  fresh ``/proc`` of its own PID namespace and a minimal ``/dev``. Nothing
  else of the host: no grader folder, no other submission, no grader process;
- an environment of ``PATH``, ``HOME=/tmp``, ``LANG``, ``PYTHONHASHSEED``,
  ``PYTHONPATH`` (the lab), a few quiet-TensorFlow variables and the caller's
  ``env`` only (``--clearenv``);
- limits: resident memory (a memory cgroup when one can be made, cgroup v1
  or a delegated cgroup v2 subtree, else the address space, ``RLIMIT_AS``),
  processes (a pids cgroup when one can be made, else ``RLIMIT_NPROC``,
  which the kernel does not apply to root: see :func:`limits_in_force`),
  file size and so output size (``RLIMIT_FSIZE``; only the last
  ``output_bytes`` are read back), no core dumps, and wall time: on timeout
  the whole sandbox dies (its PID namespace goes with its init,
  ``--die-with-parent`` ties that to the bwrap process we kill, and every
  process left in its cgroup is killed too). A process that double-forks and
  calls ``setsid()`` dies with the sandbox when the main process exits.

Where libseccomp cannot be loaded (macOS, a Linux without it) runs go on
without the filter; :func:`limits_in_force` says so. :func:`probe` checks once
that bwrap exists and can create the namespaces; callers refuse untrusted
scripts with its one-line reason otherwise. :func:`run_unsandboxed` (trusted
scripts) keeps the memory, file-size and core limits, none of the isolation.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

SANDBOX_UID = 65534  # "nobody" inside the user namespace
LAB_MOUNT = "/opt/lab"  # the lab package is bound at /opt/lab/lab
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "PYTHONHASHSEED": "0", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
            "TF_CPP_MIN_LOG_LEVEL": "3", "MPLCONFIGDIR": "/tmp/matplotlib", "USER": "student"}
# /etc files a Python + TensorFlow process reads; bound only when present, one by one (never /etc wholesale).
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/etc/nsswitch.conf")


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run.

    memory_mib: resident memory (memory cgroup) or, without a cgroup,
    address space (``RLIMIT_AS``; TensorFlow reserves gigabytes of it on
    import, so keep that fallback >= 4096). processes: processes and threads
    together. file_mib: the largest file the run may write (its standard
    output included). output_bytes: how much of the end of each output
    stream is read back. timeout: wall-clock seconds.
    """

    memory_mib: int = 4096
    processes: int = 256
    file_mib: int = 64
    output_bytes: int = 1 << 20
    timeout: float = 60.0

    def __post_init__(self):
        for name in ("memory_mib", "processes", "file_mib", "output_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be >= 1, got {getattr(self, name)}")
        if not self.timeout > 0:
            raise ValueError(f"Limits.timeout must be > 0 seconds, got {self.timeout}")


@dataclasses.dataclass
class Result:
    """What a sandboxed run did. status: exit status (negative: killed by that signal, as subprocess)."""

    status: int
    stdout: str
    stderr: str
    timed_out: bool
    out_of_memory: bool
    seconds: float


class SandboxUnavailable(RuntimeError):
    """bwrap is missing or cannot create its namespaces here; the message says why, in one line."""


_PROBE: tuple[bool, str] | None = None


def lab_source() -> Path:
    """The folder of the ``lab`` package this process imported (bound read-only into every sandbox)."""
    import lab

    return Path(lab.__file__).resolve().parent


def _python_roots(python: str | None = None) -> list[str]:
    """Folders of the Python installation and virtual environment (deduplicated, outermost first)."""
    roots = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
    if python:
        real = os.path.realpath(python)
        roots.add(os.path.dirname(os.path.dirname(real)))  # .../bin/python -> its prefix
        roots.add(os.path.dirname(os.path.dirname(os.path.abspath(python))))
    kept = []
    for root in sorted(roots, key=len):
        if not any(root == k or root.startswith(k + os.sep) for k in kept):
            kept.append(root)
    return kept


def _bwrap_command(binds: Mapping[str, str], cwd: str, env: Mapping[str, str], python: str | None,
                   seccomp_fd: int | None = None) -> list[str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable("bwrap not found on PATH (Debian/Ubuntu: apt-get install bubblewrap)")
    command = [bwrap, "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
               "--hostname", "sandbox", "--die-with-parent", "--new-session", "--clearenv",
               "--ro-bind", "/usr", "/usr",
               # The private /tmp first: binds below come after it, so a venv or a checkout that lives under the
               # host's /tmp (a CI clone, say) is mounted on top of the tmpfs instead of hidden by it.
               "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    if "--disable-userns" in _bwrap_options(bwrap):
        command.append("--disable-userns")
    if seccomp_fd is not None:
        command += ["--seccomp", str(seccomp_fd)]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            command += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            command += ["--ro-bind", str(path), str(path)]
    for path in ETC_FILES:
        if os.path.exists(path):
            command += ["--ro-bind", path, path]
    for root in _python_roots(python):
        command += ["--ro-bind", root, root]
    command += ["--ro-bind", str(lab_source()), f"{LAB_MOUNT}/lab"]
    for source, target in binds.items():
        command += ["--ro-bind", os.fspath(source), target]
    command += ["--chdir", cwd]
    for name, value in {**BASE_ENV, "PYTHONPATH": LAB_MOUNT, **env}.items():
        command += ["--setenv", name, value]
    return command


@functools.lru_cache(maxsize=None)
def _bwrap_options(bwrap: str | None) -> frozenset[str]:
    """The options this bwrap lists in its ``--help`` (asked once per bwrap): newer ones are used only where known."""
    if bwrap is None:
        return frozenset()
    try:
        shown = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(re.findall(r"--[a-z][a-z0-9-]*", shown.stdout + shown.stderr))


# ----------------------------------------------------------------------------- seccomp


# Denied with EPERM: kernel surface a grading script never needs (see the module's docstring).
SECCOMP_DENIED = ("unshare", "setns", "mount", "umount2", "pivot_root", "bpf", "io_uring_setup", "io_uring_enter",
                  "io_uring_register", "keyctl", "add_key", "request_key", "perf_event_open", "ptrace", "kexec_load",
                  "init_module", "finit_module", "userfaultfd", "open_by_handle_at")
# clone() is denied only with one of these in its flags (threads and fork have none). CLONE_NEWTIME shares
# its bit with clone()'s exit-signal byte, but no signal number reaches 0x80, so a legitimate clone never has it.
CLONE_NAMESPACE_FLAGS = {"CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
                         "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
                         "CLONE_NEWNET": 0x40000000, "CLONE_NEWTIME": 0x00000080}

_SECCOMP: tuple[bytes | None, str] | None = None


def _seccomp_program() -> tuple[bytes | None, str]:
    """The compiled BPF filter (built once per process) and a one-line description, or (None, why not)."""
    global _SECCOMP
    if _SECCOMP is None:
        _SECCOMP = _compile_seccomp()
    return _SECCOMP


def _compile_seccomp() -> tuple[bytes | None, str]:
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError, RuntimeError) as error:  # no package, or it found no libseccomp
        return None, f"none: libseccomp not available ({_first_line(error)})"
    try:
        rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)

        def known(name: str) -> bool:  # names this libseccomp does not know on this architecture are skipped
            return seccomp.resolve_syscall(seccomp.Arch.NATIVE, name) >= 0

        denied = [name for name in SECCOMP_DENIED if known(name)]
        for name in denied:
            rules.add_rule(seccomp.ERRNO(errno.EPERM), name)
        if known("clone"):
            flags_arg = 1 if platform.machine().startswith("s390") else 0  # s390's clone takes the stack first
            for flag in CLONE_NAMESPACE_FLAGS.values():
                masked = seccomp.Arg(flags_arg, seccomp.MASKED_EQ, flag, flag)
                rules.add_rule(seccomp.ERRNO(errno.EPERM), "clone", masked)
        if known("clone3"):  # its flags sit in memory a filter cannot read: ENOSYS makes glibc use clone instead
            rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
        with tempfile.TemporaryFile() as handle:
            rules.export_bpf(handle)
            handle.seek(0)
            program = handle.read()
    except (OSError, ValueError, AttributeError) as error:
        return None, f"none: libseccomp could not build the filter ({_first_line(error)})"
    return program, (f"seccomp filter: {len(denied) + known('clone')} system calls denied (namespaces, mounts, "
                     "eBPF, io_uring, keyrings, perf events, ptrace, userfaultfd, kernel modules; clone only "
                     "with a CLONE_NEW* flag), clone3 answers ENOSYS")


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [error.__class__.__name__])[0][:200]


def _program_fd(program: bytes) -> int:
    """A file descriptor holding ``program`` from its start (not inheritable: only Popen's pass_fds hands it on)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("lab-sandbox-seccomp")
    else:
        fd, path = tempfile.mkstemp()
        os.unlink(path)
    os.write(fd, program)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


# ----------------------------------------------------------------------------- cgroups for memory and pids
#
# One small strategy per cgroup version, chosen by the hierarchy mounted at CGROUP_ROOT. Both make a fresh
# cgroup per run and share one interface: controllers (those that limit this run), procs_files() (what the
# launcher joins), out_of_memory(), kill_all(), close(); usable() says, without making one, what a run would get.


def _cgroup_strategy(root: Path | None = None) -> type:
    """:class:`_CgroupsV2` on a unified hierarchy (``cgroup.controllers`` at its root), else :class:`_CgroupsV1`."""
    return _CgroupsV2 if ((root or CGROUP_ROOT) / "cgroup.controllers").exists() else _CgroupsV1


def _cgroups(limits: Limits):
    return _cgroup_strategy()(limits)


def _kill_procs(folder: Path) -> None:
    """SIGKILL every process of a cgroup until it is empty (or its cgroup.procs cannot be read)."""
    for _ in range(50):
        try:
            pids = [int(p) for p in (folder / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


def _remove(folder: Path) -> None:
    for _ in range(100):
        try:
            folder.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # still busy: processes being reaped
            time.sleep(0.02)


def _own_cgroup(controller: str, root: Path | None = None, proc_self: Path | None = None) -> Path | None:
    """This process's folder in a writable cgroup-v1 hierarchy of ``controller``, or None."""
    base = (root or CGROUP_ROOT) / controller
    try:
        for line in (proc_self or PROC_SELF_CGROUP).read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                folder = base / path.lstrip("/")
                return folder if os.access(folder, os.W_OK) and (folder / "cgroup.procs").exists() else None
    except (OSError, ValueError):
        return None
    return None


class _CgroupsV1:
    """cgroup v1: a fresh pids and a fresh memory cgroup (those that can be made here) under this process's own."""

    label = "cgroup"

    def __init__(self, limits: Limits, root: Path | None = None, proc_self: Path | None = None):
        self.folders: dict[str, Path] = {}
        name = f"lab-sandbox-{secrets.token_hex(6)}"
        settings = {"pids": {"pids.max": str(limits.processes)},
                    "memory": {"memory.limit_in_bytes": str(limits.memory_mib << 20),
                               "memory.memsw.limit_in_bytes": str(limits.memory_mib << 20)}}
        for controller, values in settings.items():
            parent = _own_cgroup(controller, root, proc_self)
            if parent is None:
                continue
            folder = parent / name
            try:
                folder.mkdir()
                for key, value in values.items():
                    if (folder / key).exists():
                        (folder / key).write_text(value)
            except OSError:
                _remove(folder)
                continue
            self.folders[controller] = folder

    @staticmethod
    def usable(root: Path | None = None, proc_self: Path | None = None) -> tuple[set[str], str]:
        usable = {c for c in ("memory", "pids") if _own_cgroup(c, root, proc_self)}
        return usable, "" if usable else "no writable cgroup v1 hierarchy of memory or pids"

    @property
    def controllers(self) -> frozenset[str]:
        return frozenset(self.folders)

    def procs_files(self) -> list[str]:
        return [str(folder / "cgroup.procs") for folder in self.folders.values()]

    def out_of_memory(self) -> bool:
        folder = self.folders.get("memory")
        if folder is None:
            return False
        try:
            for line in (folder / "memory.oom_control").read_text().splitlines():
                if line.startswith("oom_kill ") and int(line.split()[1]) > 0:
                    return True
            return False
        except (OSError, ValueError):
            return False

    def kill_all(self) -> None:
        for folder in self.folders.values():
            _kill_procs(folder)

    def close(self) -> None:
        self.kill_all()
        for folder in self.folders.values():
            _remove(folder)


def _v2_parent(root: Path, proc_self: Path) -> tuple[Path | None, set[str], str]:
    """This process's own cgroup v2 folder, the controllers it hands to children (memory, pids), and why none.

    Controllers the folder has but does not yet enable for children are enabled in its
    ``cgroup.subtree_control``; the kernel refuses that where the folder still holds processes of its own
    (only a delegated subtree, or the root, can), and then there is nothing to use.
    """
    try:
        lines = proc_self.read_text().splitlines()
    except OSError as error:
        return None, set(), f"cannot read {proc_self} ({error.strerror})"
    path = next((line[3:] for line in lines if line.startswith("0::")), None)
    if path is None:
        return None, set(), f"no cgroup v2 line (0::) in {proc_self}"
    folder = root / path.strip().lstrip("/")
    subtree = folder / "cgroup.subtree_control"
    if not (subtree.exists() and os.access(folder, os.W_OK)):
        return None, set(), f"this process's cgroup {path.strip()} is not writable (no delegated subtree)"
    try:
        available = set((folder / "cgroup.controllers").read_text().split()) & {"memory", "pids"}
        enabled = set(subtree.read_text().split()) & {"memory", "pids"}
    except OSError as error:
        return None, set(), f"cannot read the controllers of {path.strip()} ({error.strerror})"
    missing = sorted(available - enabled)
    if missing:
        try:
            subtree.write_text(" ".join(f"+{c}" for c in missing))
            enabled.update(missing)
        except OSError:
            for controller in missing:  # one may work where both together do not
                try:
                    subtree.write_text(f"+{controller}")
                    enabled.add(controller)
                except OSError:
                    pass
    if not enabled:
        return None, set(), (f"this process's cgroup {path.strip()} cannot hand memory or pids to children "
                             "(no delegated subtree)")
    return folder, enabled, ""


class _CgroupsV2:
    """cgroup v2: one fresh child of this process's own (delegated) cgroup with memory.max, memory.swap.max,
    pids.max; out of memory from memory.events, killed at once by cgroup.kill where the kernel has it."""

    label = "cgroup v2"

    def __init__(self, limits: Limits, root: Path | None = None, proc_self: Path | None = None):
        self.folder: Path | None = None
        self.controllers: frozenset[str] = frozenset()
        parent, usable, _ = _v2_parent(root or CGROUP_ROOT, proc_self or PROC_SELF_CGROUP)
        if parent is None:
            return
        folder = parent / f"lab-sandbox-{secrets.token_hex(6)}"
        try:
            folder.mkdir()
        except OSError:
            return
        got = set()
        if "memory" in usable and _write(folder / "memory.max", str(limits.memory_mib << 20)):
            got.add("memory")
            _write(folder / "memory.swap.max", "0")  # absent without swap accounting: then there is none to limit
        if "pids" in usable and _write(folder / "pids.max", str(limits.processes)):
            got.add("pids")
        if not got:
            _remove(folder)
            return
        self.folder, self.controllers = folder, frozenset(got)

    @staticmethod
    def usable(root: Path | None = None, proc_self: Path | None = None) -> tuple[set[str], str]:
        _, usable, why = _v2_parent(root or CGROUP_ROOT, proc_self or PROC_SELF_CGROUP)
        return usable, why

    def procs_files(self) -> list[str]:
        return [str(self.folder / "cgroup.procs")] if self.folder else []

    def out_of_memory(self) -> bool:
        if "memory" not in self.controllers:
            return False
        try:
            for line in (self.folder / "memory.events").read_text().splitlines():
                if line.startswith("oom_kill ") and int(line.split()[1]) > 0:
                    return True
        except (OSError, ValueError):
            pass
        return False

    def kill_all(self) -> None:
        if self.folder is None:
            return
        if (self.folder / "cgroup.kill").exists():
            _write(self.folder / "cgroup.kill", "1")
        _kill_procs(self.folder)  # without cgroup.kill (before Linux 5.14); with it, waits until it is empty

    def close(self) -> None:
        self.kill_all()
        if self.folder is not None:
            _remove(self.folder)


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError:
        return False


# The launcher runs between the grader and bwrap (or, unsandboxed, the command itself): it joins the cgroups,
# sets the rlimits, keeps the passed file descriptors (the seccomp program) open across exec, then execs.
# (A preexec_fn would do the same but is unsafe in a threaded grader: --jobs.)
_LAUNCHER = """
import os, resource, sys
procs, limits, keep, command = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
for path in filter(None, procs.split(os.pathsep)):
    with open(path, "w") as handle:
        handle.write(str(os.getpid()))
for item in filter(None, limits.split(",")):
    name, value = item.split("=")
    resource.setrlimit(getattr(resource, name), (int(value), int(value)))
for fd in filter(None, keep.split(",")):
    os.set_inheritable(int(fd), True)
try:
    os.execvp(command[0], command)
except OSError as error:
    sys.stderr.write(f"could not start: {error}\\n")
    sys.exit(127)
"""


def _launcher(cgroups, rlimits: Mapping[str, int], keep: Sequence[int], command: Sequence[str]) -> list[str]:
    return [sys.executable, "-I", "-S", "-c", _LAUNCHER, os.pathsep.join(cgroups.procs_files()),
            ",".join(f"{name}={value}" for name, value in rlimits.items()), ",".join(map(str, keep)), *command]


def _rlimits(limits: Limits, cgroups, nproc: bool = True) -> dict[str, int]:
    values = {"RLIMIT_CORE": 0, "RLIMIT_FSIZE": limits.file_mib << 20}
    if "memory" not in cgroups.controllers:
        values["RLIMIT_AS"] = limits.memory_mib << 20
    if nproc and "pids" not in cgroups.controllers:
        values["RLIMIT_NPROC"] = limits.processes
    return values


def limits_in_force(limits: Limits | None = None) -> dict[str, str]:
    """How each limit is enforced here, in words (for reports): memory, processes, file size, time, syscalls."""
    limits = limits or Limits()
    strategy = _cgroup_strategy()
    usable, why = strategy.usable()
    because = f"; {why}" if why else ""
    if "memory" in usable:
        memory = f"memory {strategy.label} (resident memory)"
    else:
        memory = f"RLIMIT_AS (address space{because})"
    if "pids" in usable:
        processes = f"pids {strategy.label}"
    elif os.geteuid() == 0:
        processes = "none: RLIMIT_NPROC does not apply to root and no pids cgroup can be made here" + because
    else:
        processes = "RLIMIT_NPROC (counts all processes of this user)"
    syscalls = _seccomp_program()[1]
    if "--disable-userns" in _bwrap_options(shutil.which("bwrap")):
        syscalls += "; nested user namespaces disabled (bwrap --disable-userns)"
    return {"memory": f"{limits.memory_mib} MiB, {memory}", "processes": f"{limits.processes}, {processes}",
            "file size": f"{limits.file_mib} MiB, RLIMIT_FSIZE",
            "time": f"{limits.timeout:g} s, then the sandbox is killed", "syscalls": syscalls}


def _tail(handle, limit: int) -> str:
    handle.flush()
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, size - limit))
    return handle.read(limit).decode("utf-8", errors="replace")


def run(argv: Sequence[str], binds: Mapping[str, str] | None = None, cwd: str = "/tmp", limits: Limits | None = None,
        env: Mapping[str, str] | None = None) -> Result:
    """Run ``argv`` (paths as seen inside) in a fresh sandbox; raises :class:`SandboxUnavailable` only.

    binds: ``{host path: path inside}``, all read-only (mount points inside
    should be new top-level folders such as ``/submission``). The run's
    standard input is empty; the last ``limits.output_bytes`` of its standard
    output and error are returned. Never raises for what the command does.
    """
    limits = limits or Limits()
    program, _ = _seccomp_program()
    seccomp_fd = _program_fd(program) if program else None
    keep = [] if seccomp_fd is None else [seccomp_fd]
    try:
        command = _bwrap_command(binds or {}, cwd, env or {}, argv[0] if argv else None, seccomp_fd)
        cgroups = _cgroups(limits)
        try:
            launcher = _launcher(cgroups, _rlimits(limits, cgroups), keep, [*command, "--", *argv])
            return _supervise(launcher, limits, cgroups, cwd=None, pass_fds=keep, sandboxed=True,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        finally:
            cgroups.close()
    finally:
        if seccomp_fd is not None:
            os.close(seccomp_fd)


def _supervise(launcher: list[str], limits: Limits, cgroups, cwd: str | os.PathLike | None, env: Mapping[str, str],
               pass_fds: Sequence[int], sandboxed: bool) -> Result:
    """Start the launcher in a session of its own, wait up to the time limit, kill what is left, read the tails."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        try:
            process = subprocess.Popen(launcher, cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                       env=dict(env), start_new_session=True, close_fds=True,
                                       pass_fds=tuple(pass_fds))
        except OSError as error:
            if sandboxed:
                raise SandboxUnavailable(f"could not start bwrap: {error}") from None
            return Result(127, "", f"could not start: {error}", False, False, time.perf_counter() - started)
        timed_out = False
        try:
            process.wait(timeout=limits.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(process)  # sandboxed: bwrap's init dies, and with it the whole PID namespace
            cgroups.kill_all()
            status = process.wait()
        return Result(status, _tail(stdout, limits.output_bytes), _tail(stderr, limits.output_bytes),
                      timed_out, cgroups.out_of_memory(), time.perf_counter() - started)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def probe(refresh: bool = False) -> tuple[bool, str]:
    """Whether sandboxed runs work here, and if not why (one line); the check runs once per process."""
    global _PROBE
    if _PROBE is not None and not refresh:
        return _PROBE
    if not sys.platform.startswith("linux"):  # bwrap is built on Linux namespaces
        system = {"darwin": "macOS", "win32": "Windows"}.get(sys.platform, sys.platform)
        _PROBE = (False, f"bubblewrap needs Linux, this is {system}: grade scripts on Linux "
                         "(a Gradescope autograder, say)")
        return _PROBE
    try:
        result = run([sys.executable, "-I", "-c", "print('sandbox ok')"], limits=Limits(timeout=60))
    except SandboxUnavailable as error:
        _PROBE = (False, str(error))
        return _PROBE
    if result.status == 0 and result.stdout.strip() == "sandbox ok":
        _PROBE = (True, "bwrap sandbox works")
    else:
        reason = (result.stderr.strip().splitlines() or [f"exit status {result.status}"])[-1][:200]
        _PROBE = (False, f"bwrap cannot create its namespaces here ({reason})")
    return _PROBE


def run_unsandboxed(argv: Sequence[str], cwd: str | os.PathLike, limits: Limits | None = None,
                    env: Mapping[str, str] | None = None) -> Result:
    """Run ``argv`` as a plain child process (``--trust-scripts``, or models where bwrap is missing).

    What stays: a process group of its own (killed, children included, on
    timeout or exit), the minimal environment of :data:`BASE_ENV` (the
    grader's variables are not inherited), no standard input, the time limit,
    the output tail, and the memory limit (a memory cgroup where one can be
    made, else ``RLIMIT_AS``), a pids cgroup where one can be made, the file
    size limit and no core dumps: a trusted script that runs away still must
    not take the grading machine down. What goes: every isolation of
    :func:`run`, and ``RLIMIT_NPROC`` (it would count every process of the
    user running the grader).
    """
    limits = limits or Limits()
    environment = {**BASE_ENV, "PATH": os.environ.get("PATH", BASE_ENV["PATH"]),
                   "HOME": tempfile.gettempdir(), "PYTHONPATH": str(lab_source().parent), **(env or {})}
    cgroups = _cgroups(limits)
    try:
        launcher = _launcher(cgroups, _rlimits(limits, cgroups, nproc=False), [], list(argv))
        return _supervise(launcher, limits, cgroups, cwd=cwd, env=environment, pass_fds=(), sandboxed=False)
    finally:
        cgroups.close()
