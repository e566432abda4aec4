"""Optional cache additions (cache_format/additions.py): atomic, checksummed, of one cache."""

import json

import pytest
from synthetic_cache import make_cache
from videocfr.cache_format import CacheError, verify_cache
from videocfr.cache_format.additions import list_additions, load_addition, write_addition


def _write(cache, name="margins", text="hello", version=1):
    with write_addition(cache, name, version, {"what": "test"}) as stage:
        (stage / "data.txt").write_text(text)


def test_written_addition_loads_and_verifies(tmp_path):
    cache = tmp_path / "c"
    make_cache(cache)
    _write(cache)
    add = load_addition(cache, "margins", version=1)
    assert add.meta == {"what": "test"} and add.path("data.txt").read_text() == "hello"
    assert list_additions(cache) == ["margins"]
    assert verify_cache(cache) == []
    _write(cache, text="again")  # replacing keeps one whole addition
    assert load_addition(cache, "margins").path("data.txt").read_text() == "again"
    assert sorted(p.name for p in (cache / "additions").iterdir()) == ["margins"]


def test_a_failed_write_leaves_nothing(tmp_path):
    cache = tmp_path / "c"
    make_cache(cache)
    with pytest.raises(RuntimeError):
        with write_addition(cache, "margins", 1, {}) as stage:
            (stage / "part.txt").write_text("half")
            raise RuntimeError("killed")
    assert list_additions(cache) == [] and list((cache / "additions").iterdir()) == []
    with pytest.raises(CacheError, match="no 'margins' addition"):
        load_addition(cache, "margins")


def test_altered_or_foreign_additions_are_refused(tmp_path):
    cache = tmp_path / "c"
    make_cache(cache)
    _write(cache)
    (cache / "additions/margins/data.txt").write_text("HELLO")
    with pytest.raises(CacheError, match="sha256"):
        load_addition(cache, "margins")
    assert "sha256" in verify_cache(cache)[0].reason
    _write(cache)
    with pytest.raises(CacheError, match="version 2"):
        load_addition(cache, "margins", version=2)
    doc_path = cache / "additions/margins/addition.json"
    doc = json.loads(doc_path.read_text())
    doc["cache_config_hash"] = "0" * 64
    doc_path.write_text(json.dumps(doc))
    with pytest.raises(CacheError, match="config hash"):
        load_addition(cache, "margins")


def test_links_out_of_the_addition_are_refused(tmp_path):
    cache = tmp_path / "c"
    make_cache(cache)
    _write(cache)
    secret = tmp_path / "secret.txt"
    secret.write_text("hello")
    target = cache / "additions/margins/data.txt"
    target.unlink()
    target.symlink_to(secret)
    with pytest.raises(CacheError, match="plain file"):
        load_addition(cache, "margins")
    doc_path = cache / "additions/margins/addition.json"
    doc = json.loads(doc_path.read_text())
    doc["files"] = {"../../../secret.txt": doc["files"]["data.txt"]}
    doc_path.write_text(json.dumps(doc))
    with pytest.raises(CacheError, match="not a valid name"):
        load_addition(cache, "margins")
