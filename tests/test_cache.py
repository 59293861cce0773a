"""The module cache behind Cell.module(): planted bytecode never runs, planted symlinks are never
written through, a folder others can write to is refused, an unusable one is replaced by a
private temp folder (said once), 8 threads and 8 processes load one cell at once, and the same
source gives the same module object (layers built from it pickle)."""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import io
import marshal
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import torch

import derive_cells as dc
from derive_cells import cache
from derive_cells.verify.modules import import_file

ROOT = Path(__file__).parent.parent


@pytest.fixture(autouse=True)
def folder(fresh_module_cache):
    return fresh_module_cache


def rnn_text() -> str:
    return dc.load("rnn").emit("numpy")


def fresh(text: str) -> str:
    """The same module with a line no earlier load had: a new source."""
    return f"{text}\n# {uuid.uuid4().hex}\n"


def cache_name(text: str, stem: str = "rnn_numpy") -> str:
    return f"{stem}_{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def plant_pyc(py: Path, source: str, kind: str) -> Path:
    """A valid .pyc of `source` in py's __pycache__: one the import system takes for py's
    (unchecked-hash: used whatever py holds; timestamp: py's own mtime and size)."""
    code = compile(source, str(py), "exec")
    if kind == "unchecked-hash":
        header = importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little") + bytes(8)
    else:
        info = py.stat()
        header = (importlib.util.MAGIC_NUMBER + bytes(4) + int(info.st_mtime).to_bytes(4, "little")
                  + (info.st_size & 0xFFFFFFFF).to_bytes(4, "little"))
    pyc = Path(importlib.util.cache_from_source(str(py)))
    pyc.parent.mkdir(exist_ok=True)
    pyc.write_bytes(header + marshal.dumps(code))
    return pyc


@pytest.mark.parametrize("kind", ["unchecked-hash", "timestamp"])
def test_a_planted_pyc_never_runs(folder, tmp_path, kind):
    text = rnn_text()
    folder.mkdir(mode=0o700)
    py = folder / f"{cache_name(text)}.py"
    py.write_text(text)
    marker = tmp_path / "marker"
    plant_pyc(py, f"open({str(marker)!r}, 'w').write('ran')\n", kind)
    script = (
        "import importlib.util, os, sys\n"
        "import derive_cells as dc\n"
        "m = dc.load('rnn').module('numpy')\n"
        f"print(m.__file__, hasattr(m, 'forward'), os.path.exists({str(marker)!r}))\n"
        f"s = importlib.util.spec_from_file_location('plain', {str(py)!r})\n"
        "p = importlib.util.module_from_spec(s); s.loader.exec_module(p)\n"
        f"print(hasattr(p, 'forward'), os.path.exists({str(marker)!r}))\n")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "DERIVE_CELLS_CACHE": str(folder)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    ours, plain = done.stdout.splitlines()
    assert ours == f"{py} True False"  # the checked source ran; the .pyc did not
    assert plain == "False True"  # a plain import of the same file runs the planted .pyc


def test_import_file_neither_reads_nor_writes_bytecode(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    py = tmp_path / "user_module.py"
    py.write_text("VALUE = 'source'\n")
    module = import_file(py, f"user_module_{uuid.uuid4().hex}")
    assert module.VALUE == "source" and not (tmp_path / "__pycache__").exists()
    plant_pyc(py, "VALUE = 'planted'\n", "unchecked-hash")
    assert import_file(py, f"user_module_{uuid.uuid4().hex}").VALUE == "source"


def test_planted_symlinks_are_replaced_never_written_through(folder, tmp_path):
    text = rnn_text()
    name = cache_name(text)
    folder.mkdir(mode=0o700)
    victims = {}
    for link in (f"{name}.{os.getpid()}.tmp", f"{name}.py"):  # the old temp name, the file
        victim = tmp_path / f"victim-{len(victims)}"
        victim.write_text("precious\n")
        (folder / link).symlink_to(victim)
        victims[link] = victim
    module = cache.load_module(text, "rnn_numpy")
    assert module.__file__ == str(folder / f"{name}.py") and hasattr(module, "forward")
    assert all(v.read_text() == "precious\n" for v in victims.values())
    assert not (folder / f"{name}.py").is_symlink()
    assert (folder / f"{name}.py").read_text() == text
    assert [p.name for p in folder.iterdir() if p.suffix == ".tmp" and not p.is_symlink()] == []


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o722])
def test_a_folder_others_can_write_to_is_refused(folder, mode):
    folder.mkdir()
    folder.chmod(mode)
    with pytest.raises(cache.CacheError, match="other users can write to it") as error:
        cache.load_module(rnn_text(), "rnn_numpy")
    assert f"mode {mode:04o}" in str(error.value) and str(folder) in str(error.value)
    assert len(str(error.value).splitlines()) == 1 and list(folder.iterdir()) == []


def test_a_sticky_private_folder_is_accepted(folder):
    folder.mkdir()
    folder.chmod(0o1777)
    assert hasattr(cache.load_module(rnn_text(), "rnn_numpy"), "forward")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="giving a folder away needs root")
