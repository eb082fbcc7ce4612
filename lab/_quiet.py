"""TensorFlow without its C++ start-up chatter, in notebooks and on the command line, at no cost in speed.

Importing TensorFlow 2.21 writes, from C++ straight to file descriptor 2 and
*before* its logging reads ``TF_CPP_MIN_LOG_LEVEL``, lines such as::

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1796006637.906861   13860 port.cc:153] oneDNN custom operations are on. ...

(twice: two shared libraries each log once while loading). No environment
variable silences them: absl has none and TensorFlow reads its own only after
they are written. Turning oneDNN off (``TF_ENABLE_ONEDNN_OPTS=0``) removes the
second line but makes the DeepID forward pass much slower, so instead the
first import of ``tensorflow`` runs with fd 2 pointed at a temporary file, and
whatever it wrote is passed on afterwards *except* those known lines. After the
import TensorFlow honours ``TF_CPP_MIN_LOG_LEVEL``, which silences the later
C++ messages (grappler, cpu_feature_guard); set it yourself to see them.

:func:`install` (called first thing by ``import lab``) sets the variables and
hooks the import; it does nothing when TensorFlow is already imported.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

# Levels: 0 all, 1 no INFO, 2 no WARNING, 3 no ERROR. 3 because TensorFlow's C++ "errors" for this lab are
# grappler notices about optimisations it skipped, never failures (those raise Python exceptions).
ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR"}

# Lines TensorFlow's C++ start-up writes that say nothing to a student (glog/absl prefix: I/W/E + MMDD time).
NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|^[IWE]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ (port|cpu_feature_guard|cuda_\w+|computation_placer)\.cc:\d+\]"
    r"|^To enable the following instructions: .* rebuild TensorFlow"
    r"|oneDNN custom operations are on"
)


def is_noise(line: str) -> bool:
    """Whether ``line`` is one of TensorFlow's C++ start-up messages (see the module docstring)."""
    return bool(NOISE.search(line))


@contextlib.contextmanager
def filtered_stderr():
    """Point fd 2 at a temporary file for the block, then write back what it got, less :func:`is_noise` lines.

    Works in a terminal and in a Jupyter kernel (ipykernel forwards fd 2 to
    the notebook). Messages are written back after the block, in order.
    """
    # fd 2 itself, what C++ writes to; not sys.stderr.fileno(), which in a Jupyter kernel is a copy of the
    # terminal's stderr while fd 2 is the pipe ipykernel forwards to the notebook.
    fd = 2
    with tempfile.TemporaryFile() as capture:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            sys.stderr.flush()
        try:
            saved = os.dup(fd)
        except OSError:  # no fd 2 at all (some GUI launchers): nothing to filter
            yield
            return
        os.dup2(capture.fileno(), fd)
        try:
            yield
        finally:
            with contextlib.suppress(AttributeError, ValueError, OSError):
                sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                    if not is_noise(line)]
            if kept:
                os.write(fd, "".join(kept).encode())


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` the usual way, then runs its module code inside :func:`filtered_stderr`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once; also keeps the find_spec below from coming back here
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec_module(module):
            with filtered_stderr():
                exec_module(module)

        spec.loader.exec_module = quiet_exec_module  # this spec's own loader instance only
        return spec


def install() -> None:
    """Set the log-level variables (unless the user set them) and filter TensorFlow's first import."""
    import warnings

    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    # A Jupyter without ipywidgets (a fresh venv; Colab has them): tqdm falls back to text bars and says so.
    warnings.filterwarnings("ignore", message="IProgress not found")
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowImport())
