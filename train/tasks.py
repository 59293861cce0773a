"""Deterministic learning tasks for training recurrent cells (synthetic, generated locally).

sentiment: short synthetic reviews over a fixed vocabulary, with negations that flip polarity.
distance:  one decisive sentiment word exactly d positions before the end, neutral words elsewhere.
adding:    the adding problem of Hochreiter & Schmidhuber (1997), float features (N, T, 2).
reviews:   real movie-review snippets (see train/reviews.py; fetched once, then cached).

Every generator draws from `np.random.default_rng` seeded by (task, seed, split, ...), so the
same arguments give identical arrays and different tasks or seeds give independent streams.
The generated tasks' test set is fixed; their training rows are fresh every epoch: epoch e draws
its own rows from (task, seed, train split, ..., e) (Task.epoch_rows), none equal to a test row,
so nothing can be memorised. reviews is a finite corpus: the same rows every epoch.
"""

from __future__ import annotations

import numpy as np

from derive_cells.train.data import Dataset, Task, majority_share

NEUTRAL = (
    "the", "a", "an", "this", "that", "it", "its", "movie", "film", "plot", "story", "actors",
    "actor", "scene", "scenes", "was", "is", "and", "of", "to", "in", "with", "director",
    "ending", "characters", "script", "music", "cast", "camera", "dialogue", "i", "we",
    "thought", "felt", "saw", "at", "cinema", "last", "night", "about",
)
POSITIVE = (
    "good", "great", "excellent", "wonderful", "fun", "brilliant", "enjoyable", "superb",
    "charming", "moving", "clever", "delightful",
)
NEGATIVE = (
    "bad", "awful", "boring", "terrible", "dull", "weak", "poor", "tedious", "clumsy", "bland",
    "messy", "horrible",
)
NEGATIONS = ("not", "never", "hardly")
VOCAB: tuple[str, ...] = ("<pad>", "<unk>", *sorted(NEUTRAL + POSITIVE + NEGATIVE + NEGATIONS))
WORD_ID = {w: i for i, w in enumerate(VOCAB)}
NEGATION_P = 0.3
REVIEW_LENGTH = (4, 20)
MAX_REDRAWS = 100  # rounds of drawing again the training rows that equal a test row
TASKS = {
    "sentiment": "synthetic reviews with negation (binary)",
    "distance": "one decisive word exactly d steps before the end (binary; needs distance)",
    "adding": "adding problem over T steps (regression; needs steps)",
    "reviews": "Rotten Tomatoes snippets from the vaderSentiment sdist (binary; fetched once)",
}
_KEYS = {"sentiment": 1, "distance": 2, "adding": 3}
_IDS = {name: np.array([WORD_ID[w] for w in words], dtype=np.int64)
        for name, words in [("neutral", NEUTRAL), ("positive", POSITIVE),
                            ("negative", NEGATIVE), ("negation", NEGATIONS)]}


def _rng(task: str, seed: int, split: int, *extra: int) -> np.random.Generator:
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng([_KEYS[task], int(seed), split, *extra])


def _check_sizes(n_train: int, n_test: int) -> None:
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1, got {n_train} and {n_test}")


