"""Where a reader puts one record it cannot use, and the checks that decide it for text-based layouts.

A record that is bad on its own (a path that leaves the dataset root, bytes that are not UTF-8, a
field too long to be a label, a corrupt binary record) should not stop a whole `prepare`: the reader
hands its one-line message to `Rejects.add`, which raises it at once when strict (under
`prepare --strict`, and whenever a reader is called on its own), and otherwise keeps it for
`prepare` to report in metadata.json's `skipped`. A problem that says the whole file is wrong (a
header, a count, an unknown class) stays a `UserError` in the reader: skipping it would quietly
change the labels.
"""

from __future__ import annotations

import csv
import pathlib
from typing import Iterator

from trainables.errors import UserError

class Rejects:
    """The records a reader left out, each as {"file", "split", "reason"}; strict raises the first."""

    def __init__(self, strict: bool = True):
        self.strict, self.rows = strict, []

    def add(self, reason: str, file: str = "", split: str = "") -> None:
        if self.strict:
            raise UserError(reason)
        self.rows.append({"file": printable(file), "split": split, "reason": reason})


def printable(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters, with undecodable bytes (surrogate escapes) shown as U+FFFD."""
    return text[:limit].encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def is_utf8(text: str) -> bool:
    """False when `text` came from bytes that are not UTF-8 (read with errors='surrogateescape')."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def outside_problem(name: str) -> str:
    """Why the relative path `name` would not stay inside its folder (absolute, a `..` part, a NUL
    byte), or "" when it stays inside. Backslashes count as separators, as a Windows export writes them."""
    posix = name.replace("\\", "/")
    if not posix.strip():
        return "is empty"
    if "\x00" in posix:
        return "holds a NUL byte"
    path = pathlib.PurePosixPath(posix)
    if path.is_absolute() or pathlib.PureWindowsPath(name).drive:
        return "is an absolute path"
    if ".." in path.parts:
        return "has a '..' part"
    return ""


def csv_rows(path: pathlib.Path, rejects: Rejects, *, fix_encoding: str) -> Iterator[tuple[int, list[str]]]:
    """(line, fields) of each row of a UTF-8 CSV (a BOM is fine), the header first. A later row whose
    bytes are not UTF-8, or that csv cannot split (a field over its 128 KiB limit), goes to `rejects`
    instead; such a header is a `UserError`, since no row can be read without it."""
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader, header_seen = csv.reader(f), False
        while True:
            try:
                row = next(reader)
                problem = "" if is_utf8("".join(row)) else f"holds bytes that are not UTF-8 text; {fix_encoding}"
            except StopIteration:
                return
            except csv.Error as err:  # csv goes on at the next line after a field over its limit
                row, problem = [], f"cannot be read as CSV ({err}); fix or remove that row"
            line = reader.line_num
            if not problem:
                header_seen = True
                yield line, row
            elif not header_seen:
                raise UserError(f"{path} line {line}: the header {problem}")
            else:
                rejects.add(f"{path} line {line} {problem}", file=f"{path.name} line {line}")
