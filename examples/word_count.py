"""Word count: a CPU-bound map-reduce over a synthetic corpus.

    (count_00 | count_01 | ... | count_<k-1>) >> top_words

The corpus is ``docs`` documents of ``WORDS_PER_DOC`` words each, drawn from a Zipf-like
vocabulary of made-up words (plus English stopwords and inflected forms). Document ``i`` is
generated from its own seed, so the corpus is the same however it is split. It is split into
``chunks`` contiguous ranges of documents; each counting task builds its documents in memory
and counts their words (strip punctuation, lowercase, drop stopwords, fold ``-s``/``-ed``/
``-ing``). ``top_words`` merges the partial counts and keeps the ten most frequent words.
Building each chunk inside its task keeps the work parallel and means no text crosses a
process boundary, only the partial counts.

Everything is pure Python; with the defaults one run is about 3 s of CPU time on one core.
When ``graflow.run`` is available the workflow runs on a process pool
(``processes=None`` lets it choose the size); otherwise in this process with
``wf.execute()``.

Run: python examples/word_count.py [--chunks 16] [--processes N] [--docs 5000]
On Redis nodes: graflow run examples.word_count:build --redis redis://host:6379/0
"""

from __future__ import annotations

import argparse
import itertools
import random
import time
from typing import Any

import graflow
from graflow import TaskExecutionContext, parallel, task, workflow
from graflow.core.workflow import WorkflowContext

SEED = 2024
DOCS = 5000
WORDS_PER_DOC = 400
TOP_N = 10

# Frequent English words, which the counters skip; most frequent first.
STOPWORDS = (
    "the", "of", "and", "to", "a", "in", "is", "it", "that", "for", "was", "on", "as",
    "with", "by", "at", "from", "or", "an", "be", "this", "are", "not", "but", "have",
)  # fmt: skip
STOPWORD_SET = frozenset(STOPWORDS)
SUFFIXES = ("ing", "ed", "s")
PUNCTUATION = ".,;:!?\"'()"


