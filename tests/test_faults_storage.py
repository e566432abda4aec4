"""Faults: write failures (file-size limit, full disk, I/O error, read-only, --out under a file)
and empty annotation files. Each is an error of one line naming the path and the cause, with a
documented exit status, no partial file left and no crash inside HDF5."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys

import faults_data as fd
import pytest
from synthetic_cache import TEST_MODEL, make_question, make_video
from videocfr.cache_format import ShardWriter
from videocfr.cache_format.io import StorageError
from videocfr.precompute import job as job_mod
from videocfr.precompute.cli import EXIT_BAD_INPUT, EXIT_FATAL, main

CHILD = """
import sys
sys.path[:0] = [{repo!r}, {tests!r}]
import resource
from synthetic_cache import TEST_MODEL, make_question, make_video
from videocfr.cache_format import ShardWriter
from videocfr.cache_format.io import StorageError
limit = 64 * 1024
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    with ShardWriter(sys.argv[1], {{"x": 1}}, embed_dim=256, model=TEST_MODEL) as w:
        for i in range(20):  # about 20 * 64 * 256 * 2 bytes of embeddings: past the limit
            v = make_video(f"v{{i}}", k=64, dim=256, seed=i)
            w.add(v, [make_question(v, "q0", seed=i)])
except StorageError as err:
    print(err, file=sys.stderr)
    sys.exit(3)
""".format(repo=str(fd.REPO), tests=str(fd.REPO / "tests"))


def test_faults_rlimit_fsize_child_writes_a_shard(tmp_path):
    """A child under RLIMIT_FSIZE writing a shard: an EFBIG error naming the file, exit 3, no
    segfault (h5py used to crash in File.close), no partial file, no marker, no claim."""
    cache = tmp_path / "c"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(cache)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 3, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "EFBIG" in lines[0] and str(cache / "shards") in lines[0]
    assert "partial file removed" in lines[0]
    assert sorted(p.name for p in (cache / "shards").iterdir()) == []


def test_faults_cli_under_file_size_limit(tmp_path):
    """`ulimit -f` below a shard's size for the precompute CLI: exit 3, one error line."""
    ds, cfg = fd.make_dataset(tmp_path)
    out = tmp_path / "out"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    proc = subprocess.run(fd.cli(ds, cfg, out), cwd=fd.REPO, env=fd.env(), capture_output=True,
                          text=True, timeout=300, preexec_fn=limit)
    assert proc.returncode == EXIT_FATAL, (proc.returncode, proc.stderr[-3000:])
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "EFBIG" in errors[0] and str(out / "shards") in errors[0]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert fd.leftovers(out) == [] and not list((out / "shards").glob("*.h5"))


def _records(w: ShardWriter, n: int = 2) -> None:
    for i in range(n):
        v = make_video(f"v{i}", k=8, dim=16, seed=i)
        w.add(v, [make_question(v, "q0", seed=i)])


@pytest.mark.parametrize("call,code", [
    ("write", errno.ENOSPC), ("write", errno.EDQUOT), ("fsync", errno.EIO),
    ("close", errno.ENOSPC), ("open", errno.EROFS), ("replace", errno.EIO)])
def test_faults_write_errors_become_storage_errors(tmp_path, monkeypatch, call, code):
    """Any OSError while writing a shard: StorageError naming the shard and the errno, nothing
    left behind (no temporary file, no part, no marker, no claim)."""
    real = getattr(os, call)
    armed = {"on": False}

    def failing(*args, **kwargs):
        target = str(args[0]) if call in ("open", "replace") else ""
        if armed["on"] and (call not in ("open", "replace") or ".h5" in target):
            if call == "close":
                real(*args, **kwargs)
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    cache = tmp_path / "c"
    with pytest.raises(StorageError) as info:
        with ShardWriter(cache, {"x": 1}, embed_dim=16, model=TEST_MODEL) as w:
            _records(w)
            armed["on"] = True
            monkeypatch.setattr(os, call, failing)
    monkeypatch.undo()
    msg = str(info.value)
    assert errno.errorcode[code] in msg and str(cache / "shards") in msg and "\n" not in msg
    assert sorted(p.name for p in (cache / "shards").iterdir()) == []


