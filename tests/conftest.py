"""Test session set-up: 8 simulated CPU devices, so sharded checks run anywhere.

The flag must be set before JAX initialises its backend, hence at import time.
Single-device tests are unaffected: un-annotated jit runs on device 0.

torchvision (test extra, for pytorch-fid's Inception) is the release paired with torch
2.13, but its compiled ops do not load beside the CPU wheel, and its import then fails
while registering fake kernels for them (`torchvision._meta_registrations`). No test
uses those ops, and transformers imports torchvision whenever it is installed, so that
one module is replaced by an empty one for the whole session.
"""

import os
import sys
import types

_TORCHVISION_META = "torchvision._meta_registrations"
sys.modules.setdefault(_TORCHVISION_META, types.ModuleType(_TORCHVISION_META))

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = f"{_flags} --xla_force_host_platform_device_count=8".strip()
