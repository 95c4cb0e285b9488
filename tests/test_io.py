"""Atomic writes: whole files or none, with the permissions a plain open() would give."""

import pytest

from rearl.core.io import write_json_atomic, write_text_atomic


def test_atomic_write_has_normal_permissions(tmp_path, monkeypatch):
    import rearl.core.io as io

    monkeypatch.setattr(io, "_UMASK", 0o022)
    write_json_atomic(tmp_path / "a" / "s.json", {"x": 1})
    p = tmp_path / "a" / "s.json"
    assert p.read_text() == '{\n  "x": 1\n}\n'
    assert p.stat().st_mode & 0o777 == 0o644  # mkstemp alone gives 0600: unreadable to anyone else
    assert [f.name for f in p.parent.iterdir()] == ["s.json"]  # no temporary left


def test_failed_write_keeps_the_old_file(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("old")

    with pytest.raises(TypeError):
        write_text_atomic(p, object())  # not text: the write fails mid-way
    assert p.read_text() == "old" and [f.name for f in tmp_path.iterdir()] == ["s.txt"]
