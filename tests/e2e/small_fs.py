"""A small real filesystem for the spool: a tmpfs of a few kilobytes, so ENOSPC is the kernel's.

Mounting needs root (the test machines run as root); a mount that fails makes the test fail, it
never skips. The mount is always undone, lazily if a process still holds a file in it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "256k", *, read_only: bool = False) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0755" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True, capture_output=True)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)


def fill(path: Path, leave: int = 0, name: str = "filler") -> Path:
    """Take the filesystem's free space but `leave` bytes with zeros in `path/name`; delete the
    file to free the space again."""
    free = shutil.disk_usage(path).free - leave
    filler = path / name
    with filler.open("wb", buffering=0) as f:
        while free > 0:
            try:
                free -= f.write(b"\0" * min(free, 4096))
            except OSError:
                break
    return filler
