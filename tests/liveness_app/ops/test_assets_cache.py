"""Bundled-asset hashes are remembered per file change (start-up time), and a changed file is hashed again."""
import os

import pytest

from liveness_app.ops import assets


def test_sha256_is_cached_per_file_change_and_a_change_is_seen(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVENESS_CACHE_DIR", str(tmp_path / "cache"))
    f = tmp_path / "model.bin"
    f.write_bytes(b"a" * 1000)
    calls = []
    real = assets.sha256_file
    monkeypatch.setattr(assets, "sha256_file", lambda p, *a: (calls.append(p), real(p, *a))[1])
    first = assets.sha256_cached(f)
    assert first == real(f) and len(calls) == 1
    assert assets.sha256_cached(f) == first and len(calls) == 1  # remembered: not read again
    f.write_bytes(b"b" * 1000)  # same size, new content (and mtime)
    os.utime(f, ns=(1, 1))  # even with an old mtime the key differs (mtime is part of it)
    assert assets.sha256_cached(f) == real(f) != first and len(calls) == 2
    (tmp_path / "cache" / "asset-sha256.json").write_text("{not json")  # a damaged cache only costs the hash
    assert assets.sha256_cached(f) == real(f) and len(calls) == 3


def test_verify_file_still_refuses_an_altered_listed_asset(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVENESS_CACHE_DIR", str(tmp_path / "cache"))
    f = tmp_path / "x.bin"
    f.write_bytes(b"good")
    assets.write_sums(tmp_path)
    assert assets.verify_file(f)
    f.write_bytes(b"bad!")
    with pytest.raises(assets.AssetError, match="does not match its SHA-256"):
        assets.verify_file(f)
