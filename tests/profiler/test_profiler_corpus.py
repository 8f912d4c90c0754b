"""Corpora for profiling: plain text with its split rule, datasets-backed files, hub names."""

import json
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tiny_models import byte_tokenizer

from thermocline.corpus import read_text
from thermocline.errors import ThermoclineError
from thermocline.models.tokenizer import TextTokenizer
from thermocline.profiler.datasets_corpus import corpus_key, corpus_tokens

DOCS = [f"Document number {i}: {'words ' * (i + 1)}" for i in range(10)]


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer(byte_tokenizer())


def ids_of(tokenizer, docs):
    return [t for doc in docs for t in tokenizer.encode(doc)]


def test_plain_text_keeps_the_corpus_split_rule(tokenizer):
    text = read_text("wikitext-2", "calibration")
    assert (
        corpus_tokens("wikitext-2", "calibration", tokenizer, 5000).tolist()
        == tokenizer.encode(text[:20_000])[:5000]
    )
    eval_ids = corpus_tokens("wikitext-2", "eval", tokenizer, 10**9)
    assert len(eval_ids) == len(tokenizer.encode(read_text("wikitext-2", "eval")))


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "txt-folder"])
def test_datasets_inputs_split_by_document(tmp_path, tokenizer, kind):
    if kind == "jsonl":
        spec = tmp_path / "docs.jsonl"
        spec.write_text(
            "".join(json.dumps({"id": i, "text": d}) + "\n" for i, d in enumerate(DOCS))
        )
    elif kind == "parquet":
        spec = tmp_path / "docs.parquet"
        pq.write_table(pa.table({"content": DOCS, "n": list(range(10))}), spec)  # one string column
    else:
        spec = tmp_path / "docs"
        spec.mkdir()
        for i, doc in enumerate(DOCS):
            (spec / f"{i:02d}.txt").write_text(doc)
    assert corpus_tokens(str(spec), "calibration", tokenizer, 10**6).tolist() == ids_of(
        tokenizer, DOCS[:8]
    )
    assert corpus_tokens(str(spec), "eval", tokenizer, 10**6).tolist() == ids_of(
        tokenizer, DOCS[8:]
    )
    assert corpus_tokens(str(spec), "all", tokenizer, 50).tolist() == ids_of(tokenizer, DOCS)[:50]
    assert corpus_key(str(spec))["files"]


def test_unusable_datasets_inputs(tmp_path, tokenizer):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.txt").write_text("x")
    (mixed / "b.jsonl").write_text('{"text": "y"}\n')
    with pytest.raises(ThermoclineError, match="one kind"):
        corpus_tokens(str(mixed), "all", tokenizer, 10)
    two = tmp_path / "two.jsonl"
    two.write_text('{"title": "a", "body": "b"}\n')
    with pytest.raises(ThermoclineError, match="no 'text' column"):
        corpus_tokens(str(two), "all", tokenizer, 10)


def test_hub_name_fails_fast_offline(tokenizer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ThermoclineError, match="not reachable"):
        corpus_tokens("someone/some-dataset:config", "calibration", tokenizer, 10)
    assert time.monotonic() - start < 10
