"""Files from pinned Debian packages, fetched once and read without installing them.

`apt-get download <package>=<version>` (no root needed) puts the .deb in a temporary
folder. A machine whose apt has no package lists (a fresh container that never ran
`apt-get update`) cannot do that, so an asset that names its pool path is then fetched
from the Debian mirror over HTTP instead (DEBIAN_MIRROR). The .deb is an `ar` archive
(members `debian-binary`, `control.tar.*`, `data.tar.*`) parsed here in Python. Only
the wanted members of `data.tar.*` are extracted, each written atomically and checked
against its pinned sha256 however the .deb came (docs/design.md §4).

Cache layout: <cache_dir>/debian/<package>_<version>/<member path inside data.tar>.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from cofre_jax.data.assets import AssetFetchError, atomic_write_bytes

# The mirror apt uses on Debian machines; a pool path below it names one .deb file.
DEBIAN_MIRROR = "http://deb.debian.org/debian"
_AR_MAGIC = b"!<arch>\n"
_AR_HEADER_BYTES = 60
# tarfile reads these compressions with the standard library alone.
_TAR_MODES = {
    "data.tar": "r:",
    "data.tar.gz": "r:gz",
    "data.tar.xz": "r:xz",
    "data.tar.bz2": "r:bz2",
}


@dataclasses.dataclass(frozen=True)
class DebianAsset:
    """Files inside a pinned Debian package: member path -> sha256 ("" = unchecked)."""

    package: str
    version: str
    members: tuple[tuple[str, str], ...]
    # The .deb's path on the mirror ("pool/main/..."), for machines without apt lists;
    # "" = apt-get only.
    pool_path: str = ""


class DebFormatError(AssetFetchError):
    """A file is not a readable .deb, or lacks the expected member."""


def ar_members(data: bytes, what: str = ".deb") -> dict[str, bytes]:
    """The members of an `ar` archive (the common format, as .deb files use it), by name."""
    if not data.startswith(_AR_MAGIC):
        raise DebFormatError(f"{what} is not an ar archive (no '!<arch>' header)")
    members: dict[str, bytes] = {}
    pos = len(_AR_MAGIC)
    while pos < len(data):
        header = data[pos : pos + _AR_HEADER_BYTES]
        if len(header) < _AR_HEADER_BYTES or header[58:60] != b"`\n":
            raise DebFormatError(f"{what}: corrupt ar member header at byte {pos}")
        name = header[:16].decode("ascii", errors="replace").rstrip(" ").rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError as e:
            raise DebFormatError(f"{what}: bad size in the ar header of {name!r}") from e
        start = pos + _AR_HEADER_BYTES
        if start + size > len(data):
            raise DebFormatError(f"{what}: member {name!r} is truncated ({size} bytes expected)")
        members[name] = data[start : start + size]
        pos = start + size + (size % 2)  # members are padded to an even offset
    return members


def _data_tar(members: dict[str, bytes], what: str) -> tarfile.TarFile:
    names = [n for n in members if n.startswith("data.tar")]
    if len(names) != 1:
        raise DebFormatError(f"{what} has no single data.tar member; members: {sorted(members)}")
    name = names[0]
    if name == "data.tar.zst":
        raise DebFormatError(
            f"{what} compresses its files with zstd (data.tar.zst), which the Python 3.11 "
            "standard library cannot read; extract it with `dpkg-deb -x` and point the "
            "loader at the files"
        )
    if name not in _TAR_MODES:
        raise DebFormatError(f"{what}: unsupported {name}; readable: {sorted(_TAR_MODES)}")
    return tarfile.open(fileobj=io.BytesIO(members[name]), mode=_TAR_MODES[name])


def read_deb_members(deb: bytes, wanted: Sequence[str], what: str = ".deb") -> dict[str, bytes]:
    """The bytes of the `wanted` files (paths as in the package, without a leading "./")."""
    with _data_tar(ar_members(deb, what), what) as tar:
        regular = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
        missing = [w for w in wanted if w not in regular]
        if missing:
            raise DebFormatError(
                f"{what} has no file {missing[0]!r}; it holds {len(regular)} files, e.g. "
                f"{sorted(regular)[:5]}"
            )
        return {w: tar.extractfile(regular[w]).read() for w in wanted}


def apt_download(package: str, version: str, into: Path) -> Path:
    """`apt-get download package=version` into the folder `into`; the path of the .deb."""
    cmd = ["apt-get", "download", "--quiet", f"{package}={version}"]
    try:
        proc = subprocess.run(cmd, cwd=into, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise AssetFetchError(
            f"apt-get is not available to download the Debian package {package}={version}; "
            "copy the cache folder from a machine that has it"
        ) from e
    debs = sorted(into.glob("*.deb"))
    if proc.returncode != 0 or len(debs) != 1:
        tail = (proc.stderr or proc.stdout).strip()[-1000:]
        raise AssetFetchError(
            f"could not download the Debian package {package}={version} ({' '.join(cmd)}): "
            f"{tail}. If apt does not know the package, run `apt-get update` (needs root) "
            "with a Debian bookworm source, or copy the cache folder from a machine that has it."
        )
    return debs[0]


def mirror_download(url: str, into: Path, timeout_s: float = 300.0) -> Path:
    """The .deb at `url`, saved into the folder `into`; its path."""
    path = into / url.rsplit("/", 1)[-1].replace("%7E", "~")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            path.write_bytes(response.read())
    except (urllib.error.URLError, OSError) as e:
        raise AssetFetchError(f"could not download {url}: {e}") from e
    return path


def download_deb(asset: DebianAsset, into: Path) -> Path:
    """The asset's .deb in `into`: by apt-get, else (no apt lists, no apt-get) from the
    mirror's pool when the asset names its pool path."""
    try:
        return apt_download(asset.package, asset.version, into)
    except AssetFetchError as apt_error:
        if not asset.pool_path:
            raise
        url = f"{DEBIAN_MIRROR}/{asset.pool_path.replace('~', '%7E')}"
        print(f"[cofre_jax] apt-get could not fetch it; downloading {url}", flush=True)
        try:
            return mirror_download(url, into)
        except AssetFetchError as mirror_error:
            raise AssetFetchError(f"{mirror_error}; and before that, {apt_error}") from None


