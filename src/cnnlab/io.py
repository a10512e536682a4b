"""Writing files so that a crash never leaves a half-written one: temp file + rename.

Each write happens in a temporary folder of its own beside the file, `.cnnlab-tmp-<pid>-<random>/`,
and the finished file is renamed into place. Whatever a writer makes while it works (safetensors,
for one, writes through a `.tmpXXXXXX` file of its own) stays inside that folder, so a process killed
mid-write leaves one folder that is recognisably cnnlab's, and the pid in its name says whether its
writer is still alive: `remove_stale_temporary_files` clears those of writers that are gone, and
touches nothing else. The file renamed into place gets the mode any new file of the user's gets
(0o666 less the umask), whatever mode the writer gave its temporary file.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

TEMP_PREFIX = ".cnnlab-tmp-"
_TEMP_FOLDER = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-[a-z0-9_]+$")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path (with `path`'s name) to write; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=path.parent))
    temp = folder / path.name
    try:
        yield temp
        os.chmod(temp, 0o666 & ~current_umask())  # mkstemp-style writers (safetensors) leave 0600
        os.replace(temp, path)  # atomic on POSIX and Windows within one file system
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def current_umask() -> int:
    """The process's umask, read without changing it where Linux says it (os.umask can only be read
    by setting it, which for a moment gives other threads' new files the wrong mode)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def is_temporary_name(name: str) -> bool:
    """Whether `name` is a temporary folder of cnnlab's atomic writer."""
    return _TEMP_FOLDER.match(name) is not None


def remove_stale_temporary_files(folder: Path) -> list[Path]:
    """Remove from `folder` the temporary folders of cnnlab's writers that are no longer running (a
    process killed mid-write), and return them. Only folders named as `atomic_path` names them are
    touched; a writer that is still alive keeps its own."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_FOLDER.match(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False) or _is_running(int(match.group(1))):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed


def _is_running(pid: int) -> bool:
    """Whether another process with this id is alive now (this process has no write under way when
    it clears its folders, so one of its own id is a leftover of a process whose id it inherited)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: leave its files alone
    return True


def read_json(path: Path) -> Any:
    """A JSON file cnnlab wrote, read back; one that is damaged is named (a CnnlabError), not a traceback."""
    import json

    from cnnlab.errors import CnnlabError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise CnnlabError(f"{path}: not valid JSON (not UTF-8 text: {error})") from None
    except ValueError as error:
        raise CnnlabError(f"{path}: not valid JSON ({error}); it is damaged: restore it or delete it") from None


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as temp:
        temp.write_text(text, encoding="utf-8")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as temp:
        temp.write_bytes(data)