def test_a_folder_of_another_user_is_refused(folder):
    folder.mkdir(mode=0o700)
    os.chown(folder, 65534, 65534)
    with pytest.raises(cache.CacheError, match="belongs to user id 65534"):
        cache.load_module(rnn_text(), "rnn_numpy")
    assert list(folder.iterdir()) == []


def test_an_unusable_cache_falls_back_to_a_private_folder_said_once(folder, capsys,
                                                                   monkeypatch):
    folder.write_text("a file, not a folder\n")
    first = cache.load_module(fresh(rnn_text()), "rnn_numpy")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and str(folder) in err[0] and "unusable" in err[0]
    fallback = Path(first.__file__).parent
    assert str(fallback) in err[0] and fallback.stat().st_mode & 0o077 == 0
    readonly = folder.parent / "readonly"
    readonly.mkdir(mode=0o700)
    readonly.chmod(0o500)
    monkeypatch.setenv("DERIVE_CELLS_CACHE", str(readonly))
    mkstemp = tempfile.mkstemp
    if os.geteuid() == 0:  # root writes to a 0500 folder: the file system refuses instead

        def refusing(*args, dir=None, **kwargs):
            if Path(dir) == readonly:
                raise PermissionError(errno.EROFS, os.strerror(errno.EROFS), str(readonly))
            return mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", refusing)
    second = cache.load_module(fresh(rnn_text()), "rnn_numpy")
    assert Path(second.__file__).parent == fallback and hasattr(second, "forward")
    assert capsys.readouterr().err == ""  # said once
    assert list(readonly.iterdir()) == []


def test_an_unusable_cache_in_the_api_and_a_command(folder, tmp_path):
    folder.write_text("a file, not a folder\n")
    env = {**os.environ, "DERIVE_CELLS_CACHE": str(folder)}
    script = ("import derive_cells as dc\n"
              "for c in ('rnn', 'gru'):\n"
              "    print(dc.load(c).module('numpy').forward.__name__)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["forward", "forward"]
    err = done.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("derive-cells: the module cache is unusable")
    assert "Traceback" not in done.stderr
    # the commands import modules from private temp folders, never from the cache
    done = subprocess.run([sys.executable, "-m", "derive_cells.cli", "decay", "rnn", "--steps",
                           "8", "--batch", "2", "--hidden", "3"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "cache" not in done.stderr and folder.read_text() == "a file, not a folder\n"


def test_eight_threads_load_one_cell_at_once(folder):
    text, rounds, errors = rnn_text(), 12, []
    sources = [fresh(text) for _ in range(rounds)]
    got = [[None] * 8 for _ in range(rounds)]
    barrier = threading.Barrier(8)

    def work(i):
        try:
            for r in range(rounds):
                barrier.wait()
                write = cache.write_checked(folder, f"race_{r}.py", sources[r].encode())
                assert write.read_text() == sources[r]
                got[r][i] = cache.load_module(sources[r], "rnn_numpy")
        except Exception as exc:  # collected, so that every failure is reported
            errors.append(exc)
            barrier.abort()

    folder.mkdir(mode=0o700)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    for r, modules in enumerate(got):
        assert all(m is modules[0] for m in modules) and hasattr(modules[0], "forward")
        assert Path(modules[0].__file__).read_text() == sources[r]
    assert [p for p in folder.iterdir() if p.name.endswith(".tmp")] == []


WORKER = """\
import sys, time
from pathlib import Path
from derive_cells import cache
text, go, rounds = Path(sys.argv[1]).read_text(), Path(sys.argv[2]), int(sys.argv[3])
while not go.exists():
    time.sleep(0.002)
for r in range(rounds):
    module = cache.load_module(text + f"# round {r}\\n", "rnn_numpy")
    assert hasattr(module, "forward"), r
    assert Path(module.__file__).read_text() == text + f"# round {r}\\n", r
print("ok", rounds)
"""


def test_eight_processes_load_one_cell_at_once(folder, tmp_path):
    source, go, rounds = tmp_path / "source.py", tmp_path / "go", 15
    source.write_text(rnn_text())
    env = {**os.environ, "DERIVE_CELLS_CACHE": str(folder)}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(source), str(go), str(rounds)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, cwd=tmp_path) for _ in range(8)]
    time.sleep(1.0)  # every worker imported and waiting
    go.touch()
    results = [w.communicate(timeout=300) for w in workers]
    assert [(w.returncode, out.strip()) for w, (out, _) in zip(workers, results, strict=True)] \
        == [(0, f"ok {rounds}")] * 8, [err for _, err in results]
    assert len([p for p in folder.iterdir() if p.suffix == ".py"]) == rounds
    assert [p for p in folder.iterdir() if p.name.endswith(".tmp")] == []


def test_the_same_source_gives_the_same_module_and_layers_pickle(folder):
    first = dc.load("lstm").module("torch")
    torch.manual_seed(0)
    layer = first.LSTM(3, 4).double()
    second = dc.load("lstm").module("torch")  # another Cell object, the same source
    assert second is first and dc.load("lstm").module("numpy") is not first
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    assert type(again) is second.LSTM
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(again(x)[0], layer(x)[0], rtol=0, atol=0)
    assert pickle.loads(pickle.dumps(layer)).hidden_size == 4
