"""Tiny stand-ins for image assets: idx files, .deb archives and a fake `apt-get`.

Everything is built in memory or under tmp_path, so no test needs the network or root.
"""

import gzip
import hashlib
import io
import os
import stat
import tarfile

import numpy as np

from cofre_jax.data import deb
from cofre_jax.data.images import idx

FASHION_DIR = "usr/share/datasets/fashion-mnist"
FASHION_FILES = {
    "train_images": f"{FASHION_DIR}/train-images-idx3-ubyte.gz",
    "train_labels": f"{FASHION_DIR}/train-labels-idx1-ubyte.gz",
    "test_images": f"{FASHION_DIR}/t10k-images-idx3-ubyte.gz",
    "test_labels": f"{FASHION_DIR}/t10k-labels-idx1-ubyte.gz",
}


def idx_bytes(array: np.ndarray, *, gzipped: bool = True) -> bytes:
    """An idx file of a uint8 array (magic 0x0000 08 <ndim>, big-endian dims)."""
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    raw = header + array.tobytes()
    return gzip.compress(raw, mtime=0) if gzipped else raw


def ar_archive(members: list[tuple[str, bytes]]) -> bytes:
    """A common-format ar archive, as dpkg-deb writes it (names end with '/')."""
    out = [b"!<arch>\n"]
    for name, data in members:
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}".encode() + b"`\n"
        assert len(header) == 60
        out += [header, data, b"\n" if len(data) % 2 else b""]
    return b"".join(out)


def tar_bytes(files: dict[str, bytes], mode: str = "w:xz") -> bytes:
    """A tar archive with "./"-prefixed member names and their folders, like a .deb's."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tf:
        folder = tarfile.TarInfo("./usr")
        folder.type = tarfile.DIRTYPE
        tf.addfile(folder)
        for name, data in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def fake_deb(files: dict[str, bytes], compression: str = "xz") -> bytes:
    suffix = f".{compression}" if compression else ""
    mode = f"w:{compression}" if compression else "w"
    control = tar_bytes({"control": b"Package: fake\nVersion: 1.0\n"}, "w:xz")
    return ar_archive(
        [
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", control),
            (f"data.tar{suffix}", tar_bytes(files, mode)),
        ]
    )


def fashion_arrays(n_train: int = 40, n_test: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def fashion_files(arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    """Member path -> gzip idx bytes, plus a file the loader must leave alone."""
    files = {FASHION_FILES[key]: idx_bytes(array) for key, array in arrays.items()}
    files["usr/share/doc/dataset-fashion-mnist/copyright"] = b"MIT\n"
    return files


def fake_asset(files: dict[str, bytes], version: str = "1.0-1") -> deb.DebianAsset:
    """FASHION_MNIST's members, pinned to the fake files' hashes."""
    members = tuple(
        (member, hashlib.sha256(files[member]).hexdigest())
        for member, _ in idx.FASHION_MNIST.members
    )
    return deb.DebianAsset("dataset-fashion-mnist", version, members)


def install_fake_apt(monkeypatch, tmp_path, deb_bytes: bytes | None, *, stderr: str = ""):
    """An `apt-get` first on PATH that logs its arguments and drops the .deb into its
    working folder, or fails with `stderr` when `deb_bytes` is None. Returns the log."""
    bin_dir, log = tmp_path / "fake-bin", tmp_path / "apt.log"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "apt-get"
    if deb_bytes is None:
        body = f'echo "$@" >> "{log}"\necho "{stderr}" >&2\nexit 100\n'
    else:
        source = tmp_path / "fake-package_1.0-1_all.deb"
        source.write_bytes(deb_bytes)
        body = f'echo "$@" >> "{log}"\ncp "{source}" .\n'
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log
