"""Corpora: reading text, and the calibration / evaluation split of ../shared/corpora/README.md.

Calibration (profiling, thresholds, predictor training) is the articles in the first 80% of
the file's bytes, cut at an article boundary; evaluation (perplexity, recall) is the rest.
Quality figures are only ever reported on the evaluation part.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from thermocline.errors import ThermoclineError

SPLITS = ("calibration", "eval", "all")
CALIBRATION_SHARE = 0.8
# An article title line: " = Title = " (section headings have two or more "=").
ARTICLE_START = re.compile(rb"^ = [^=].*[^=] = $", re.MULTILINE)


def shared_dir() -> Path:
    """../shared beside the checkout (or THERMOCLINE_SHARED): corpora the project may read."""
    if "THERMOCLINE_SHARED" in os.environ:
        return Path(os.environ["THERMOCLINE_SHARED"])
    return Path(__file__).resolve().parents[2] / "shared"


KNOWN_CORPORA = {
    "wikitext-2": lambda: shared_dir() / "corpora" / "wikitext-2-raw" / "wiki.test.raw"
}
DEFAULT_CORPUS = "wikitext-2"


def resolve_corpus(spec: str | Path) -> Path:
    if str(spec) in KNOWN_CORPORA:
        path = KNOWN_CORPORA[str(spec)]()
        if not path.exists():
            raise ThermoclineError(
                f"corpus {spec} expected at {path}; set THERMOCLINE_SHARED to the shared folder"
            )
        return path
    path = Path(spec)
    if not path.exists():
        raise ThermoclineError(f"corpus {spec!r} not found (known: {', '.join(KNOWN_CORPORA)})")
    return path


def split_bytes(data: bytes, split: str) -> bytes:
    """The calibration or evaluation part of a corpus, cut where an article starts."""
    if split not in SPLITS:
        raise ThermoclineError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if split == "all":
        return data
    mark = int(len(data) * CALIBRATION_SHARE)
    starts = [m.start() for m in ARTICLE_START.finditer(data, 1, mark + 1)]
    cut = starts[-1] if starts else mark  # no article boundary: cut at the byte mark
    return data[:cut] if split == "calibration" else data[cut:]


def read_text(spec: str | Path, split: str = "all") -> str:
    """A plain-text corpus (one file), restricted to a split."""
    path = resolve_corpus(spec)
    if path.is_dir():
        raise ThermoclineError(f"{path} is a folder; give a text file")
    return split_bytes(path.read_bytes(), split).decode("utf-8", errors="replace")
