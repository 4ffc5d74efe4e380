"""The one module that talks to orbax.

A checkpoint holds everything an exact resume needs: the train state (params,
optimiser state, EMA, step, RNG key, skipped-step counter) and each process's
data-iterator position (grain writes one file per process). Saves are atomic:
orbax writes into a temporary folder and renames it when complete, so a run killed
mid-save leaves the previous checkpoint as the latest usable one.
"""

from __future__ import annotations

import contextlib
import logging as py_logging
import os
import re
import sys
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from cofre_jax import sharding


class CheckpointMismatchError(ValueError):
    """The checkpoint on disk does not fit the configured model or optimiser."""


# What orbax warns about on every read of another run's parameters, although each is
# what we ask for: a read-only manager, and the data iterator left unread.
_EXPECTED_ORBAX_WARNINGS = (
    "read_only=True",
    "Given directory is read only",
    'Item "data" was found in the checkpoint, but could not be restored',
)


class _DropExpected(py_logging.Filter):
    def filter(self, record: py_logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(expected in message for expected in _EXPECTED_ORBAX_WARNINGS)


@contextlib.contextmanager
def _expected_warnings_dropped():
    """Drops only the warnings above (orbax logs through absl's "absl" logger): the
    user reads them as breakage; any other orbax warning still comes through."""
    logger, quiet = py_logging.getLogger("absl"), _DropExpected()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def make_manager(workdir: str, *, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
    directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save
    )
    handlers = {
        "state": ocp.StandardCheckpointHandler(),
        "data": grain.checkpoint.CheckpointHandler(),
    }
    return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_iter: Any) -> None:
    args = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
        args["data"] = grain.checkpoint.CheckpointSave(data_iter)
    manager.save(step, args=ocp.args.Composite(**args))


def _key_name(key) -> str:
    # Dataclass fields (GetAttrKey.name) and dict keys (DictKey.key) must compare equal:
    # the saved metadata is a dict tree, the abstract state a TrainState.
    for attr in ("name", "key", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _shapes(tree) -> dict[str, tuple[int, ...]]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(map(_key_name, path)): tuple(leaf.shape) for path, leaf in flat}


def _check_compatible(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> None:
    """Compares parameter paths and shapes before restoring (orbax would partly restore)."""
    saved = manager.item_metadata(step)["state"]
    details = _mismatch_details(_shapes(saved), _shapes(abstract_state))
    if not details:
        return
    raise CheckpointMismatchError(
        f"checkpoint step {step} in {manager.directory} does not match the configured "
        f"model/optimiser ({details}); use a fresh --workdir or the config it was "
        "trained with"
    )


def _mismatch_details(saved_shapes: dict, wanted_shapes: dict) -> str:
    missing = sorted(set(wanted_shapes) - set(saved_shapes))
    extra = sorted(set(saved_shapes) - set(wanted_shapes))
    changed = sorted(
        k for k in set(saved_shapes) & set(wanted_shapes) if saved_shapes[k] != wanted_shapes[k]
    )
    details = []
    if missing:
        details.append(f"{len(missing)} entries missing from the checkpoint, e.g. {missing[0]}")
    if extra:
        details.append(f"{len(extra)} unexpected entries in the checkpoint, e.g. {extra[0]}")
    if changed:
        k = changed[0]
        details.append(
            f"{len(changed)} shape changes, e.g. {k}: saved {saved_shapes[k]} "
            f"vs configured {wanted_shapes[k]}"
        )
    return "; ".join(details)


def restore_params(workdir: str, abstract_params: Any, *, use_ema: bool = True) -> tuple[Any, int]:
    """(params, step) of the latest checkpoint in another run's workdir.

    Only the (EMA) parameters are taken, so that run may have used any optimiser
    settings; they are restored into the shardings of `abstract_params`, whose
    shapes must match (else CheckpointMismatchError).
    """
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no checkpoints folder in {workdir!r} to start from")
    with _expected_warnings_dropped():
        return _restore_params(directory, abstract_params, use_ema)


def restore_params_on_mesh(
    abstract_params: Any, workdir: str, mesh: jax.sharding.Mesh, *, use_ema: bool = True
) -> tuple[Any, int]:
    """(params, step) of the latest checkpoint in `workdir`, of the shapes of
    `abstract_params`, placed on `mesh`; nothing but the parameters is built or kept.
    (`cofre_jax.tasks.restore_model_params` gives a config's model's.)"""
    shardings = sharding.tree_shardings(abstract_params, mesh)
    abstract = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_params, shardings
    )
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory) or not os.listdir(directory):
        raise FileNotFoundError(
            f"no checkpoint in {directory}; train first (--mode=train) with the same --workdir"
        )
    with _expected_warnings_dropped():
        return _restore_params(directory, abstract, use_ema)


def _restore_params(directory: str, abstract_params: Any, use_ema: bool) -> tuple[Any, int]:
    manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(create=False, read_only=True),
        item_handlers={"state": ocp.StandardCheckpointHandler()},
    )
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"no complete checkpoint in {directory!r} to start from")
    saved = manager.item_metadata(step)["state"]
    key = "ema_params" if use_ema else "params"
    details = _mismatch_details(_shapes(saved[key]), _shapes(abstract_params))
    if details:
        raise CheckpointMismatchError(
            f"{key} of checkpoint step {step} in {directory} do not match the configured "
            f"model ({details})"
        )
    # The rest of the saved state is read onto one device and dropped.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = {
        name: jax.tree_util.tree_map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), subtree
        )
        for name, subtree in saved.items()
    }
    target[key] = abstract_params
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
    )
    return restored["state"][key], step


def restore(
    manager: ocp.CheckpointManager,
    abstract_state: Any,
    data_iter: Any = None,
    step: int | None = None,
) -> tuple[Any, int] | None:
    """Restores `step` (default: the latest readable one) into the shardings of
    `abstract_state`.

    Returns (state, step), or None when the workdir has no checkpoint. The data
    iterator, when given, is moved to the saved position in place. Without an explicit
    `step`, a checkpoint that cannot be read (truncated or corrupted files) is set aside
    as `<step>.corrupt` with a warning and the previous one is tried; a checkpoint that
    reads fine but does not fit the config is a CheckpointMismatchError, never skipped.
    """
    if step is not None:
        return _restore_step(manager, step, abstract_state, data_iter), step
    for candidate in sorted(manager.all_steps(), reverse=True):
        try:
            return _restore_step(manager, candidate, abstract_state, data_iter), candidate
        except CheckpointMismatchError:
            raise
        except Exception as e:  # noqa: BLE001 - any read failure means "unusable"
            _set_aside(manager, candidate, e)
    return None


def _restore_step(manager, step: int, abstract_state: Any, data_iter: Any) -> Any:
    _check_compatible(manager, step, abstract_state)
    args = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
        args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    return manager.restore(step, args=ocp.args.Composite(**args))["state"]


def _short_reason(error: Exception) -> str:
    """The gist of a read error: TensorStore's messages run to kilobytes of specs."""
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    first = re.split(r"\s*See full TensorStore details", first)[0]
    return first if len(first) <= 120 else first[:117] + "..."


def _set_aside(manager: ocp.CheckpointManager, step: int, error: Exception) -> None:
    path = os.path.join(str(manager.directory), str(step))
    print(
        f"warning: checkpoint step {step} in {manager.directory} cannot be read "
        f"({_short_reason(error)}); moving it to {step}.corrupt and trying the previous one",
        file=sys.stderr,
        flush=True,
    )
    if jax.process_index() == 0 and os.path.isdir(path):
        os.replace(path, f"{path}.corrupt")
    manager.reload()
