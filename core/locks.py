"""An exclusive lock between processes that build the same cached thing (the tiny policy's warm start,
the synthetic prompts) in one cache folder: the first builds it, the others wait and then find it built.

``fcntl.flock`` on ``<path>``: the kernel drops the lock when its holder exits, also on a crash or kill,
so a build that died never leaves the cache locked.
"""
from __future__ import annotations

import contextlib
import fcntl
import os


@contextlib.contextmanager
def exclusive(path: str):
    """Hold an exclusive lock on the lock file ``path`` (created with its folder) for the ``with`` block;
    blocks while another process holds it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