def test_faults_full_disk_refused_before_writing(tmp_path, monkeypatch):
    """Less free space than a shard's bytes: ENOSPC before anything is written."""
    monkeypatch.setattr("videocfr.cache_format.io.free_bytes", lambda _d: 100)
    with pytest.raises(StorageError, match="ENOSPC.*needs .* bytes, 100 free"):
        with ShardWriter(tmp_path, {"x": 1}, embed_dim=16, model=TEST_MODEL) as w:
            _records(w)
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == []


@pytest.fixture
def no_model(monkeypatch):
    """The storage checks must fail before the CLIP model loads."""
    def refuse(_clip_cfg):
        raise AssertionError("the model was loaded before the storage check")

    monkeypatch.setattr(job_mod, "default_embedder", refuse)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return fd.make_dataset(tmp_path_factory.mktemp("faults-ds"))


def test_faults_out_under_a_file(dataset, tmp_path, no_model, capsys):
    ds, cfg = dataset
    (tmp_path / "file").write_text("x")
    assert main(["--config", str(cfg), "--dataset", str(ds), "--out",
                 str(tmp_path / "file" / "cache")]) == EXIT_FATAL
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ENOTDIR" in err[0] and str(tmp_path / "file") in err[0]


def test_faults_read_only_out(dataset, tmp_path, monkeypatch, no_model, capsys):
    """A read-only filesystem (EROFS, simulated: tests run as root) fails at the probe."""
    ds, cfg = dataset
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if ".tmp-probe" in str(path) and flags & os.O_WRONLY:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    out = tmp_path / "ro"
    assert main(["--config", str(cfg), "--dataset", str(ds), "--out", str(out)]) == EXIT_FATAL
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "EROFS" in err[0] and str(out / "shards") in err[0]


def test_faults_free_space_estimate_checked_before_model(dataset, tmp_path, no_model, capsys):
    ds, cfg = dataset
    out = tmp_path / "big"
    assert main(["--config", str(cfg), "--dataset", str(ds), "--out", str(out),
                 "--min-free-gb", "1e9"]) == EXIT_FATAL
    err = capsys.readouterr().err
    assert "ENOSPC" in err and "--min-free-gb" in err and str(out / "shards") in err
    assert main(["--config", str(cfg), "--dataset", str(ds), "--out", str(out),
                 "--min-free-gb", "-1"]) == EXIT_BAD_INPUT
    assert job_mod.estimate_job_bytes([], 32) > 0


@pytest.mark.parametrize("content", ["", "\n\n", "[]", '{"data_type": "image", "problem": "x", '
                                     '"path": "i.png"}\n'], ids=["empty", "blank-lines",
                                                                 "empty-list", "images-only"])
def test_faults_empty_annotations_refused(dataset, tmp_path, content, no_model, capsys):
    _ds, cfg = dataset
    ann = tmp_path / "ann.jsonl"
    ann.write_text(content)
    ds = tmp_path / "ds.yaml"
    ds.write_text("annotation: ann.jsonl\nvideo_root: .\nformat: auto\n")
    assert main(["--config", str(cfg), "--dataset", str(ds), "--out",
                 str(tmp_path / "c")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert str(ann) in err and "--allow-empty" in err
    assert not (tmp_path / "c").exists()


def test_faults_allow_empty_loads(tmp_path):
    from videocfr.precompute.datasets import load_dataset

    (tmp_path / "ann.jsonl").write_text("")
    (tmp_path / "ds.yaml").write_text("annotation: ann.jsonl\nvideo_root: .\n")
    assert load_dataset(str(tmp_path / "ds.yaml"), allow_empty=True).videos == []


def test_faults_gpu_error_is_fatal(dataset, tmp_path, monkeypatch, capsys):
    """A CUDA failure (here raised by the model factory) is exit 3, a bad option exit 2."""
    ds, cfg = dataset

    def no_gpu(_clip_cfg):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(job_mod, "default_embedder", no_gpu)
    assert main(["--config", str(cfg), "--dataset", str(ds), "--out",
                 str(tmp_path / "c")]) == EXIT_FATAL
    assert "CUDA error" in capsys.readouterr().err
    assert fd.leftovers(tmp_path / "c") == []


def test_faults_exit_codes_in_help():
    from videocfr.precompute.cli import EXIT_UNFINISHED, build_parser

    text = build_parser().format_help()
    assert "exit status:" in text
    for code in (0, EXIT_UNFINISHED, EXIT_BAD_INPUT, EXIT_FATAL, 130):
        assert f"\n  {code} " in text, code
    assert "143 stopped by SIGTERM" in text