def _pad(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Token rows -> (inputs int64 (N, T), lengths int64 (N,)), T the longest row."""
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    inputs = np.zeros((len(rows), int(lengths.max()) if rows else 0), dtype=np.int64)
    for i, r in enumerate(rows):
        inputs[i, : len(r)] = r
    return inputs, lengths


def _balanced(rng: np.random.Generator, n: int) -> np.ndarray:
    """float64 (n,) labels, half 1.0 and half 0.0 (one more 0.0 for odd n), shuffled."""
    return rng.permutation(np.arange(n) % 2).astype(np.float64)


def _pick(rng: np.random.Generator, kind: str, size: int | None = None):
    """Random ids of one word class: a scalar, or int64 (size,)."""
    ids = _IDS[kind]
    return ids[rng.integers(0, len(ids), size=size)]


def _review(rng: np.random.Generator, label: float) -> np.ndarray:
    """One synthetic review (int64 (L,) ids) whose negation-flipped polarity sum has sign label."""
    while True:
        L = int(rng.integers(REVIEW_LENGTH[0], REVIEW_LENGTH[1] + 1))
        k = int(rng.integers(1, 4))
        polarity = (2 * rng.integers(0, 2, size=k) - 1).tolist()
        negated = (rng.random(k) < NEGATION_P).tolist()
        score = sum(-p if n else p for p, n in zip(polarity, negated, strict=True))
        used = k + sum(negated)
        if score == 0 or (score > 0) != (label > 0) or used > L:
            continue
        units = []
        for pol, neg in zip(polarity, negated, strict=True):
            word = _pick(rng, "positive" if pol > 0 else "negative")
            units.append([_pick(rng, "negation"), word] if neg else [word])
        units += [[w] for w in _pick(rng, "neutral", L - used)]
        return np.array([w for i in rng.permutation(len(units)) for w in units[i]], np.int64)


def _key(inputs: np.ndarray, length: int) -> bytes:
    """A row's identity: its first `length` steps, as bytes."""
    return np.ascontiguousarray(inputs[:length]).tobytes()


def _keys(data: Dataset) -> set[bytes]:
    return {_key(data.inputs[n], int(data.lengths[n])) for n in range(len(data))}


def _disjoint(draw, labels: np.ndarray, exclude: set[bytes] | None, what: str):
    """(inputs, lengths) of draw(labels) with every row in exclude drawn again (with its label)
    until none is; ValueError when the rows cannot avoid the test set."""
    inputs, lengths = draw(labels)
    if not exclude:
        return inputs, lengths
    for _ in range(MAX_REDRAWS):
        bad = np.array([n for n in range(len(labels))
                        if _key(inputs[n], int(lengths[n])) in exclude], dtype=np.int64)
        if not bad.size:
            return inputs, lengths
        more, more_lengths = draw(labels[bad])
        inputs[bad], lengths[bad] = more, more_lengths
    raise ValueError(f"{what}: cannot draw training rows that differ from every test row (the "
                     "task has too few distinct rows); use a longer task or fewer test rows")


def _fresh(name: str, seed: int, n_train: int, test: Dataset, extra: tuple, make):
    """The fresh-row generator of a generated task: epoch e (1-based) draws n_train training
    rows from _rng(name, seed, 0, *extra, e), none of them equal to a test row."""
    exclude = _keys(test)

    def draw(epoch: int) -> Dataset:
        if epoch < 1:
            raise ValueError(f"epochs count from 1, got {epoch}")
        return make(_rng(name, seed, 0, *extra, epoch), n_train, exclude)

    return draw


def _sentiment_rows(rng: np.random.Generator, n: int, exclude: set[bytes] | None) -> Dataset:
    labels = _balanced(rng, n)

    def draw(ys):
        rows = [_review(rng, y) for y in ys]
        width = REVIEW_LENGTH[1]  # the longest review, negations included
        inputs = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            inputs[i, : len(r)] = r
        return inputs, np.array([len(r) for r in rows], dtype=np.int64)

    inputs, lengths = _disjoint(draw, labels, exclude, "sentiment")
    info = {"negation_p": NEGATION_P, "length": list(REVIEW_LENGTH)}
    return Dataset("sentiment", inputs[:, : int(lengths.max())], lengths, labels, "binary",
                   VOCAB, info)


def sentiment(seed: int = 0, n_train: int = 2000, n_test: int = 500) -> Task:
    """Synthetic reviews of 4-20 words with 1-3 sentiment words, each negated ("not good")
    with probability 0.3; label 1.0 when the flipped polarities sum above 0. Balanced classes.
    The test set is fixed; training rows are fresh every epoch (Task.epoch_rows), never equal to
    a test row; task.train is epoch 1's."""
    _check_sizes(n_train, n_test)
    test = _sentiment_rows(_rng("sentiment", seed, 1), n_test, None)
    draw = _fresh("sentiment", seed, n_train, test, (), _sentiment_rows)
    desc = (f"sentiment: synthetic reviews of {REVIEW_LENGTH[0]}-{REVIEW_LENGTH[1]} words, 1-3 "
            f"sentiment words negated with p={NEGATION_P}, {n_train} fresh train rows per epoch "
            f"/ {n_test} test, vocabulary {len(VOCAB)}")
    return Task("sentiment", draw(1), test, desc, majority_share(test.targets), draw)


def _distance_rows(d: int, prefix: tuple[int, int]):
    def make(rng: np.random.Generator, n: int, exclude: set[bytes] | None) -> Dataset:
        labels = _balanced(rng, n)

        def draw(ys):
            m, T = len(ys), prefix[1] + 1 + d
            lengths = rng.integers(prefix[0], prefix[1] + 1, size=m).astype(np.int64) + 1 + d
            neutral = rng.choice(_IDS["neutral"], size=(m, T))
            inputs = np.where(np.arange(T) < lengths[:, None], neutral, 0).astype(np.int64)
            decisive = np.where(ys > 0, rng.choice(_IDS["positive"], size=m),
                                rng.choice(_IDS["negative"], size=m))
            inputs[np.arange(m), lengths - 1 - d] = decisive
            return inputs, lengths

        inputs, lengths = _disjoint(draw, labels, exclude, f"distance {d}")
        return Dataset("distance", inputs[:, : int(lengths.max())], lengths, labels, "binary",
                       VOCAB, {"distance": int(d), "prefix": list(prefix)})

    return make


def distance(d: int, seed: int = 0, n_train: int = 2000, n_test: int = 500,
             prefix: tuple[int, int] = (0, 5)) -> Task:
    """Neutral prefix of prefix[0]..prefix[1] words, one decisive sentiment word, then exactly d
    neutral words: inputs[n, lengths[n] - 1 - d] decides the label (1.0 positive, 0.0 negative).
    Fresh training rows every epoch, never equal to a test row (as sentiment)."""
    if d < 0:
        raise ValueError(f"distance d must be >= 0, got {d}")
    if not 0 <= prefix[0] <= prefix[1]:
        raise ValueError(f"prefix must satisfy 0 <= prefix[0] <= prefix[1], got {prefix}")
    _check_sizes(n_train, n_test)
    make = _distance_rows(d, prefix)
    test = make(_rng("distance", seed, 1, d), n_test, None)
    draw = _fresh("distance", seed, n_train, test, (d,), make)
    desc = (f"distance: decisive word exactly {d} steps before the end after a neutral prefix of "
            f"{prefix[0]}-{prefix[1]} words, {n_train} fresh train rows per epoch / {n_test} test")
    return Task("distance", draw(1), test, desc, majority_share(test.targets), draw)


def _adding_rows(steps: int):
    def make(rng: np.random.Generator, n: int, exclude: set[bytes] | None) -> Dataset:
        def draw(ys):
            m = len(ys)
            values = rng.random((m, steps))
            first = rng.integers(0, steps // 2, size=m)
            second = rng.integers(steps // 2, steps, size=m)
            marker = np.zeros((m, steps))
            marker[np.arange(m), first] = 1.0
            marker[np.arange(m), second] = 1.0
            return np.stack([values, marker], axis=-1), np.full(m, steps, dtype=np.int64)

        inputs, lengths = _disjoint(draw, np.zeros(n), exclude, f"adding {steps}")
        marked = inputs[:, :, 1] > 0  # the targets of the rows kept (redrawn ones included)
        targets = np.where(marked, inputs[:, :, 0], 0.0).sum(axis=1)
        return Dataset("adding", inputs, lengths, targets, "regression", None,
                       {"steps": int(steps)})

    return make


def adding(steps: int, seed: int = 0, n_train: int = 2000, n_test: int = 500) -> Task:
    """Features float64 (N, steps, 2): values U(0, 1) and a marker that is 1.0 at one step of
    each half; target the sum of the two marked values. chance = 1/6, the MSE of predicting 1.
    Fresh training rows every epoch (as sentiment)."""
    if steps < 2:
        raise ValueError(f"adding needs steps >= 2, got {steps}")
    _check_sizes(n_train, n_test)
    make = _adding_rows(steps)
    test = make(_rng("adding", seed, 1, steps), n_test, None)
    draw = _fresh("adding", seed, n_train, test, (steps,), make)
    desc = (f"adding: sum of two marked U(0,1) values over {steps} steps, "
            f"{n_train} fresh train rows per epoch / {n_test} test")
    return Task("adding", draw(1), test, desc, 1.0 / 6.0, draw)


def make_task(name: str, seed: int = 0, n_train: int | None = None, n_test: int | None = None,
              distance: int | None = None, steps: int | None = None,
              data_dir: str | None = None) -> Task:
    """The task `name` (a key of TASKS). distance is required by "distance" and steps by
    "adding"; data_dir is used by "reviews" only. n_train / n_test default to the generator's
    sizes; for "reviews" they keep the first rows of the (already shuffled) split."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    if distance is not None and name != "distance":
        raise ValueError(f"distance applies to the distance task only, not {name!r}")
    if steps is not None and name != "adding":
        raise ValueError(f"steps applies to the adding task only, not {name!r}")
    sizes = {k: v for k, v in (("n_train", n_train), ("n_test", n_test)) if v is not None}
    if name == "sentiment":
        return sentiment(seed, **sizes)
    if name == "distance":
        if distance is None:
            raise ValueError("the distance task needs a distance d (e.g. distance=10)")
        return _distance(distance, seed, **sizes)
    if name == "adding":
        if steps is None:
            raise ValueError("the adding task needs a number of steps (e.g. steps=50)")
        return adding(steps, seed, **sizes)
    from derive_cells.train import reviews

    task = reviews.load(seed=seed, data_dir=data_dir)
    train, test = task.train, task.test
    for key, n in sizes.items():
        available = len(train if key == "n_train" else test)
        if not 1 <= n <= available:
            raise ValueError(f"reviews: {key} must lie in [1, {available}], got {n}")
    if "n_train" in sizes:
        train = train.subset(np.arange(sizes["n_train"]))
    if "n_test" in sizes:
        test = test.subset(np.arange(sizes["n_test"]))
    desc = task.description + (f" (using {len(train)} train / {len(test)} test)" if sizes else "")
    return Task(task.name, train, test, desc, majority_share(test.targets))


_distance = distance


def batches(n: int, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Index arrays int64 (<= batch_size,) covering range(n) once each; shuffled by rng when
    given, in order when rng is None; the last batch may be smaller."""
    if batch_size < 1 or n < 0:
        raise ValueError(f"need n >= 0 and batch_size >= 1, got {n} and {batch_size}")
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]
