"""Run an untrusted command (a student's script or model) in a bubblewrap sandbox.

What the sandboxed process sees and may do (:func:`run`):

- its own user, PID, IPC, UTS, cgroup and network namespaces (``bwrap
  --unshare-all --unshare-user``; no network at all, only ``lo``), uid/gid
  65534 inside, no capabilities, a new session (``--new-session``: no
  terminal to push keys into);
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
- limits: resident memory (a memory cgroup when one can be made, else the
  address space, ``RLIMIT_AS``), processes (a pids cgroup when one can be
  made, else ``RLIMIT_NPROC``, which the kernel does not apply to root: see
  :func:`limits_in_force`), file size and so output size (``RLIMIT_FSIZE``;
  only the last ``output_bytes`` are read back), no core dumps, and wall time:
  on timeout the whole sandbox dies (its PID namespace goes with its init,
  ``--die-with-parent`` ties that to the bwrap process we kill, and every
  process left in its cgroup is killed too). A process that double-forks and
  calls ``setsid()`` dies with the sandbox when the main process exits.

:func:`probe` checks once that bwrap exists and can create the namespaces;
callers refuse untrusted scripts with its one-line reason otherwise.
"""

from __future__ import annotations

import dataclasses
import os
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
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "PYTHONHASHSEED": "0", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
            "TF_CPP_MIN_LOG_LEVEL": "3", "MPLCONFIGDIR": "/tmp/matplotlib", "USER": "student"}
