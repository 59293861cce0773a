"""What an emitted module's header says about it: the command that regenerates it,
``Regenerate with:  derive-cells CELL --emit TARGET``, read without running the file."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

TARGETS = ("numpy", "torch")


class HeaderError(ValueError):
    """A file whose header does not name the cell it was emitted from."""


def regenerate_command(path: str) -> tuple[str, str]:
    """(CELL as the header spells it, TARGET) of the module file at path."""
    if not Path(path).is_file():
        raise HeaderError(f"{path}: no such file")
    try:
        doc = ast.get_docstring(ast.parse(Path(path).read_text(encoding="utf-8"))) or ""
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError) as exc:
        raise HeaderError(f"{path}: cannot read its header ({exc})") from None
    found = re.search(r"^Regenerate with:\s+(.+)$", doc, re.M)
    try:
        words = shlex.split(found.group(1)) if found else []
    except ValueError:
        words = []
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