def make_vocabulary(size: int = 4000, seed: int = SEED) -> list[str]:
    """``size`` distinct made-up base words of 2-3 consonant-vowel syllables."""
    rng = random.Random(seed)
    seen: set[str] = set()
    words: list[str] = []
    while len(words) < size:
        word = "".join(rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou") for _ in range(3))
        word = word[: 2 * rng.randint(2, 3)]
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def word_distribution() -> tuple[list[str], list[float]]:
    """Every word form that can appear in the corpus, with cumulative weights."""
    forms: list[str] = []
    weights: list[float] = []
    for rank, word in enumerate(STOPWORDS):
        forms.append(word)
        weights.append(3.0 / (rank + 1))
    for rank, base in enumerate(make_vocabulary()):
        weight = 1.0 / (rank + 1) ** 1.05
        for suffix, share in (("", 0.55), ("s", 0.2), ("ed", 0.1), ("ing", 0.15)):
            forms.append(base + suffix)
            weights.append(weight * share)
    return forms, list(itertools.accumulate(weights))


FORMS, CUMULATIVE_WEIGHTS = word_distribution()


def document(index: int) -> str:
    """Document ``index`` of the corpus: sentences of Zipf-distributed words."""
    rng = random.Random(SEED * 1_000_003 + index)
    sentences = []
    left = WORDS_PER_DOC
    while left > 0:
        size = min(left, rng.randint(6, 18))
        left -= size
        words = rng.choices(FORMS, cum_weights=CUMULATIVE_WEIGHTS, k=size)
        words[0] = words[0].capitalize()
        if size > 6 and rng.random() < 0.4:
            words[size // 2] += ","
        words[-1] += rng.choice(".!?.")
        sentences.append(" ".join(words))
    return " ".join(sentences)


def normalize(token: str) -> str | None:
    """The counted form of ``token``, or None for stopwords and very short tokens."""
    word = token.strip(PUNCTUATION).lower()
    if len(word) < 3 or word in STOPWORD_SET:
        return None
    for suffix in SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def count_documents(first_doc: int, last_doc: int) -> dict[str, Any]:
    """Word counts of documents ``first_doc`` (inclusive) to ``last_doc`` (exclusive)."""
    counts: dict[str, int] = {}
    tokens = 0
    for index in range(first_doc, last_doc):
        for token in document(index).split():
            tokens += 1
            word = normalize(token)
            if word is not None:
                counts[word] = counts.get(word, 0) + 1
    return {"docs": last_doc - first_doc, "tokens": tokens, "counts": counts}


@task
def count_chunk(first_doc: int, last_doc: int) -> dict[str, Any]:
    """Map: count the words of one chunk of documents."""
    return count_documents(first_doc, last_doc)


@task(inject_context=True)
def top_words(ctx: TaskExecutionContext, chunk_ids: list[str], n: int) -> dict[str, Any]:
    """Reduce: merge the chunks' counts and keep the ``n`` most frequent words."""
    totals: dict[str, int] = {}
    tokens = 0
    docs = 0
    for chunk_id in chunk_ids:
        part = ctx.get_result(chunk_id)
        tokens += part["tokens"]
        docs += part["docs"]
        for word, count in part["counts"].items():
            totals[word] = totals.get(word, 0) + count
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    return {
        "top": ranked[:n],
        "docs": docs,
        "tokens": tokens,
        "counted": sum(totals.values()),
        "distinct": len(totals),
    }


def build(chunks: int = 16, docs: int = DOCS) -> WorkflowContext:
    """The map-reduce workflow over ``docs`` documents split into ``chunks`` tasks."""
    if not 1 <= chunks <= docs:
        raise ValueError(f"chunks must be between 1 and {docs}, got {chunks}")
    with workflow("word_count") as wf:
        # count_chunk and top_words are templates: each call below makes a task of its own
        # (with its arguments bound) in this workflow; the templates never run themselves.
        mappers = [
            count_chunk(
                task_id=f"count_{i:02d}",
                first_doc=i * docs // chunks,
                last_doc=(i + 1) * docs // chunks,
            )
            for i in range(chunks)
        ]
        reducer = top_words(task_id="top_words", chunk_ids=[m.task_id for m in mappers], n=TOP_N)
        group = mappers[0] if chunks == 1 else parallel(*mappers).set_group_name("count_chunks")
        group >> reducer
    return wf


def main(processes: int | None = None, chunks: int = 16, docs: int = DOCS) -> dict[str, Any]:
    """Count the corpus; return the top words, totals, and how the run was made."""
    wf = build(chunks, docs)
    started = time.perf_counter()
    if hasattr(graflow, "run"):
        result: dict[str, Any] = graflow.run(wf, processes=processes).value
        engine = f"graflow.run(processes={processes})"
    else:
        result = wf.execute()
        engine = "wf.execute()"
    elapsed = time.perf_counter() - started
    return {**result, "chunks": chunks, "engine": engine, "seconds": round(elapsed, 3)}


def parse_args() -> argparse.Namespace:
    """The command line: --chunks, --processes, --docs."""
    parser = argparse.ArgumentParser(description="CPU-bound word-count map-reduce")
    parser.add_argument("--chunks", type=int, default=16, help="counting tasks (default 16)")
    parser.add_argument("--processes", type=int, default=None, help="worker processes")
    parser.add_argument("--docs", type=int, default=DOCS, help=f"documents (default {DOCS})")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    out = main(processes=args.processes, chunks=args.chunks, docs=args.docs)
    print(
        f"Counted {out['counted']} words ({out['tokens']} tokens, {out['distinct']} distinct) "
        f"in {out['docs']} documents, {out['chunks']} chunks"
    )
    print(f"Top {len(out['top'])} words:")
    for rank, (word, count) in enumerate(out["top"], start=1):
        print(f"  {rank:>2}. {word:<8} {count:>7}")
    print(f"Run: {out['engine']} in {out['seconds']:.2f} s")
