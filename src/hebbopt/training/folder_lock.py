"""The lock of a run folder: ``run.lock``, held with ``flock`` while a run holds the folder.

One run at a time per folder: the lock file names its process and host (so that a message can say
who holds the folder), and the system drops the ``flock`` of a process that dies, so a dead holder
is told from a live one even where process ids are not visible; a run takes over a dead holder's
folder and says so.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import socket
import time
from typing import Any

from hebbopt.training.config import ConfigError

try:
    import fcntl
except ImportError:  # not POSIX: the lock names its process, without flock
    fcntl = None  # type: ignore[assignment]

LOCK = "run.lock"
"""The lock file of a run folder held by a run: ``{"pid", "host", "kind", "since", "token"}``."""

_HELD: dict[pathlib.Path, FolderLock] = {}  # the folders this process holds, by lock file


class FolderLock:
    """``run.lock``, held with ``flock`` (released by the system when the process dies, so a
    dead holder is told from a live one even where process ids are not visible) and naming its
    process and host (so a message can say who holds the folder). Made by :meth:`acquire`.

    Args:
        file: the lock file.
        fd: its open descriptor, holding the ``flock``.
        token: this holder's random token, written in the file (a lock taken over is not ours to
            delete).
    """

    def __init__(self, file: pathlib.Path, fd: int, token: str) -> None:
        self.file, self.fd, self.token = file, fd, token

    @classmethod
    def acquire(cls, file: pathlib.Path, folder: pathlib.Path, kind: str) -> tuple[FolderLock, str | None]:
        """The lock of ``folder``, and the message to log if a dead run's lock was taken over.

        Args:
            file: the lock file (``folder / LOCK``).
            folder: the run folder, for messages.
            kind: the kind of run taking it, recorded in the lock file.

        Returns:
            ``(lock, message)``: the held lock, and a line for the run's log when a dead run's
            lock was taken over (else None).

        Raises:
            ConfigError: another live run holds it, or a run on another host.
        """
        earlier = _HELD.get(file)
        if earlier is not None:  # a run of this process, now over (they follow each other)
            earlier.release()
        while True:
            fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    holder = _holder(file) or {}
                    raise ConfigError(_busy_message(folder, file, holder)) from None
            try:  # the lock file may have been released (deleted) between open and flock
                if os.fstat(fd).st_ino == os.stat(file).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        holder = _holder(file)
        state = _state(holder, file, locked_by_us=True)
        if state in ("live", "elsewhere"):
            os.close(fd)
            raise ConfigError(_busy_message(folder, file, holder or {}))
        took_over = None
        if state == "stale" and holder:
            took_over = (
                f"{folder}: the run that held it (pid {holder.get('pid')} on {holder.get('host')}, since "
                f"{holder.get('since')}) is no longer running; taking it over"
            )
        token = secrets.token_hex(8)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "kind": kind,
                  "since": time.strftime("%Y-%m-%d %H:%M:%S"), "token": token}  # fmt: skip
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode())
        lock = cls(file, fd, token)
        _HELD[file] = lock
        return lock, took_over

    def release(self) -> None:
        """Give the folder back: delete the lock file if it is still this lock's (not taken over),
        and drop the ``flock``. Safe to call more than once."""
        if self.fd is None:
            return
        holder = _holder(self.file)
        if holder is not None and holder.get("token") == self.token:  # still ours: not taken over
            self.file.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None
        if _HELD.get(self.file) is self:
            del _HELD[self.file]


def release_locks() -> None:
    """Release every run folder this process holds (the command line calls it as a command ends,
    an error included)."""
    for lock in list(_HELD.values()):
        lock.release()


def _holder(file: pathlib.Path) -> dict | None:
    try:
        holder = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _alive(pid: Any) -> bool:
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return False
    return True


def _flocked(file: pathlib.Path) -> bool:
    """Whether some open file holds ``file``'s flock (a live run; the system drops a dead one's)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(file, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's flock, and only it
    return False


def _state(holder: dict | None, file: pathlib.Path, *, locked_by_us: bool = False) -> str:
    """``free`` (no lock), ``ours`` (this process), ``live`` (another live process on this host),
    ``elsewhere`` (another host: its life cannot be checked) or ``stale`` (a process that is gone)."""
    if holder is None:
        if not file.exists():
            return "free"
        return "stale" if locked_by_us or not _flocked(file) else "live"
    if holder.get("host") != socket.gethostname():
        return "elsewhere"
    if holder.get("pid") == os.getpid():
        return "ours"
    if _alive(holder.get("pid")) or (not locked_by_us and _flocked(file)):
        return "live"
    return "stale"


def busy(file: pathlib.Path, folder: pathlib.Path) -> str | None:
    """Why ``folder`` cannot be taken now (another live run, or a run on another host), or None.

    Args:
        file: the folder's lock file.
        folder: the run folder, for the message.

    Returns:
        The message, or None.
    """
    holder = _holder(file)
    if _state(holder, file) in ("live", "elsewhere"):
        return _busy_message(folder, file, holder or {})
    return None


def _busy_message(folder: pathlib.Path, file: pathlib.Path, holder: dict) -> str:
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('since', '?')}"
    if holder.get("host") not in (None, socket.gethostname()):
        return (
            f"{folder} is held by a run on another host ({who}), which cannot be checked from here: "
            f"wait for it to end, or pick another run.dir; if it has ended, delete {file}"
        )
    return (
        f"{folder} is in use by another run ({who}): wait for it to end, or pick another run.dir "
        f"(if that process is not a run, delete {file})"
    )


def stale_note(file: pathlib.Path) -> str:
    """A note for a refusal message when the lock's holder has died (``--resume`` takes it over).

    Args:
        file: the folder's lock file.

    Returns:
        The note (starting with a space), or an empty string.
    """
    holder = _holder(file)
    if holder is not None and _state(holder, file) == "stale":
        return (
            f" (its process, pid {holder.get('pid')}, is no longer running: --resume takes the folder over)"
        )
    return ""
