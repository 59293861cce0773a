"""Movie-review data: parsing the ground-truth format, the task built from it, and fetching
(pip through an injected runner, hash check, safe extraction from the nested tar, the cache;
an edited extracted file is re-extracted). A substituted archive: test_reviews_trust.py."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from derive_cells.train import reviews
from derive_cells.train.reviews import DataError, fetch, load, parse, tokenize
from derive_cells.train.tasks import make_task

ROWS = [  # (rating, text) in the real format; two under the 0.5 threshold, one without words
    ("2.26666666667", "The Rock is destined to be the 21st Century's new ''Conan'' and great"),
    ("-1.5", "a boring and dull film"),
    ("0.2", "a film with a near zero rating"),
    ("3.0", "great fun, great film"),
    ("-3.2", "the plot doesn't work: dull"),
    ("1.0", "a great film"),
    ("-0.8", "not a great film"),
    ("-2.0", "--- !!! ..."),
    ("0.6", "fun"),
    ("-0.5", "boring"),
    ("0.49", "meh"),
    ("4", "one two three four five six seven eight nine ten eleven twelve"),
]
USABLE = [(t, float(r)) for r, t in ROWS if abs(float(r)) >= 0.5 and tokenize(t)]


def ground_truth(rows=ROWS) -> bytes:
    lines = [f"{i}\t{r}\t{t}" for i, (r, t) in enumerate(rows, start=1)]
    return ("\r\n".join(lines[:5] + [""] + lines[5:])).encode()  # a blank line, no final CRLF


def write(tmp_path: Path, data: bytes, name: str = "gt.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def fake_sdist(tmp_path: Path, inner_name: str = reviews.INNER_MEMBER) -> tuple[Path, str]:
    inner = tar_gz({inner_name: ground_truth(), "hutto_ICWSM_2014/tweets_GroundTruth.txt": b""})
    outer = tar_gz({"vaderSentiment-3.3.2/setup.py": b"", reviews.OUTER_MEMBER: inner})
    path = write(tmp_path, outer, reviews.SDIST)
    return path, hashlib.sha256(outer).hexdigest()


def copying_runner(sdist: Path, calls: list):
    def run(command, **kwargs):
        calls.append(command)
        n = len(reviews.PIP_COMMAND)
        assert command[:n] == list(reviews.PIP_COMMAND) and command[n + 1] == "-d"
        assert kwargs["timeout"] > 0
        requirement = Path(command[n]).read_text().split()
        assert requirement[0] == "vaderSentiment==3.3.2"
        assert requirement[1].startswith("--hash=sha256:") and len(requirement) == 2
        shutil.copy(sdist, Path(command[-1]) / reviews.SDIST)
        return subprocess.CompletedProcess(command, 0, "", "")
    return run


def failing_runner(command, **kwargs):
    return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found")


def test_parse_crlf_blank_lines_and_threshold(tmp_path):
    path = write(tmp_path, ground_truth())
    every = parse(path, threshold=0.0)
    assert every == [(t, float(r)) for r, t in ROWS]
    assert "''Conan''" in every[0][0] and not any("\r" in t for t, _ in every)
    assert parse(path) == [(t, float(r)) for r, t in ROWS if abs(float(r)) >= 0.5]


@pytest.mark.parametrize("line, message", [
    ("3\t1.0", "3 tab-separated fields"),
    ("3\t1.0\tgood\textra", "3 tab-separated fields"),
    ("3\tgood\t1.0", "not a number"),
    ("3\t4.5\tgood", "outside"),
    ("3\tnan\tgood", "outside"),
])
def test_parse_malformed_line_names_file_and_line(tmp_path, line, message):
    path = write(tmp_path, b"1\t1.0\tfine\r\n\r\n" + line.encode() + b"\r\n")
    with pytest.raises(DataError, match=message) as error:
        parse(path)
    assert "line 3" in str(error.value) and str(path) in str(error.value)


def test_tokenize():
    assert tokenize("The Rock's new ''Conan'' doesn't work: 21st!") == [
        "the", "rock's", "new", "conan", "doesn't", "work", "21st"]
    assert tokenize("--- !!!") == []
    assert tokenize("Café crème: We\u2019ve seen it_all") == ["café", "crème", "we've", "seen",
                                                           "it", "all"]


def test_load_labels_drops_vocabulary_truncation_split(tmp_path):
    path = write(tmp_path, ground_truth())
    full = load(seed=3, path=path, test_fraction=0.2, min_count=1, max_length=5)
    info = full.train.info
    assert (info["n_rows"], info["n_dropped"], info["n_empty"]) == (12, 2, 1)
    assert (len(full.train), len(full.test)) == (7, 2) == (info["n_train"], info["n_test"])
    assert "12 Rotten Tomatoes snippets, 2 with |rating| < 0.5 dropped" in full.description
    source = {tuple(tokenize(t)[:5]): r for t, r in USABLE}
    train_words = Counter()
    for ds in (full.train, full.test):
        assert ds.name == "reviews" and ds.kind == "binary" and ds.tokens
        assert ds.lengths.max() <= 5 and ds.inputs.shape[1] == ds.lengths.max()
        for n in range(len(ds)):
            row = ds.inputs[n, : ds.lengths[n]]
            assert np.all(ds.inputs[n, ds.lengths[n]:] == 0) and np.all(row >= 1)
            key = tuple(ds.vocab[i] for i in row)
            if ds is full.train:
                train_words.update(key)
                assert ds.targets[n] == (source.pop(key) > 0)
    assert len(source) == 2  # the rest is the test set
    assert info["n_truncated"] == sum(len(tokenize(t)) > 5 for t, _ in USABLE)
    assert list(full.train.vocab[2:]) == sorted(train_words, key=lambda w: (-train_words[w], w))
    for n in range(len(full.test)):  # test words unseen in train map to <unk>
        encoded = [[full.train.vocab.index(w) if w in train_words else 1 for w in k]
                   for k in source]
        assert full.test.inputs[n, : full.test.lengths[n]].tolist() in encoded
    assert full.chance == max(full.test.targets.mean(), 1 - full.test.targets.mean())
    common = load(seed=3, path=path, test_fraction=0.2, min_count=2, max_length=5)
    assert set(common.train.vocab[2:]) == {w for w, c in train_words.items() if c >= 2}
    def rows(ds):
        return sorted(tuple(ds.vocab[i] for i in ds.inputs[n, : ds.lengths[n]])
                      for n in range(len(ds)))

    again, same, other = (load(seed=s, path=path, min_count=1) for s in (3, 3, 4))
    assert np.array_equal(again.train.inputs, same.train.inputs)
    assert np.array_equal(again.test.targets, same.test.targets)
    assert rows(again.test) != rows(other.test)

def test_fetch_extracts_then_uses_cache(tmp_path):
    sdist, digest = fake_sdist(tmp_path)
    cache, calls = tmp_path / "cache", []
    path = fetch(cache, sha256=digest, runner=copying_runner(sdist, calls))
    assert path == cache / reviews.GROUND_TRUTH and path.read_bytes() == ground_truth()
    assert len(calls) == 1 and calls[0][-1] == str(cache)
    assert (cache / reviews.STAMP).read_text().split() == [
        digest, hashlib.sha256(ground_truth()).hexdigest()]
    assert fetch(cache, sha256=digest, runner=failing_runner) == path  # no runner call
    path.unlink()  # extracted file gone: re-extracted from the cached sdist, still no pip
    assert fetch(cache, sha256=digest, runner=failing_runner).read_bytes() == ground_truth()
    assert len(calls) == 1
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [reviews.SDIST, reviews.GROUND_TRUTH, reviews.STAMP])


def test_fetch_refuses_wrong_hash_and_leaves_file(tmp_path):
    sdist, digest = fake_sdist(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="mismatch") as error:
        fetch(cache, runner=copying_runner(sdist, []))
    assert digest in str(error.value) and reviews.SHA256 in str(error.value)
    assert str(cache / reviews.SDIST) in str(error.value)
    assert (cache / reviews.SDIST).exists() and not (cache / reviews.GROUND_TRUTH).exists()


@pytest.mark.parametrize("runner", [
    failing_runner,
    lambda command, **kwargs: (_ for _ in ()).throw(subprocess.TimeoutExpired(command, 300)),
    lambda command, **kwargs: subprocess.CompletedProcess(command, 0, "", ""),  # no file left
])
def test_fetch_without_network_says_what_to_do(tmp_path, runner):
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="pip download") as error:
        fetch(cache, runner=runner)
    message = str(error.value)
    assert "--no-binary :all: --no-deps --require-hashes -r req.txt -d ." in message
    assert f"vaderSentiment==3.3.2 --hash=sha256:{reviews.SHA256}" in message
    assert str(cache) in message and "--data-dir" in message and len(message.splitlines()) == 2


@pytest.mark.parametrize("name", [
    "hutto_ICWSM_2014/../movieReviewSnippets_GroundTruth.txt",
    "/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
])
def test_fetch_refuses_unsafe_nested_member(tmp_path, name):
    sdist, digest = fake_sdist(tmp_path, inner_name=name)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="unsafe"):
        fetch(cache, sha256=digest, runner=copying_runner(sdist, []))
    assert not (cache / reviews.GROUND_TRUTH).exists()


def test_fetch_reports_missing_member(tmp_path):
    outer = tar_gz({reviews.OUTER_MEMBER: tar_gz({"hutto_ICWSM_2014/other.txt": b"x"})})
    cache = tmp_path / "cache"
    write(cache.mkdir() or cache, outer, reviews.SDIST)
    with pytest.raises(DataError, match="not found"):
        fetch(cache, sha256=hashlib.sha256(outer).hexdigest(), runner=failing_runner)


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("DERIVE_CELLS_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert reviews.cache_dir(tmp_path / "given") == tmp_path / "given"
    assert reviews.cache_dir() == tmp_path / "env"
    monkeypatch.delenv("DERIVE_CELLS_DATA")
    assert reviews.cache_dir() == tmp_path / "xdg" / "derive-cells"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert reviews.cache_dir() == Path.home() / ".cache" / "derive-cells"


def test_make_task_reviews_from_cache(tmp_path):
    write(tmp_path, ground_truth(), reviews.GROUND_TRUTH)
    stamp = f"{reviews.SHA256}\n{hashlib.sha256(ground_truth()).hexdigest()}\n"
    write(tmp_path, stamp.encode(), reviews.STAMP)
    task = make_task("reviews", seed=1, data_dir=str(tmp_path), n_train=4)
    assert task.name == "reviews" and (len(task.train), len(task.test)) == (4, 2)
    with pytest.raises(ValueError, match="n_test"):
        make_task("reviews", data_dir=str(tmp_path), n_test=50)


def test_fetch_re_extracts_an_edited_file(tmp_path, capsys):
    sdist, digest = fake_sdist(tmp_path)
    cache, calls = tmp_path / "cache", []
    path = fetch(cache, sha256=digest, runner=copying_runner(sdist, calls))
    path.write_bytes(ground_truth().replace(b"a boring and dull film", b"a great film"))
    assert fetch(cache, sha256=digest, runner=failing_runner).read_bytes() == ground_truth()
    assert "differs from the file in" in capsys.readouterr().err and len(calls) == 1
    (cache / reviews.SDIST).unlink()  # without the archive, only the stamp's hash vouches
    assert fetch(cache, sha256=digest, runner=failing_runner) == path
    path.write_bytes(ground_truth() + b"\r\n99\t4\tan added row")
    with pytest.raises(DataError, match="could not fetch"):
        fetch(cache, sha256=digest, runner=failing_runner)
    assert "does not match its stamp" in capsys.readouterr().err
    assert fetch(cache, sha256=digest, runner=copying_runner(sdist, calls)).read_bytes() == \
        ground_truth() and len(calls) == 2


def test_fetch_old_stamp_without_the_file_hash_is_not_trusted(tmp_path):
    cache = tmp_path / "cache"
    write(cache.mkdir() or cache, b"1\t1.0\tedited\r\n", reviews.GROUND_TRUTH)
    write(cache, (reviews.SHA256 + "\n").encode(), reviews.STAMP)
    with pytest.raises(DataError, match="could not fetch"):
        fetch(cache, runner=failing_runner)
