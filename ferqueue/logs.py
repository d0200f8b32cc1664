"""What TensorFlow, absl and Keras print: nothing in ferqueue's output unless `ferqueue --verbose`.

TensorFlow writes its start-up lines (oneDNN, the CUDA stub, absl's "All log messages before
absl::InitializeLog()") straight to file descriptor 2 while it is being imported, whatever
TF_CPP_MIN_LOG_LEVEL says. So, when quiet, the first import of TensorFlow in the process runs
with descriptor 2 captured: the lines in absl's log format are dropped and anything else
(a real error, a Python warning) is written back. After the import, TensorFlow's and absl's
Python loggers and Keras's warnings are held to errors.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# absl/glog lines ("I0000 00:00:1796.546118   19851 port.cc:153] ...") and absl's pre-init notice
LOG_LINE = re.compile(rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] |WARNING: All log messages before absl::)")
QUIET_LOGGERS = ("tensorflow", "absl", "keras", "h5py")
_WARNING_MODULES = r"(tensorflow|keras|absl)(\.|$)"


def configure(verbose: bool) -> None:
    """Quiet (the default) or ``verbose`` TensorFlow, for this process; call before TensorFlow loads."""
    _remove_hook()
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        warnings.filterwarnings("default", module=_WARNING_MODULES)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _QuietTensorFlow())
    _quiet_python_logs()


def _quiet_python_logs() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=_WARNING_MODULES)


def _remove_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietTensorFlow)]


@contextmanager
def log_lines_dropped(fd: int = 2) -> Iterator[None]:
    """Capture ``fd`` for the block; afterwards write back every captured line that is not a
    line of absl's log format."""
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), fd)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            finally:
                os.dup2(saved, fd)
                os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True) if not LOG_LINE.match(line)]
            if kept:
                os.write(fd, b"".join(kept))


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once and loads it with its start-up log lines dropped."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        _remove_hook()  # once: the real finders answer from here on
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        # the module keeps the real loader: nothing after the import sees this wrapper
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        with log_lines_dropped():
            self.loader.exec_module(module)
        _quiet_python_logs()

    def __getattr__(self, name):
        return getattr(self.loader, name)