# /etc files a Python + TensorFlow process reads; bound only when present, one by one (never /etc wholesale).
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/etc/nsswitch.conf")


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run.

    memory_mib: resident memory (memory cgroup) or, without a cgroup,
    address space (``RLIMIT_AS``; TensorFlow reserves about 2.2 GiB of it on
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


def _bwrap_command(binds: Mapping[str, str], cwd: str, env: Mapping[str, str], python: str | None) -> list[str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable("bwrap not found on PATH (Debian/Ubuntu: apt-get install bubblewrap)")
    command = [bwrap, "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
               "--hostname", "sandbox", "--die-with-parent", "--new-session", "--clearenv",
               "--ro-bind", "/usr", "/usr",
               # The private /tmp first: binds below come after it, so a venv or a checkout that lives under the
               # host's /tmp (a CI clone, say) is mounted on top of the tmpfs instead of hidden by it.
               "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
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


# ----------------------------------------------------------------------------- cgroups (v1) for memory and pids


def _own_cgroup(controller: str) -> Path | None:
    """This process's folder in a writable cgroup-v1 hierarchy of ``controller``, or None."""
    base = CGROUP_ROOT / controller
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                folder = base / path.lstrip("/")
                return folder if os.access(folder, os.W_OK) and (folder / "cgroup.procs").exists() else None
    except OSError:
        return None
    return None


class _Cgroups:
    """A fresh pids and memory cgroup for one run (those that can be made here), removed by :meth:`close`."""

    def __init__(self, limits: Limits):
        self.folders: dict[str, Path] = {}
        name = f"lab-sandbox-{secrets.token_hex(6)}"
        settings = {"pids": {"pids.max": str(limits.processes)},
                    "memory": {"memory.limit_in_bytes": str(limits.memory_mib << 20),
                               "memory.memsw.limit_in_bytes": str(limits.memory_mib << 20)}}
        for controller, values in settings.items():
            parent = _own_cgroup(controller)
            if parent is None:
                continue
            folder = parent / name
            try:
                folder.mkdir()
                for key, value in values.items():
                    if (folder / key).exists():
                        (folder / key).write_text(value)
            except OSError:
                self._remove(folder)
                continue
            self.folders[controller] = folder

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
            for _ in range(50):
                try:
                    pids = [int(p) for p in (folder / "cgroup.procs").read_text().split()]
                except OSError:
                    break
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.02)

    def close(self) -> None:
        self.kill_all()
        for folder in self.folders.values():
            self._remove(folder)

    @staticmethod
    def _remove(folder: Path) -> None:
        for _ in range(100):
            try:
                folder.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # still busy: processes being reaped
                time.sleep(0.02)


# The launcher runs between the grader and bwrap: it joins the cgroups and sets the rlimits, then
# execs bwrap. (A preexec_fn would do the same but is unsafe in a threaded grader: --jobs.)
_LAUNCHER = """
import os, resource, sys
procs, limits, command = sys.argv[1], sys.argv[2], sys.argv[3:]
for path in filter(None, procs.split(os.pathsep)):
    with open(path, "w") as handle:
        handle.write(str(os.getpid()))
for item in limits.split(","):
    name, value = item.split("=")
    resource.setrlimit(getattr(resource, name), (int(value), int(value)))
os.execv(command[0], command)
"""


def _rlimits(limits: Limits, cgroups: _Cgroups) -> dict[str, int]:
    values = {"RLIMIT_CORE": 0, "RLIMIT_FSIZE": limits.file_mib << 20}
    if "memory" not in cgroups.folders:
        values["RLIMIT_AS"] = limits.memory_mib << 20
    if "pids" not in cgroups.folders:
        values["RLIMIT_NPROC"] = limits.processes
    return values


def limits_in_force(limits: Limits | None = None) -> dict[str, str]:
    """How each limit is enforced here, in words (for reports): memory, processes, file size, time."""
    limits = limits or Limits()
    memory = "memory cgroup (resident memory)" if _own_cgroup("memory") else "RLIMIT_AS (address space)"
    if _own_cgroup("pids"):
        processes = "pids cgroup"
    elif os.geteuid() == 0:
        processes = "none: RLIMIT_NPROC does not apply to root and no pids cgroup can be made here"
    else:
        processes = "RLIMIT_NPROC (counts all processes of this user)"
    return {"memory": f"{limits.memory_mib} MiB, {memory}", "processes": f"{limits.processes}, {processes}",
            "file size": f"{limits.file_mib} MiB, RLIMIT_FSIZE", "time": f"{limits.timeout:g} s, then the sandbox is killed"}


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
    command = _bwrap_command(binds or {}, cwd, env or {}, argv[0] if argv else None)
    cgroups = _Cgroups(limits)
    rlimits = ",".join(f"{name}={value}" for name, value in _rlimits(limits, cgroups).items())
    launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, os.pathsep.join(cgroups.procs_files()), rlimits,
                *command, "--", *argv]
    started = time.perf_counter()
    try:
        with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
            try:
                process = subprocess.Popen(launcher, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                           env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                                           start_new_session=True, close_fds=True)
            except OSError as error:
                raise SandboxUnavailable(f"could not start bwrap: {error}") from None
            timed_out = False
            try:
                status = process.wait(timeout=limits.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(process)  # bwrap's init dies, and with it the whole PID namespace
                cgroups.kill_all()
                status = process.wait()
            return Result(status, _tail(stdout, limits.output_bytes), _tail(stderr, limits.output_bytes),
                          timed_out, cgroups.out_of_memory(), time.perf_counter() - started)
    finally:
        cgroups.close()


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
    grader's variables are not inherited), no standard input, the time limit
    and the output tail. What goes: every isolation of :func:`run`.
    """
    limits = limits or Limits()
    environment = {**BASE_ENV, "PATH": os.environ.get("PATH", BASE_ENV["PATH"]),
                   "HOME": tempfile.gettempdir(), "PYTHONPATH": str(lab_source().parent), **(env or {})}
    started = time.perf_counter()
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        try:
            process = subprocess.Popen(list(argv), cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                       env=environment, start_new_session=True, close_fds=True)
        except OSError as error:
            return Result(127, "", f"could not start: {error}", False, False, time.perf_counter() - started)
        timed_out = False
        try:
            process.wait(timeout=limits.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(process)  # children left behind by a script that exited
            status = process.wait()
        return Result(status, _tail(stdout, limits.output_bytes), _tail(stderr, limits.output_bytes), timed_out,
                      False, time.perf_counter() - started)
