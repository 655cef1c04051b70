"""Files that appear complete or not at all."""

from __future__ import annotations

import os
import pathlib
import tempfile
from collections.abc import Callable


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
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path
