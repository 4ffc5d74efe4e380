"""Importers of weights trained elsewhere (DESIGN §2.6: public MDLM checkpoints)."""

from cofre_jax.convert.torch_checkpoint import (
    OpaqueObject,
    TorchCheckpointError,
    load_checkpoint,
    load_mdlm_params,
    load_torch_state_dict,
    mdlm_parameter_names,
    mdlm_params_from_state_dict,
    select_state_dict,
)

__all__ = [
    "OpaqueObject",
    "TorchCheckpointError",
    "load_checkpoint",
    "load_mdlm_params",
    "load_torch_state_dict",
    "mdlm_parameter_names",
    "mdlm_params_from_state_dict",
    "select_state_dict",
]
