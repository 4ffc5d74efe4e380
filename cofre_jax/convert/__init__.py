"""Importers of weights trained elsewhere (docs/method.md §2.6: public MDLM checkpoints)."""

from cofre_jax.convert.from_mdlm import (
    TORCH_SUFFIXES,
    abstract_params,
    convert_mdlm,
    load_teacher,
    teacher_model_config,
)
from cofre_jax.convert.layer_map import (
    LayerMapError,
    fp_params_from_mdlm,
    near_identity_injection,
    split_layer_map,
)
from cofre_jax.convert.torch_checkpoint import (
    TorchCheckpointError,
    check_mdlm_hyperparameters,
    load_mdlm_params,
    load_torch_state_dict,
    mdlm_hyperparameters,
    mdlm_parameter_names,
    mdlm_params_from_state_dict,
    select_state_dict,
)

__all__ = [
    "TORCH_SUFFIXES",
    "LayerMapError",
    "abstract_params",
    "convert_mdlm",
    "fp_params_from_mdlm",
    "load_teacher",
    "near_identity_injection",
    "split_layer_map",
    "teacher_model_config",
    "TorchCheckpointError",
    "check_mdlm_hyperparameters",
    "load_mdlm_params",
    "load_torch_state_dict",
    "mdlm_hyperparameters",
    "mdlm_parameter_names",
    "mdlm_params_from_state_dict",
    "select_state_dict",
]
