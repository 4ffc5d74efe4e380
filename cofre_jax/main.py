"""Entry point: flags -> (multi-host init) -> typed config -> one mode.

python -m cofre_jax.main --config=configs/quickstart.py --workdir=runs/qs [--mode=train]
python -m cofre_jax.main --config=configs/owt_mdlm.py --mode=describe
python -m cofre_jax.main --config=configs/quickstart.py --config.train.num_steps=10
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from cofre_jax.config.choices import MODES

# TensorFlow, imported by clu only to write TensorBoard events, otherwise prints three
# native log lines about oneDNN at import; it runs no TF math for us.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, samples).")
_MODE = flags.DEFINE_enum("mode", "train", MODES, "What to do.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed",
    "auto",
    ("auto", "on", "off"),
    "jax.distributed.initialize: 'auto' when a TPU pod, SLURM job or --coordinator is seen.",
)
_COORDINATOR = flags.DEFINE_string("coordinator", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def _multi_host_env() -> bool:
    slurm_tasks = int(os.environ.get("SLURM_NTASKS", "1"))
    tpu_hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return slurm_tasks > 1 or "," in tpu_hosts or _COORDINATOR.value is not None


def _init_distributed() -> None:
    if _DISTRIBUTED.value == "off" or (_DISTRIBUTED.value == "auto" and not _multi_host_env()):
        return
    import jax

    jax.distributed.initialize(
        coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value,
    )


def _unknown_override(argv: list[str]) -> str | None:
    """Names the first `--config.a.b=` override whose key the config file lacks."""
    import importlib.util

    path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if path is None:
        return None
    spec = importlib.util.spec_from_file_location("_cofre_config", path.split(":")[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config()
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        node, walked = cfg, []
        for key in arg[len("--config.") :].split("=", 1)[0].split("."):
            if not hasattr(node, "keys") or key not in node:
                where = ".".join(walked) or "the config"
                valid = sorted(node.keys()) if hasattr(node, "keys") else []
                dotted = ".".join([*walked, key])
                return f"unknown config key '{dotted}'; valid keys of {where}: {valid}"
            node, walked = node[key], [*walked, key]
    return None


USAGE = (
    "usage: python -m cofre_jax.main --config=configs/NAME.py --workdir=DIR "
    f"--mode={{{','.join(MODES)}}}"
)


def _missing_config_file(argv: list[str]) -> str | None:
    path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if path is None or os.path.isfile(path.split(":")[0]):
        return None
    folder = os.path.dirname(path) or "."
    known = (
        sorted(f for f in os.listdir(folder) if f.endswith(".py")) if os.path.isdir(folder) else []
    )
    return f"config file {path!r} does not exist" + (f"; {folder}/ has {known}" if known else "")


def _parse_flags(argv: list[str]) -> list[str]:
    # ml_collections reports these as tracebacks and absl adds its usage text: the
    # README promises one line for every user error.
    missing = _missing_config_file(argv)
    if missing:
        sys.exit(f"config error: {missing}")
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as e:
        message = _unknown_override(argv) or f"bad --config override: {e}"
        sys.exit(f"config error: {message}")
    except flags.Error as e:
        message = str(e).splitlines()[0]
        if message.startswith("flag --config."):  # a value of the wrong type
            sys.exit(f"config error: {message.removeprefix('flag ')}")
        sys.exit(f"error: {message} ({USAGE})")
    except OSError as e:  # the config file exists but cannot be read or run
        sys.exit(f"config error: {str(e).splitlines()[0]}")


def main(argv) -> None:
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]} ({USAGE})")
    if _CONFIG.value is None:
        sys.exit(f"error: --config=configs/NAME.py is required ({USAGE})")
    if not flags.FLAGS["verbosity"].present:
        # Progress is printed by the modes; library INFO lines (orbax's per-save
        # messages) would bury it. `-v 0` brings them back.
        logging.set_verbosity(logging.WARNING)
    from cofre_jax import modes
    from cofre_jax.config.typed import ConfigError, from_config_dict

    _init_distributed()
    try:
        config = from_config_dict(_CONFIG.value)
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    needs_workdir = _MODE.value in ("train", "eval", "sample", "convert", "train_tokenizer")
    if needs_workdir and not _WORKDIR.value:
        sys.exit(
            f"error: --mode={_MODE.value} needs --workdir=DIR, the run's folder "
            "(checkpoints, logs, reports), e.g. --workdir=runs/quickstart"
        )
    try:
        modes.run(_MODE.value, config, _WORKDIR.value)
    except _user_errors() as e:
        # Bad input the user can fix: one line, no traceback.
        sys.exit(f"error: {e}")


def _user_errors() -> tuple[type[Exception], ...]:
    from cofre_jax.checkpoint import CheckpointMismatchError
    from cofre_jax.config.typed import ConfigError
    from cofre_jax.convert import LayerMapError, TorchCheckpointError
    from cofre_jax.data.assets import AssetFetchError
    from cofre_jax.data.errors import DataError
    from cofre_jax.evaluation.hf_folder import ScorerLoadError
    from cofre_jax.train import NonFiniteLossError

    return (
        ConfigError,
        DataError,
        AssetFetchError,
        CheckpointMismatchError,
        LayerMapError,
        TorchCheckpointError,
        ScorerLoadError,
        NonFiniteLossError,
        FileNotFoundError,
    )


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
