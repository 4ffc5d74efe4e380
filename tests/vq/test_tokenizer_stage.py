"""--mode=train_tokenizer's function on a tiny config: it trains and reports, its
tokenizer loads by config and round-trips images, a finished workdir trains nothing, and
a resume (from a periodic checkpoint, or after SIGINT) ends with the parameters of an
uninterrupted run, bit for bit."""

import json
import os
import shutil
import signal

import jax
import numpy as np
import pytest
from tokenizer_fixtures import tiny_config, tiny_splits

from cofre_jax.config.typed import ConfigError
from cofre_jax.data.errors import DataError
from cofre_jax.vq import run
from cofre_jax.vq.tokenizer import cached_split_codes, load_tokenizer

SPLITS = tiny_splits()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An uninterrupted 60-step run: (workdir, report, logged lines)."""
    workdir = str(tmp_path_factory.mktemp("tok") / "uninterrupted")
    lines = []
    report = run.train_tokenizer(tiny_config(), workdir, lines.append, splits=SPLITS)
    return workdir, report, lines


def _params(workdir):
    return load_tokenizer(tiny_config(workdir)).params


def _assert_bitwise_equal(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _checkpoint_steps(workdir):
    return sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())


def test_training_reports_and_the_tokenizer_round_trips(trained, tmp_path):
    workdir, report, lines = trained
    assert report["steps"] == 60 and report["resumed_from_step"] == 0
    assert report["heldout_recon_mse"] < 0.5 * report["heldout_recon_mse_at_init"]
    assert 0 < report["heldout_codebook_used"] <= 1 and report["heldout_codebook_perplexity"] > 1
    assert report["settings"]["vq"]["codebook_size"] == 32 and report["grid"] == [8, 8]
    with open(os.path.join(workdir, "tokenizer.json")) as f:
        assert json.load(f) == report
    assert _checkpoint_steps(workdir) == [30, 60]
    assert any(line.startswith("tokenizer step 10/60 ") and "ETA" in line for line in lines)

    tokenizer = load_tokenizer(tiny_config(workdir))
    assert tokenizer.grid == (8, 8) and len(tokenizer.fingerprint) == 64
    images = SPLITS[1].images_NxHxWxC
    codes = tokenizer.encode(images)
    assert codes.shape == (16, 8, 8) and codes.dtype == np.int32
    decoded = tokenizer.decode(codes)
    assert decoded.shape == images.shape and decoded.dtype == np.uint8
    # The loaded tokenizer reconstructs as the stage measured: uint8 output clips towards
    # the binary images' 0 and 255, which can only lower the error (rounding adds < 1e-4).
    mse = np.mean((np.asarray(decoded, np.float32) / 127.5 - images / 127.5) ** 2)
    assert mse <= report["heldout_recon_mse"] + 1e-4
    assert mse < 0.5 * report["heldout_recon_mse_at_init"]
    with pytest.raises(DataError, match=r"codes span \[\d+, \d+\], outside the codebook"):
        tokenizer.decode(np.asarray(codes) + 32)
    with pytest.raises(DataError, match="images must be uint8 B x 16 x 16 x 1"):
        tokenizer.encode(images.astype(np.float32))
    # Decoded codes encode back to mostly the same codes.
    assert np.mean(np.asarray(tokenizer.encode(decoded)) == np.asarray(codes)) >= 0.9

    first = cached_split_codes(tiny_config(workdir, str(tmp_path)), tokenizer, SPLITS[1])
    np.testing.assert_array_equal(first, codes)
    assert len(list((tmp_path / "image_codes").glob("*.npy"))) == 1
    again = cached_split_codes(tiny_config(workdir, str(tmp_path)), tokenizer, SPLITS[1])
    np.testing.assert_array_equal(again, first)


def test_a_finished_workdir_prints_its_report_and_trains_nothing(trained, monkeypatch):
    workdir, report, _ = trained

    def no_training(*args, **kwargs):
        raise AssertionError("a finished workdir was trained again")

    monkeypatch.setattr(run, "_train", no_training)
    lines = []
    assert run.train_tokenizer(tiny_config(), workdir, lines.append, splits=SPLITS) == report
    assert any("nothing to train" in line for line in lines)
    assert any("held-out reconstruction MSE" in line for line in lines)
    # Other settings in the same workdir are refused, naming the first difference.
    with pytest.raises(ConfigError, match=r"train\.learning_rate: saved 0\.005, configured 0\.01"):
        other = tiny_config(**{"data.tokenizer.learning_rate": 1e-2})
        run.train_tokenizer(other, workdir, splits=SPLITS)


def test_resuming_from_a_periodic_checkpoint_is_bitwise_exact(trained, tmp_path):
    """As a run killed between the checkpoints at steps 30 and 60."""
    workdir, report, _ = trained
    killed = str(tmp_path / "killed")
    shutil.copytree(workdir, killed)
    shutil.rmtree(os.path.join(killed, "checkpoints", "60"))
    os.remove(os.path.join(killed, "tokenizer.json"))
    lines = []
    resumed = run.train_tokenizer(tiny_config(), killed, lines.append, splits=SPLITS)
    assert "resumed the tokenizer from checkpoint at step 30" in lines[0]
    assert resumed["resumed_from_step"] == 30
    assert resumed["heldout_recon_mse"] == report["heldout_recon_mse"]
    _assert_bitwise_equal(_params(killed), _params(workdir))


def test_sigint_saves_a_checkpoint_and_the_rerun_ends_bitwise_exact(trained, tmp_path, capsys):
    workdir, _, _ = trained
    stopped = str(tmp_path / "stopped")

    def interrupt_at_step_10(line):
        if line.startswith("tokenizer step 10/"):
            os.kill(os.getpid(), signal.SIGINT)

    first = run.train_tokenizer(tiny_config(), stopped, interrupt_at_step_10, splits=SPLITS)
    assert first == {"stopped_at_step": 10, "steps": 60}
    assert _checkpoint_steps(stopped) == [10]
    assert not os.path.exists(os.path.join(stopped, "tokenizer.json"))
    assert "SIGINT received" in capsys.readouterr().err
    lines = []
    run.train_tokenizer(tiny_config(), stopped, lines.append, splits=SPLITS)
    assert "at step 10" in lines[0]
    _assert_bitwise_equal(_params(stopped), _params(workdir))


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        # Self-consistent configs whose tokenizer section is not the trained one's.
        (
            {"data.tokenizer.channel_mult": (1, 2, 2), "data.grid_size": 4},
            r"downsamples by 2 \(channel_mult \(1, 2\)\), so data.image_size = 16 gives a "
            r"8 x 8 grid, not config field 'data.grid_size' = 4",
        ),
        ({"model.codebook_size": 64}, "has 32 codes but config field 'model.codebook_size' = 64"),
        ({"data.channels": 3}, "reads 1-channel images but config field 'data.channels' = 3"),
    ],
)
def test_a_trained_tokenizer_that_does_not_fit_the_config_is_one_line(trained, overrides, pattern):
    workdir, _, _ = trained
    with pytest.raises(ConfigError, match=pattern) as caught:
        load_tokenizer(tiny_config(workdir, **overrides))
    assert "\n" not in str(caught.value)
