"""An inter-process file lock for artefacts that concurrent runs may both want to create.

Training runs of one stage can run side by side (``launch.parallel_runs``); two of them may
need the same pair store or kNN table. Whoever takes the lock first builds it, the other
waits and then finds it made. POSIX ``flock``: released when the holder exits, even if it
dies. Where ``fcntl`` does not exist (Windows) the lock is a no-op and runs stay sequential
(:func:`icdlib.pipeline.training.parallel_slots` gives one slot there).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

HAVE_LOCKS = fcntl is not None


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
