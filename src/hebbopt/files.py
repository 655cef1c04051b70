"""Files that appear complete or not at all, checksums, and the error for a damaged file."""

from __future__ import annotations

import errno
import hashlib
import os
import pathlib
import tempfile
from collections.abc import Callable


class CorruptFileError(ValueError):
    """A file that is truncated, garbled, not of the expected kind or fails its checksum.

    The message names the file and what to do (usually: delete it, or restore it).
    """


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's bytes, read in chunks.

    Args:
        path: the file.
        chunk: bytes read at a time.

    Returns:
        The hexadecimal digest.

    Examples:
        >>> import pathlib, tempfile
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> _ = f.write_bytes(b"abc")
        >>> sha256_file(f)[:16]
        'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> pathlib.Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it onto ``path``.

    A reader (or a run resumed after a crash) sees the old file or the new one, never a partial
    one; on any error the temporary file is removed and ``path`` is untouched. The file gets the
    usual permissions (``0o666`` less the umask), not the temporary file's private ones.

    Args:
        path: the destination; its folder is created if missing.
        write: writes the content to the path it is given.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        OSError: the file could not be written; a full disk (``ENOSPC``) says so and names ``path``.

    Examples:
        >>> import pathlib, tempfile
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> atomic_write(out, lambda tmp: pathlib.Path(tmp).write_text("done")).read_text()
        'done'
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as e:
        pathlib.Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(
                e.errno, f"disk full (no space left on the device) while writing {path}; "
                "the previous version of the file, if any, is kept", str(path),
            ) from e  # fmt: skip
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> pathlib.Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`).

    Serialising to memory first means every write error, a full disk included, is a plain
    :class:`OSError` from Python's own file writing.

    Args:
        path: the destination.
        data: the file's content.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        OSError: as :func:`atomic_write`.
    """
    return atomic_write(path, lambda tmp: pathlib.Path(tmp).write_bytes(data))


def remove_leftovers(folder: str | os.PathLike) -> list[pathlib.Path]:
    """Remove the ``*.tmp`` files that killed :func:`atomic_write` calls left in ``folder``.

    Args:
        folder: the folder (not its subfolders); a missing folder holds nothing.

    Returns:
        The files removed.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for f in folder.glob("*.tmp"):
        if f.is_file():
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed
