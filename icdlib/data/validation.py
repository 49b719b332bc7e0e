"""Decoding many images in parallel, remembering what was already checked.

:func:`check_files` decodes a list of image files with a process pool (chunks of
:data:`CHUNK` files per task) and returns ``{path: error message}`` for the faulty ones.
Given a cache file, it records each checked file's ``(size, mtime_ns, error or None)``
and, on later runs, re-decodes only files whose size or modification time changed: a
rerun over millions of unchanged files costs one ``stat`` per file.

The cache is one JSON file (default name :data:`CACHE_NAME`), grouped by folder with
parallel lists, so two million entries stay compact::

    {"version": 1, "check": "verify+load",
     "folders": {"/abs/folder": {"names": [...], "size": [...], "mtime_ns": [...],
                                 "errors": {"name": "message"}}}}

It is written atomically (a temporary file, then ``os.replace``), at the end of a run and
every :data:`SAVE_EVERY` seconds during a long one, so an interrupted run keeps its work.
It is not an icdlib build's ``manifest.json``, which lists what a build wrote.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from icdlib.atomic import write_text

CACHE_NAME = ".icdlib-validation.json"
CACHE_VERSION = 1
CHECK_KIND = "verify+load"  # what an "ok" entry vouches for; another kind invalidates the cache
CHUNK = 256  # files per pool task (fewer when there are few files)
SAVE_EVERY = 60.0  # seconds between cache saves during a run


def check_image(path: Path) -> None:
    """Raise ``ValueError`` naming ``path`` unless it is a complete, decodable image."""
    try:
        with Image.open(path) as img:
            img.verify()  # structure and checksums, without decoding pixels
        with Image.open(path) as img:
            img.load()  # full decode: catches truncated data that verify() lets through
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot decode image {path}: {e}") from e


def _check_chunk(paths: list[str]) -> list[str | None]:
    """Error message (or None) of each path; runs in a pool process."""
    out: list[str | None] = []
    for p in paths:
        try:
            check_image(Path(p))
            out.append(None)
        except (ValueError, OSError) as e:
            out.append(str(e) if isinstance(e, ValueError) else f"cannot read image {p}: {e}")
    return out


def cache_file(cache: str | Path) -> Path:
    """The cache file of ``cache``: ``cache/CACHE_NAME`` for a folder, else ``cache`` itself."""
    cache = Path(cache)
    return cache / CACHE_NAME if cache.is_dir() else cache


class Cache:
    """The records of one cache file: ``{folder: {name: (size, mtime_ns, error)}}``."""

    def __init__(self, path: Path):
        self.path = path
        self.folders: dict[str, dict[str, tuple[int, int, str | None]]] = {}
        if not path.is_file():
            return
        try:
            data = json.loads(path.read_text())
            if data.get("version") != CACHE_VERSION or data.get("check") != CHECK_KIND:
                return  # another format or check: start afresh
            for folder, rec in data["folders"].items():
                errors = rec.get("errors", {})
                self.folders[folder] = {n: (int(s), int(m), errors.get(n))
                                        for n, s, m in zip(rec["names"], rec["size"], rec["mtime_ns"], strict=True)}
        except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:
            warnings.warn(f"{path}: unreadable validation cache ({type(e).__name__}: {e}); checking every image",
                          stacklevel=3)
            self.folders = {}

    def lookup(self, path: str, size: int, mtime_ns: int) -> tuple[bool, str | None]:
        """``(known, error)``: known when the cache holds ``path`` with this size and mtime."""
        folder, name = os.path.split(path)
        rec = self.folders.get(folder, {}).get(name)
        if rec is None or rec[0] != size or rec[1] != mtime_ns:
            return False, None
        return True, rec[2]

    def save(self, fresh: dict[str, dict[str, tuple[int, int, str | None]]]) -> None:
        """Write the cache: ``fresh`` folders replace their old records, others are kept."""
        folders = {**self.folders, **fresh}
        data = {"version": CACHE_VERSION, "check": CHECK_KIND, "folders": {}}
        for folder in sorted(folders):
            recs = folders[folder]
            names = sorted(recs)
            data["folders"][folder] = {
                "names": names, "size": [recs[n][0] for n in names], "mtime_ns": [recs[n][1] for n in names],
                "errors": {n: recs[n][2] for n in names if recs[n][2] is not None},
            }
        write_text(self.path, json.dumps(data, separators=(",", ":")))


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def check_files(paths: list[Path], workers: int = 1, cache: str | Path | None = None, stop_at_first: bool = True,
                desc: str = "check images", progress: bool = True) -> dict[Path, str]:
    """Decode ``paths``; return ``{path: error message}`` of the faulty ones.

    Args:
        paths: the image files, in the order faults are reported.
        workers: processes (1: decode in this process).
        cache: a cache file, or a folder to hold :data:`CACHE_NAME`, or None for none.
        stop_at_first: stop once the first fault (in ``paths`` order) is known; the
            result then holds that fault (and any others found on the way).
        desc, progress: the tqdm bar.
    """
    if int(workers) < 1:
        raise ValueError(f"check_files: workers must be >= 1, got {workers}")
    store = Cache(cache_file(cache)) if cache is not None else None
    keys = [os.path.abspath(p) for p in paths]
    stats = [_stat(k) for k in keys]
    fresh: dict[str, dict[str, tuple[int, int, str | None]]] = {}
    errors: dict[int, str] = {}
    todo: list[int] = []
    for i, (key, st) in enumerate(zip(keys, stats, strict=True)):
        if st is None:
            errors[i] = f"image not found or unreadable: {paths[i]}"
            continue
        known, err = store.lookup(key, *st) if store is not None else (False, None)
        if known:
            _record(fresh, key, st, err)
            if err is not None:
                errors[i] = err
        else:
            todo.append(i)
    if stop_at_first and errors and (not todo or min(errors) < todo[0]):
        todo = []  # the first fault in order is already known
    last_save = time.monotonic()
    size = max(1, min(CHUNK, -(-len(todo) // (4 * int(workers)))))  # small jobs still spread over workers
    chunks = [todo[k:k + size] for k in range(0, len(todo), size)]
    bar = tqdm(total=len(todo), desc=desc, leave=False, mininterval=2.0, disable=not progress or not todo)
    results = _run(chunks, [[keys[i] for i in c] for c in chunks], workers)
    try:
        for chunk, result in results:
            for i, err in zip(chunk, result, strict=True):
                _record(fresh, keys[i], stats[i], err)
                if err is not None:
                    errors[i] = err
            bar.update(len(chunk))
            if store is not None and time.monotonic() - last_save > SAVE_EVERY:
                store.save(_merged(store, fresh))
                last_save = time.monotonic()
            if stop_at_first and errors and min(errors) <= chunk[-1]:  # every file up to here is known
                break
    finally:
        results.close()  # shuts the pool down, cancelling chunks not started
        bar.close()
        if store is not None:
            store.save(_merged(store, fresh))
    return {paths[i]: errors[i] for i in sorted(errors)}


def _record(fresh, key: str, st: tuple[int, int], err: str | None) -> None:
    folder, name = os.path.split(key)
    fresh.setdefault(folder, {})[name] = (st[0], st[1], err)


def _merged(store: Cache, fresh):
    """The folders to write: this run's records over the old ones."""
    return {folder: {**store.folders.get(folder, {}), **recs} for folder, recs in fresh.items()}


def _run(chunks: list[list[int]], path_chunks: list[list[str]], workers: int):
    """Yield ``(chunk, errors)`` in chunk order, from this process or a pool."""
    if workers == 1 or len(chunks) <= 1:
        for chunk, paths in zip(chunks, path_chunks, strict=True):
            yield chunk, _check_chunk(paths)
        return
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(max_workers=int(workers), mp_context=mp.get_context(method))
    try:
        futures = [pool.submit(_check_chunk, paths) for paths in path_chunks]
        for chunk, fut, paths in zip(chunks, futures, path_chunks, strict=True):
            try:
                result = fut.result()
            except BrokenProcessPool:
                raise OSError(f"check_files: a checking process died (out of memory?) on one of {paths[0]} .. "
                              f"{paths[-1]}; retry with fewer workers") from None
            yield chunk, result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
