"""The .deb reader and the one-time Debian fetch, on archives built in the test.

A fake `apt-get` on PATH stands in for the registry, so these run offline and without
root; they check our ar / tar parsing, caching and error messages.
"""

import dataclasses
import hashlib
import io

import pytest
from image_fixtures import ar_archive, fake_deb, install_fake_apt

from cofre_jax.data import deb
from cofre_jax.data.assets import AssetFetchError

FILES = {
    "usr/share/datasets/x/a.gz": b"\x1f\x8b odd-sized payload",
    "usr/share/datasets/x/b.bin": bytes(range(256)) * 3,
    "usr/share/doc/x/copyright": b"MIT\n",
}
WANTED = ["usr/share/datasets/x/a.gz", "usr/share/datasets/x/b.bin"]


def _asset(version="1.0-1", sha=None) -> deb.DebianAsset:
    members = tuple(
        (m, hashlib.sha256(FILES[m]).hexdigest() if sha is None else sha) for m in WANTED
    )
    return deb.DebianAsset("fake-package", version, members)


def test_ar_members_round_trip_with_odd_sizes():
    members = [("debian-binary", b"2.0\n"), ("odd", b"abc"), ("after-odd", b"xyz12"), ("e", b"")]
    assert deb.ar_members(ar_archive(members)) == dict(members)


@pytest.mark.parametrize("compression", ["xz", "gz", "bz2", ""])
def test_read_deb_members_gives_the_exact_bytes(compression):
    data = fake_deb(FILES, compression)
    assert deb.read_deb_members(data, WANTED) == {m: FILES[m] for m in WANTED}


def test_deb_errors_are_one_clear_line():
    with pytest.raises(deb.DebFormatError, match="not an ar archive"):
        deb.read_deb_members(b"PK\x03\x04 a zip file", WANTED)
    with pytest.raises(deb.DebFormatError, match="truncated"):
        deb.ar_members(fake_deb(FILES)[:-100])
    with pytest.raises(deb.DebFormatError, match="has no file 'usr/share/nope'"):
        deb.read_deb_members(fake_deb(FILES), ["usr/share/nope"])
    zstd = ar_archive([("debian-binary", b"2.0\n"), ("data.tar.zst", b"\x28\xb5\x2f\xfd")])
    with pytest.raises(deb.DebFormatError, match="zstd") as info:
        deb.read_deb_members(zstd, WANTED)
    assert "\n" not in str(info.value)
    with pytest.raises(deb.DebFormatError, match="no single data.tar"):
        deb.read_deb_members(ar_archive([("debian-binary", b"2.0\n")]), WANTED)


def test_fetch_downloads_once_and_caches_atomically(tmp_path, monkeypatch):
    log = install_fake_apt(monkeypatch, tmp_path, fake_deb(FILES))
    cache = tmp_path / "cache"
    paths = deb.fetch_debian_asset(_asset(), cache)
    root = cache / "debian" / "fake-package_1.0-1"
    assert paths == {m: root / m for m in WANTED}
    assert {m: p.read_bytes() for m, p in paths.items()} == {m: FILES[m] for m in WANTED}
    assert not (root / "usr/share/doc/x/copyright").exists()  # only the wanted members
    assert deb.fetch_debian_asset(_asset(), cache) == paths
    assert log.read_text().split("\n")[:-1] == ["download --quiet fake-package=1.0-1"]
    # No temporary files or download folders are left behind.
    leftovers = [p.name for p in cache.rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_sha256_mismatch_leaves_the_cache_untouched(tmp_path, monkeypatch):
    install_fake_apt(monkeypatch, tmp_path, fake_deb(FILES))
    cache = tmp_path / "cache"
    with pytest.raises(AssetFetchError, match="has sha256 .* expected 000"):
        deb.fetch_debian_asset(_asset(sha="000"), cache)
    assert not (cache / "debian").exists()


def test_failed_apt_download_says_what_is_needed(tmp_path, monkeypatch):
    install_fake_apt(monkeypatch, tmp_path, None, stderr="E: Unable to locate package fake")
    with pytest.raises(AssetFetchError, match="Unable to locate package.*apt-get update"):
        deb.fetch_debian_asset(_asset(), tmp_path / "cache")


def test_a_deb_file_given_by_hand_needs_no_apt(tmp_path, monkeypatch):
    log = install_fake_apt(monkeypatch, tmp_path, None, stderr="E: must not be called")
    copy = tmp_path / "by-hand.deb"
    copy.write_bytes(fake_deb(FILES))
    paths = deb.fetch_debian_asset(_asset(), tmp_path / "cache", deb_file=copy)
    assert {m: p.read_bytes() for m, p in paths.items()} == {m: FILES[m] for m in WANTED}
    assert not log.exists()
    with pytest.raises(AssetFetchError, match="nope.deb' does not exist"):
        deb.fetch_debian_asset(_asset("2.0-1"), tmp_path / "cache", deb_file=tmp_path / "nope.deb")


def test_without_apt_lists_a_pool_path_is_fetched_from_the_mirror(tmp_path, monkeypatch):
    install_fake_apt(monkeypatch, tmp_path, None, stderr="E: Unable to locate package fake")
    asked = []

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def fake_urlopen(url, timeout):
        asked.append(url)
        return Response(fake_deb(FILES))

    monkeypatch.setattr(deb.urllib.request, "urlopen", fake_urlopen)
    asset = dataclasses.replace(_asset(), pool_path="pool/main/f/fake/fake_1.0~a-1_all.deb")
    paths = deb.fetch_debian_asset(asset, tmp_path / "cache")
    assert {m: p.read_bytes() for m, p in paths.items()} == {m: FILES[m] for m in WANTED}
    assert asked == [f"{deb.DEBIAN_MIRROR}/pool/main/f/fake/fake_1.0%7Ea-1_all.deb"]

    def unreachable(url, timeout):
        raise deb.urllib.error.URLError("no route")

    monkeypatch.setattr(deb.urllib.request, "urlopen", unreachable)
    later = dataclasses.replace(asset, version="2.0-1")
    with pytest.raises(AssetFetchError, match="no route.*Unable to locate package"):
        deb.fetch_debian_asset(later, tmp_path / "cache")
