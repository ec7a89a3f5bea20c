"""Sharded loading on 8 host CPU devices (a subprocess, so XLA_FLAGS precedes importing jax)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import checkpoint_helpers as helpers
from checkpoint_helpers import hf_models  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[2]

_SCRIPT = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

    from prompt_tuning.checkpoints import base, huggingface, loading
    from prompt_tuning.checkpoints.base import LazyArray
    from prompt_tuning.t5 import config as t5_config, network

    assert jax.device_count() == 8
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    # Local rules for this test only (the partitioning module owns the real ones).
    RULES = {"vocab": "model", "mlp": "model", "joined_kv": "model", "heads": "model"}

    def sharding(axes, shape):
      names = [RULES.get(axis) for axis in axes]  # embed, relpos_buckets: replicated
      names = [n if n is None or dim % mesh.shape[n] == 0 else None  # 2 heads over 4: replicate
               for n, dim in zip(names, shape)]
      return NamedSharding(mesh, P(*names))

    def check(path, config):
      shapes = base.flatten(network.param_shapes(config))
      axes = base.flatten(network.param_axes(config))
      wanted = {k: sharding(axes[k], shapes[k].shape) for k in shapes}
      sharded = base.flatten(loading.load_params(path, config, shardings=base.unflatten(wanted)))
      plain = base.flatten(loading.load_params(path, config))
      assert sharded.keys() == plain.keys() == wanted.keys()
      split = 0
      for key, array in sharded.items():
        assert isinstance(array, jax.Array), key
        assert array.sharding == wanted[key], (key, array.sharding, wanted[key])
        np.testing.assert_array_equal(np.asarray(array), plain[key], err_msg=key)
        split += any(wanted[key].spec)
      assert split > len(sharded) // 2, split  # most leaves really are split
      return len(sharded)

    # Each device's slice is read alone, and a slice replicated over 'data' is read once.
    reads = []
    full = np.arange(32, dtype=np.float32).reshape(4, 8)
    def read(index):
      reads.append(full[index].shape)
      return full[index]
    array = loading._sharded(LazyArray((4, 8), read, "test"), NamedSharding(mesh, P(None, "model")))
    assert reads == [(4, 2)] * 4, reads
    np.testing.assert_array_equal(np.asarray(array), full)

    hf_dir, t5x_dir = sys.argv[1], sys.argv[2]
    print("hf", check(hf_dir, huggingface.config_from_hf(hf_dir)))
    if t5x_dir:
      print("t5x", check(t5x_dir, t5_config.get_config("t5_1_1_tiny")))
""")


def test_sharded_load_matches_unsharded(hf_models, tmp_path):
  hf_dir, _ = hf_models["sharded"]  # vocab 128, 4 heads of 8, MLP 64: all split 4 ways
  t5x_dir = str(helpers.T5X_TINY) if helpers.T5X_TINY.is_dir() else ""
  script = tmp_path / "sharded_load.py"
  script.write_text(_SCRIPT)
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
  result = subprocess.run([sys.executable, str(script), str(hf_dir), t5x_dir], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stdout + result.stderr
  assert "hf 52" in result.stdout
  if t5x_dir:
    assert "t5x 52" in result.stdout
