"""Where the commands write their results: ``-o FILE``, ``-o -`` (stdout), and what a path may be.

- ``-`` is stdout: text through click, bytes (a PDF, a PNG) to ``sys.stdout.buffer``.
- A regular file, or a path that does not exist yet, is replaced atomically: the data goes to a
  temporary file in the same folder, which then replaces the target (``os.replace``). A failure
  leaves no partial file and the old content intact. A new file gets the permissions ``open()``
  would give it; a replaced one keeps its own.
- A symbolic link is written through: its target is replaced and the link stays a link.
- Anything else that is not a regular file (a FIFO, ``/dev/null``, a terminal, ``/dev/stdout``
  and the other ``/dev`` and ``/proc`` paths) is opened and written in place, as a shell's ``>``
  would, never replaced.
- A folder is an error; so is an output that names one of the command's inputs (the same file,
  however it is spelled). check_outputs finds both (and a missing or read-only folder) before
  anything is computed or written; write() still reports whatever fails when it writes.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import tempfile
from pathlib import Path

import click

STDOUT = "-"
IN_PLACE_ROOTS = ("/dev/", "/proc/")  # /dev/stdout, /dev/fd/1, /proc/self/fd/1: never replaced


class OutputError(Exception):
    """An output that cannot or must not be written; the message says why."""


def is_stdout(path: str) -> bool:
    return path == STDOUT


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one existing file (through links and relative spellings)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def check_outputs(outputs: dict[str, str | None],
                  inputs: dict[str, str | os.PathLike]) -> None:
    """Refuse outputs that would overwrite an input, or that name the same file twice.

    outputs maps how the user named each output (``-o``, ``--plot``) to its path; inputs map
    how the user named each input (a spec file, a cell) to the file it is read from.
    """
    given = [(label, path) for label, path in outputs.items() if path and not is_stdout(path)]
    for label, path in given:
        problem = _unwritable(path)
        if problem:
            raise OutputError(f"cannot write {path}: {problem}")
        for source, source_path in inputs.items():
            if same_file(path, source_path):
                raise OutputError(f"{label} {path} is the input {source}; refusing to "
                                  "overwrite it (write to another file)")
    for k, (label, path) in enumerate(given):
        for other_label, other in given[k + 1:]:
            if path == other or same_file(path, other):
                raise OutputError(f"{label} and {other_label} both name {path}; give them "
                                  "different files")


def _unwritable(path: str) -> str | None:
    """Why path cannot be written, as far as can be told before writing (a folder, a missing
    or read-only folder to put it in); None when it looks writable."""
    if os.path.isdir(path):
        return os.strerror(errno.EISDIR)
    if os.path.exists(path) and not os.path.isfile(path):
        return None  # a FIFO or device: opened when written
    folder = os.path.dirname(os.path.realpath(path)) or "."
    if not os.path.isdir(folder):
        return os.strerror(errno.ENOENT if not os.path.exists(folder) else errno.ENOTDIR)
    if not os.access(folder, os.W_OK | os.X_OK):
        return os.strerror(errno.EACCES)
    return None


def write(path: str, data: str | bytes) -> None:
    """Write text or bytes to path as the module docstring describes; OSError on failure."""
    if is_stdout(path):
        _write_stdout(data)
        return
    try:
        st = os.stat(path)  # follows symbolic links: what the data would land in
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if (st is not None and not stat.S_ISREG(st.st_mode)) or _special(path):
        _write_in_place(path, data)
        return
    target = Path(os.path.realpath(path))  # a link's target (also a dangling link's)
    _replace_atomically(target, data, st)


def _special(path: str) -> bool:
    absolute = os.path.abspath(path)
    return absolute.startswith(IN_PLACE_ROOTS) or os.path.realpath(path).startswith(IN_PLACE_ROOTS)


def _write_stdout(data: str | bytes) -> None:
    if isinstance(data, bytes):
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        click.echo(data, nl=False)


def _write_in_place(path: str, data: str | bytes) -> None:
    if isinstance(data, bytes):
        with open(path, "wb") as fh:
            fh.write(data)
    else:
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(data)


def _replace_atomically(target: Path, data: str | bytes, st: os.stat_result | None) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        if isinstance(data, bytes):
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        else:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(data)
        if st is not None:
            mode = stat.S_IMODE(st.st_mode)  # a replaced file keeps its permissions
        else:
            mask = os.umask(0)
            os.umask(mask)
            mode = 0o666 & ~mask  # as open() would have made it, not mkstemp's 0600
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
