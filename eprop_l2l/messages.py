"""One-line messages that are safe to print: what a user typed (a value, a path, an override) is echoed with
its control characters escaped (no terminal escape sequences, no line breaks) and cut to a readable length, and
operating-system failures (``OSError``) are described by the problem and the way out.

Every refusal and every fault of ``eprop-l2l`` ends as ``eprop-l2l: <one line>`` on stderr; the front end
(:func:`eprop_l2l.cli._fail`) passes every message through :func:`one_line`.
"""

from __future__ import annotations

import errno
import os
import re
import unicodedata

VALUE_LIMIT = 80  # characters of one echoed value
PATH_LIMIT = 160  # characters of one echoed path (cut in the middle: the file name stays)
WORD_LIMIT = 200  # characters of one unbroken word of a message (a last resort for echoes not cut before)
LINE_LIMIT = 500  # characters of a whole message line


def escape(text: str) -> str:
    """Control and format characters (ESC, CR, LF, BEL, DEL, C1, bidi overrides, ...) as ``\\x1b``/``\\u202e``."""
    out = []
    for char in str(text):
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(char)
    return "".join(out)


def cut(text: str, limit: int = VALUE_LIMIT) -> str:
    """``text`` cut in the middle to about ``limit`` characters, saying how long it was: its start and its end
    stay (a key and a value, a directory and a file name)."""
    text = str(text)
    if len(text) <= limit:
        return text
    marker = f"…[{len(text)} chars]…"
    room = max(limit - len(marker), 2)
    return f"{text[:room - room // 2]}{marker}{text[-(room // 2):]}"


def shown(value, limit: int = VALUE_LIMIT) -> str:
    """A value as a message shows it: ``repr`` for strings, escaped and cut."""
    return cut(escape(repr(value) if isinstance(value, str) else str(value)), limit)


def shown_path(path) -> str:
    """A path as a message shows it: quoted, escaped, cut in the middle at ``PATH_LIMIT``."""
    return shown(os.fsdecode(path) if isinstance(path, bytes) else str(path), PATH_LIMIT)


def one_line(message: str, limit: int = LINE_LIMIT) -> str:
    """A whole message made printable: control characters escaped, every unbroken run of more than
    ``WORD_LIMIT`` characters cut to ``VALUE_LIMIT``, and the line kept to ``limit`` characters (its start,
    which names the key, and its end, which names the way out)."""
    text = escape(str(message))
    text = re.sub(rf"\S{{{WORD_LIMIT + 1},}}", lambda m: cut(m.group(0)), text)
    if len(text) > limit:
        head = limit * 2 // 3
        text = f"{text[:head]} … {text[-(limit - head - 3):]}"
    return text


_WAY_OUT = {
    errno.ENOSPC: "no space left on the file system: free space or choose a {place} on another file system",
    errno.EDQUOT: "disk quota exceeded: free space or choose a {place} on another file system",
    errno.EROFS: "read-only file system: choose a writable {place}",
    errno.EACCES: "permission denied: choose a directory you may write (or fix its permissions)",
    errno.EPERM: "operation not permitted: choose a directory you may write (or fix its permissions)",
    errno.ENOTDIR: "a part of the path is a file, not a directory: choose another path",
    errno.EISDIR: "is a directory where a file was expected: choose another path",
    errno.ENAMETOOLONG: "file name too long (at most 255 bytes per name): choose a shorter path",
    errno.ENOENT: "no such file or directory",
    errno.EEXIST: "already exists",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n)",
    errno.ENFILE: "too many open files on the system",
    errno.EIO: "input/output error: the disk or file system failed; check it, or choose another {place}",
    errno.ELOOP: "too many symbolic links in the path",
    errno.EBUSY: "device or resource busy",
}


def os_problem(err: OSError, doing: str = "", place: str = "run.dir") -> str:
    """``OSError`` as one line: what was being done, on which path, the problem and the way out; ``place`` is
    the option the user chose the location with (``run.dir`` for train and evaluate, ``--out`` for the commands
    that write an output)."""
    name = errno.errorcode.get(err.errno or 0, "")
    way_out = _WAY_OUT.get(err.errno or 0)
    problem = way_out.format(place=place) if way_out else (err.strerror or str(err) or type(err).__name__)
    what = " ".join(w for w in (doing, shown_path(err.filename) if err.filename not in (None, "") else "") if w)
    return (f"{what}: " if what else "") + problem + (f" ({name})" if name else "")
