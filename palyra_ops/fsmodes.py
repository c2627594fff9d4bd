"""Owner-only state files (SPEC §4): 0700 directories and 0600 files whatever the umask.

Everything palyra-ops keeps under the state root — the journal and its WAL/SHM, the token, the
source and compile caches, the skills index and trust store, the memory index, lock files — is
created through these helpers. Creating with the final mode (not chmod afterwards) leaves no window
in which another user could open a file; the explicit chmod after creation covers a umask that
strips owner bits. SQLite creates `-wal`/`-shm` with the main file's mode, so creating the main file
0600 first is what keeps those private too.

Caches are *trusted* input (the source cache decides what `apply` applies, the compile cache holds
native code), so `trusted()` tells whether a path could have been written by someone else: a cache
entry or directory that is not ours, or is group/world-writable, is ignored and rebuilt.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path | str) -> Path:
    """Create `path` and any missing parents as 0700; existing directories are left as they are
    (a parent such as `~/.local/state` is the user's business, not ours)."""
    path = Path(path)
    missing: list[Path] = []
    p = path
    while not p.exists() and not p.is_symlink():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:
            continue  # made by a concurrent process meanwhile: not ours to re-mode
        os.chmod(d, DIR_MODE)
    return path


def private_file(path: Path | str) -> Path:
    """Make sure `path` exists as a 0600 file (created empty when missing, parents 0700).

    An existing file is left alone except that group/world permission bits are removed when we
    own it: a journal made by an older version with the umask's mode would otherwise hand its mode
    on to every new WAL file.
    """
    path = Path(path)
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    except FileExistsError:
        tighten(path)
        return path
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def tighten(path: Path | str) -> None:
    """Drop group/world bits of a file we own (a no-op for anything else)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return
    if st.st_uid == os.geteuid() and stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
        os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)


def open_private(path: Path | str, flags: int = os.O_RDWR) -> int:
    """`os.open(path, flags | O_CREAT, 0600)` with the parents made 0700: for lock files."""
    path = Path(path)
    private_dir(path.parent)
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    if os.fstat(fd).st_mode & 0o077:
        os.fchmod(fd, FILE_MODE)
    return fd


def write_private(path: Path | str, data: bytes | str, *, durable: bool = True) -> None:
    """Atomically replace `path` with `data`: a 0600 temp file in the same directory, fsynced,
    then renamed, so readers see the old or the new content and never a torn or public file.

    `durable=False` skips the fsync, for caches: after a power cut such a file may be empty or
    truncated, which reads as a miss (it does not parse), never as a wrong entry. An apply of
    1,000 files spent seconds fsyncing its source cache."""
    path = Path(path)
    private_dir(path.parent)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def trusted(path: Path | str) -> bool:
    """True when only we could have written `path`: owned by our effective uid and not writable by
    group or others. A missing path is not trusted (there is nothing to trust)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022 and not stat.S_ISLNK(st.st_mode)


def cache_dir(base: Path | str, path: Path | str, *, create: bool) -> bool:
    """Whether the cache directory `path` (below `base`, e.g. the journal's directory) may be used.

    Every level from `base`'s child down to `path` must be trusted: a writable directory lets
    another user swap entries around even when every entry is ours. With `create` a missing level
    is made 0700 and an untrusted one is removed and made again (ignore and rebuild: a cache only
    costs time); without it (read-only commands) a missing or untrusted level just means no cache.
    """
    base, path = Path(base), Path(path)
    levels = [path, *path.parents]
    levels = levels[: levels.index(base)] if base in levels else [path]
    if create:
        try:
            private_dir(levels[-1].parent)  # e.g. the state root before the journal exists
        except OSError:
            return False
    for level in reversed(levels):
        if level.is_dir() and not level.is_symlink() and trusted(level):
            continue
        if not create or not _remake_private(level):
            return False
    return True


def _remake_private(level: Path) -> bool:
    """Replace an untrusted or missing cache level by a fresh 0700 directory of ours."""
    try:
        if level.is_symlink() or level.is_file():
            level.unlink()
        elif level.exists():
            import shutil

            shutil.rmtree(level)
        os.mkdir(level, DIR_MODE)
        os.chmod(level, DIR_MODE)
    except FileExistsError:
        return trusted(level)
    except OSError:
        return False
    return True


def trusted_fd(fd: int) -> bool:
    """`trusted()` for an open file, so the check and the read concern the same inode."""
    st = os.fstat(fd)
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022
