"""`train --task reviews` fetches with pip: a vaderSentiment 3.3.2 archive substituted in a
local package index, whose build code writes a marker file, is refused by pip for its SHA-256
before any code of it runs (the same archive does run without the hash)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_reviews import ground_truth, tar_gz, write

from derive_cells.train import reviews
from derive_cells.train.reviews import DataError, fetch

MARKER_CODE = "open({marker!r}, 'w').write('built')\n"


def substituted_index(tmp_path: Path, marker: Path) -> Path:
    """A package index (a --find-links folder) serving a vaderSentiment 3.3.2 sdist whose build
    code (an in-tree PEP 517 backend and a setup.py) writes `marker` when pip runs it."""
    code = MARKER_CODE.format(marker=str(marker)).encode()
    root = "vaderSentiment-3.3.2/"
    archive = tar_gz({
        root + "pyproject.toml": b'[build-system]\nrequires = []\nbuild-backend = "backend"\n'
                                 b'backend-path = ["."]\n',
        root + "backend.py": code + b"def get_requires_for_build_wheel(c=None):\n    return []\n",
        root + "setup.py": code,
        root + "PKG-INFO": b"Metadata-Version: 2.1\nName: vaderSentiment\nVersion: 3.3.2\n",
        reviews.OUTER_MEMBER: tar_gz({reviews.INNER_MEMBER: ground_truth()}),
    })
    index = tmp_path / "index"
    index.mkdir()
    write(index, archive, reviews.SDIST)
    return index


def local_index_runner(index: Path):
    def run(command, **kwargs):
        return subprocess.run([*command, "--no-index", "--find-links", str(index)], **kwargs)
    return run


def test_a_substituted_archive_is_refused_before_any_of_its_code_runs(tmp_path):
    marker = tmp_path / "marker"
    index = substituted_index(tmp_path, marker)
    plain = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
             "vaderSentiment==3.3.2", "-d", str(tmp_path / "plain")]
    subprocess.run([*plain, "--no-index", "--find-links", str(index)], capture_output=True)
    assert marker.read_text() == "built"  # without the hash, pip runs the archive's build code
    marker.unlink()
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="pip refused") as error:
        fetch(cache, runner=local_index_runner(index))
    message = str(error.value)
    assert reviews.SHA256 in message and "nothing of it was built or run" in message
    assert hashlib.sha256((index / reviews.SDIST).read_bytes()).hexdigest() in message
    assert not marker.exists()
    assert not (cache / reviews.SDIST).exists() and not (cache / reviews.GROUND_TRUTH).exists()


def test_train_reviews_refuses_a_substituted_archive_before_it_runs(tmp_path):
    marker = tmp_path / "marker"
    env = {**os.environ, "PIP_NO_INDEX": "1",
           "PIP_FIND_LINKS": str(substituted_index(tmp_path, marker))}
    done = subprocess.run([sys.executable, "-m", "derive_cells.cli", "train", "lstm", "--task",
                           "reviews", "--data-dir", str(tmp_path / "data"), "--epochs", "1"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2 and "nothing of it was built or run" in done.stderr
    assert "Traceback" not in done.stderr and not marker.exists()
