"""What an emitted module's header says about it: the command that regenerates it,
``Regenerate with:  derive-cells CELL --emit TARGET``, read without running the file.

Only the head of a file is read (at most HEAD_LINES lines and HEAD_BYTES bytes): the header is
the module docstring's first lines, and a file that is not a module (megabytes of code, deeply
nested expressions, binary data) is refused without parsing it.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

TARGETS = ("numpy", "torch")
HEAD_LINES = 40
HEAD_BYTES = 64 * 1024
_REGENERATE = re.compile(r"^Regenerate with:\s+(.+)$")
_OPENERS = ('"""', "'''")


class HeaderError(ValueError):
    """A file whose header does not name the cell it was emitted from."""


class NotAModuleError(HeaderError):
    """A file that does not begin like an emitted module (a docstring first)."""


def head(path: str) -> list[str]:
    """The first lines of the file at path: at most HEAD_LINES lines of its first HEAD_BYTES
    bytes, decoded as UTF-8 (undecodable bytes replaced)."""
    if not Path(path).is_file():
        raise HeaderError(f"{path}: no such file")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(HEAD_BYTES)
    except OSError as exc:
        raise HeaderError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return raw.decode("utf-8-sig", errors="replace").split("\n")[:HEAD_LINES]


def docstring_head(path: str) -> list[str]:
    """The lines of the module docstring found in the file's head (comment and blank lines may
    come before it); NotAModuleError if the file does not begin with a docstring."""
    lines = head(path)
    start = next((k for k, line in enumerate(lines)
                  if line.strip() and not line.lstrip().startswith("#")), None)
    if start is None or not lines[start].startswith(_OPENERS):
        raise NotAModuleError(f"{path}: not an emitted module (it does not begin with a "
                              "docstring naming its cell)")
    quote = lines[start][:3]
    first = lines[start][3:]
    if quote in first:
        return [first[:first.index(quote)]]
    body = [first]
    for line in lines[start + 1:]:
        if quote in line:
            body.append(line[:line.index(quote)])
            break
        body.append(line)
    return body


def _unescape(text: str) -> str:
    """A header line as Python reads it (the emitter escapes backslashes and quotes)."""
    try:
        value = ast.literal_eval(f'"{text}"')
    except (SyntaxError, ValueError):
        return text
    return value if isinstance(value, str) else text


def regenerate_command(path: str) -> tuple[str, str]:
    """(CELL as the header spells it, TARGET) of the module file at path."""
    words: list[str] = []
    for line in docstring_head(path):
        found = _REGENERATE.match(line)
        if found:
            try:
                words = shlex.split(_unescape(found.group(1)))
            except ValueError:
                words = []
            break
    if (len(words) != 4 or words[0] != "derive-cells" or words[2] != "--emit"
            or words[3] not in TARGETS):
        raise HeaderError(f"{path}: its header names no cell (no 'Regenerate with:  "
                          "derive-cells CELL --emit TARGET' line)")
    return words[1], words[3]


def cell_of_module(path: str) -> str:
    """The cell the module at path was emitted from: a built-in name, or the spec path its
    header gives, found from the working directory or else beside the module."""
    from derive_cells.spec import builtin_cells

    cell, _ = regenerate_command(path)
    if cell in builtin_cells() or Path(cell).is_file():
        return cell
    beside = Path(path).parent / cell
    if beside.is_file():
        return str(beside)
    raise HeaderError(f"{path}: its header names the spec {cell}, which is not found from "
                      "here or beside the module")


def read_prefix(path: str, size: int) -> bytes:
    """At most size bytes from the start of the file at path."""
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError as exc:
        raise HeaderError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def first_difference(path: str, fresh: str) -> str | None:
    """None if the file at path holds exactly the text fresh; else its first differing line,
    as 'line N: kept ... | emitted ...'. Reads no more of the file than fresh is long (plus one
    byte), so a huge file is compared as quickly as a small one."""
    want = fresh.encode("utf-8")
    kept = read_prefix(path, len(want) + 1)
    if kept == want:
        return None
    ours = kept.decode("utf-8", errors="replace").split("\n")
    theirs = fresh.split("\n")
    for number, (a, b) in enumerate(zip(ours, theirs, strict=False), start=1):
        if a == b:
            continue
        if number == len(ours) and a == "" and len(kept) <= len(want):
            return f"line {number}: the file ends where the emitted module goes on"
        if number == len(theirs) and b == "" or number == len(ours) and len(kept) > len(want):
            return f"line {number}: the file goes on past the emitted module's end"
        return f"line {number}: kept {_show(a)} | emitted {_show(b)}"
    number = min(len(ours), len(theirs)) + 1
    if len(ours) > len(theirs) or len(kept) > len(want):
        return f"line {number}: the file goes on past the emitted module's end"
    return f"line {number}: the file ends where the emitted module goes on"


def _show(line: str, width: int = 80) -> str:
    line = line.strip()
    return repr(line if len(line) <= width else line[:width] + "...")