def _package_dir(asset: DebianAsset, cache_dir: Path) -> Path:
    return cache_dir / "debian" / f"{asset.package}_{asset.version}"


def fetch_debian_asset(
    asset: DebianAsset, cache_dir: Path, *, deb_file: str | Path = ""
) -> dict[str, Path]:
    """Member path -> cached file, downloading the package once if any file is missing.

    `deb_file`, when given, is read instead of downloading (a .deb copied by hand onto
    a machine without apt). Every sha256 is checked before anything is written, so a
    mismatch leaves the cache untouched."""
    root = _package_dir(asset, cache_dir)
    paths = {member: root / member for member, _ in asset.members}
    if all(p.is_file() for p in paths.values()):
        return paths
    wanted = [member for member, _ in asset.members]
    if deb_file:
        deb_path = Path(deb_file).expanduser()
        if not deb_path.is_file():
            raise AssetFetchError(f"Debian package file {str(deb_path)!r} does not exist")
        files = read_deb_members(deb_path.read_bytes(), wanted, what=str(deb_path))
    else:
        print(
            f"[cofre_jax] fetching Debian package {asset.package}={asset.version} into "
            f"{root} (one-time download)...",
            flush=True,
        )
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
            deb_path = download_deb(asset, Path(tmp))
            files = read_deb_members(deb_path.read_bytes(), wanted, what=deb_path.name)
    for member, sha256 in asset.members:
        digest = hashlib.sha256(files[member]).hexdigest()
        if sha256 and digest != sha256:
            raise AssetFetchError(
                f"{member} from {asset.package}={asset.version} has sha256 {digest}, "
                f"expected {sha256}"
            )
    for member, path in paths.items():
        atomic_write_bytes(path, files[member])
    total = sum(len(b) for b in files.values())
    print(f"[cofre_jax] saved {len(files)} files under {root} ({total / 1e6:.1f} MB)", flush=True)
    return paths
