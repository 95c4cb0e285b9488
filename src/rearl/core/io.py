"""JSONL reading with precise errors, atomic writes and resumable appends."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


class DataError(ValueError):
    """Bad input, with the file and line it came from."""


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) for every non-blank line; a bad line raises DataError naming it."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    with p.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{p}:{lineno}: not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                                "re-encode the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{p}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            yield lineno, rec


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once: os.umask can only be read by setting it


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the output is a normal file, as open() would make it
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class ResumableJsonl:
    """An append-only JSONL output that survives kills.

    Each record is written as one line and fsynced. On open, a torn last line (a kill mid-write)
    is cut off, and the keys of complete records are remembered so a rerun can skip them.
    """

    def __init__(self, path: str | os.PathLike, key: str = "id"):
        self.path = Path(path)
        self.key = key
        self.done: dict[str, dict[str, Any]] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._recover()
        self._f = self.path.open("a", encoding="utf-8")

    def _recover(self) -> None:
        raw = self.path.read_bytes()
        good_end = raw.rfind(b"\n") + 1
        if good_end < len(raw):
            with self.path.open("r+b") as f:
                f.truncate(good_end)
        for lineno, line in enumerate(raw[:good_end].decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{self.path}:{lineno}: corrupt record in an existing output; move the file away") from None
            if self.key in rec:
                self.done[str(rec[self.key])] = rec

    def __contains__(self, key: Any) -> bool:
        return str(key) in self.done

    def pending(self, key: Any) -> bool:
        """Whether `key` is still to do on a resume: not written yet, or written as a failure (a record with
        an "error"); the new record replaces the failed one (the last record of a key counts)."""
        rec = self.done.get(str(key))
        return rec is None or "error" in rec

    def write(self, rec: dict[str, Any]) -> None:
        self._f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.done[str(rec[self.key])] = rec

    def records(self) -> list[dict[str, Any]]:
        return list(self.done.values())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "ResumableJsonl":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Build a directory in a temporary sibling and rename it into place only if the block succeeds,
    so a crash never leaves a half-written checkpoint at `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# -- runs that resume --------------------------------------------------------------------------------
def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Where a file is and what it holds (sha256 of its bytes): enough to tell another input apart."""
    import hashlib

    p = Path(path).resolve()
    h = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"path": str(p), "sha256": h.hexdigest()}


def settings_path(out: str | os.PathLike) -> Path:
    p = Path(out)
    return p.with_name(p.name[: -len(".jsonl")] + ".run.json" if p.name.endswith(".jsonl") else p.name + ".run.json")


def resume_or_refuse(out: str | os.PathLike, settings: dict[str, Any], force: bool, extra: Iterable[str | os.PathLike] = ()
                     ) -> None:
    """A resumable output continues only the run it was made by: the input and every setting that shapes its
    records are kept beside it (`<out>.run.json`); a rerun with other ones is refused, naming what differs,
    and `force` starts fresh (the output, its settings and `extra` files such as the summary are removed)."""
    out_p, side = Path(out), settings_path(out)
    have = out_p.exists() and out_p.stat().st_size > 0
    if force:
        for q in (out_p, side, *map(Path, extra)):
            if q.exists():
                q.unlink()
    elif have:
        if not side.exists():
            raise ValueError(f"{out_p} exists but records no settings (made by an older rearl?): another --out, or "
                             f"--force to start it fresh")
        old = json.loads(side.read_text(encoding="utf-8"))
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if diff:
            what = "; ".join(f"{k}: {old.get(k)!r} there, {settings.get(k)!r} now" for k in diff)
            raise ValueError(f"{out_p} holds a run with other input or settings ({what}): another --out, or --force to "
                             f"start it fresh")
    write_json_atomic(side, settings)


def refuse_same_path(out: str | os.PathLike | None, inputs: Iterable[str | os.PathLike], flag: str = "--out") -> None:
    """An output that is one of the inputs would overwrite or append to what is being read."""
    if out is None:
        return
    o = Path(out).resolve()
    for i in inputs:
        if i is not None and Path(i).resolve() == o:
            raise ValueError(f"{flag} {out} is also an input: the output would overwrite or append to what is read; "
                             f"choose another {flag}")


def check_local_path(value: str | None, flag: str) -> None:
    """A value that is a path (starts with . / ~, or has two slashes) must exist here: a mistyped relative path
    would otherwise be tried as a hub id (retried for ~49 s offline). `org/name` hub ids pass."""
    if not value:
        return
    looks_local = value.startswith((".", "/", "~")) or value.count("/") >= 2
    if looks_local and not Path(value).expanduser().exists():
        raise ValueError(f"{flag} {value}: no such file or directory (a hub model is ORG/NAME)")
