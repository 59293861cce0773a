"""The module cache behind ``Cell.module()``: an emitted module is written to a file named by a
hash of its source (so inspect, pdb and tracebacks show real lines) and run from the source text
that was checked against that file, never from bytecode.

- One module per source in a process: the same text gives the same module object (classes
  defined in it stay picklable), across Cell objects and threads.
- Writes go to a uniquely named temp file created exclusively in the cache folder, then
  os.replace: no predictable name to plant a symlink at, no half-written file to read, safe
  across threads and processes.
- A cache folder that other users can write to, or that the user does not own, is refused; an
  unusable one (a file, read-only, full) is replaced by a private temp folder, said once.
"""

from __future__ import annotations

import atexit
import errno
import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import stat
import sys
import tempfile
import threading
from pathlib import Path
from types import ModuleType

_LOCK = threading.RLock()
_MODULES: dict[str, ModuleType] = {}  # sha256 of the source -> the module run from it
_FALLBACK: list[Path] = []  # the private temp folder, once one was needed


class CacheError(OSError):
    """A cache folder that is refused (others can write to it) or a file that keeps changing."""


class SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Runs a file's source text (or the text given, checked against the file): bytecode in
    __pycache__ is neither read nor written, so a planted or stale .pyc never runs."""

    def __init__(self, fullname: str, path: str, source: bytes | None = None):
        super().__init__(fullname, path)
        self.source = source

    def get_code(self, fullname):
        data = self.source if self.source is not None else self.get_data(self.path)
        return compile(data, self.path, "exec", dont_inherit=True)


def run_file(path: Path, name: str, source: bytes | None = None) -> ModuleType:
    """Run a Python file (or its checked text `source`) as module `name` in sys.modules."""
    loader = SourceOnlyLoader(name, str(path), source)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def cache_dir() -> Path:
    """Where emitted modules are written before they are imported: $DERIVE_CELLS_CACHE, else
    $XDG_CACHE_HOME/derive-cells/modules (~/.cache/derive-cells/modules)."""
    if os.environ.get("DERIVE_CELLS_CACHE"):
        return Path(os.environ["DERIVE_CELLS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "derive-cells" / "modules"


def load_module(source: str, stem: str) -> ModuleType:
    """The module run from `source`, written as <cache>/<stem>_<hash>.py; the same source gives
    the same module object for the life of the process."""
    data = source.encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    with _LOCK:
        module = _MODULES.get(digest)
        if module is None:
            name = f"{stem}_{digest[:16]}"
            path = _store(f"{name}.py", data)
            module = run_file(path, f"derive_cells_{name}", data)
            _MODULES[digest] = module
        return module


def check_folder(folder: Path) -> None:
    """Refuse (CacheError) a folder that other users can write to or that is not the user's."""
    info = folder.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(folder))
    mode = stat.S_IMODE(info.st_mode)
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        raise CacheError(f"derive-cells: refusing the module cache {folder}: it belongs to "
                         f"user id {info.st_uid}, not to you; set DERIVE_CELLS_CACHE to a "
                         f"folder of your own")
    if mode & 0o022 and not mode & stat.S_ISVTX:
        raise CacheError(f"derive-cells: refusing the module cache {folder}: other users can "
                         f"write to it (mode {mode:04o}); run `chmod go-w {folder}` or set "
                         f"DERIVE_CELLS_CACHE to a private folder")


def write_checked(folder: Path, filename: str, data: bytes) -> Path:
    """folder/filename holding exactly `data`: read and compared, (re)written if it differs."""
    path = folder / filename
    for _ in range(3):
        if _read(path, len(data)) == data:
            return path
        _replace(folder, path, data)
    raise CacheError(f"derive-cells: {path} keeps changing while it is written; is another "
                     f"program writing to the module cache?")


def _store(filename: str, data: bytes) -> Path:
    try:
        folder = cache_dir().absolute()
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        check_folder(folder)
        return write_checked(folder, filename, data)
    except CacheError:
        raise
    except (OSError, RuntimeError) as exc:  # RuntimeError: Path.home() without a home
        return write_checked(_fallback(exc), filename, data)


def _fallback(reason: BaseException) -> Path:
    if not _FALLBACK:
        folder = Path(tempfile.mkdtemp(prefix="derive-cells-modules-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _FALLBACK.append(folder)
        why = str(reason)
        if isinstance(reason, OSError) and reason.strerror:
            why = f"{reason.filename}: {reason.strerror}" if reason.filename else reason.strerror
        print(f"derive-cells: the module cache is unusable ({why}); using {folder} for this "
              f"process (set DERIVE_CELLS_CACHE to a writable folder)", file=sys.stderr)
    return _FALLBACK[0]


def _read(path: Path, size: int) -> bytes | None:
    """The first size + 1 bytes of a regular file at path (no symlink followed), else None."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink: replaced, never read through
            return None
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read(size + 1)


def _replace(folder: Path, path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
