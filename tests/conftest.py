"""Test session set-up: 8 simulated CPU devices, so sharded checks run anywhere.

The flag must be set before JAX initialises its backend, hence at import time.
Single-device tests are unaffected: un-annotated jit runs on device 0.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = f"{_flags} --xla_force_host_platform_device_count=8".strip()
