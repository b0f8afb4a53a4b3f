"""Durable writes: what is on disk after a crash or power loss is either the old state or the new one.

A file's bytes survive power loss only once the file is fsynced; its *name* survives only once the
directory holding it is fsynced too. :func:`fsync_tree` does both for a whole folder (a checkpoint),
:func:`write_durably` writes one small file atomically (temporary file, fsync, rename, fsync of the
folder), :func:`reason` turns an ``OSError`` into the words a message needs ("no space left on device").
Everything here raises plain ``OSError``; callers say which path of the run failed.
"""
from __future__ import annotations

import errno
import os


def fsync_file(path: str) -> None:
    """Flush ``path``'s data to stable storage (any process's writes to it on this machine)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    """Flush ``path``'s directory entries (names created, renamed or removed in it)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as err:  # some filesystems cannot fsync a directory: nothing more can be done there
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def fsync_tree(root: str) -> None:
    """fsync every file under ``root``, then every directory, deepest first (``root`` included)."""
    dirs = []
    for folder, _, files in os.walk(root):
        dirs.append(folder)
        for name in files:
            fsync_file(os.path.join(folder, name))
    for folder in reversed(dirs):
        fsync_dir(folder)


def write_durably(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably: readers see the old file or the whole new one."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(path) or ".")


def reason(err: OSError) -> str:
    """Lower-case cause of an ``OSError`` (``no space left on device``, ``permission denied``...)."""
    if err.errno is not None:
        return os.strerror(err.errno).lower()
    return str(err) or type(err).__name__
