"""Mesh shape checks and the logical-axis rules' placement of T5 parameters on 8 devices."""

import pytest

from subprocess_helpers import run_python
from prompt_tuning import partitioning


def test_num_partitions_must_divide_the_devices():
  with pytest.raises(ValueError, match="NUM_PARTITIONS=3 must be a positive divisor"):
    partitioning.make_mesh(3, devices=[object()] * 8)


def test_overrides_take_precedence_over_default_rules():
  rules = dict(partitioning.standard_rules((("embed", "model"),)))
  assert rules["embed"] == "model"
  assert rules["prompt"] is None and rules["batch"] == "data"


def test_rules_place_t5_parameters_on_an_8_device_mesh():
  out = run_python("""
      import jax
      from jax.sharding import PartitionSpec as P
      from prompt_tuning import partitioning
      from prompt_tuning.t5 import config, network
      cfg = config.get_config('t5_1_1_tiny', emb_dim=8, num_heads=4, mlp_dim=16, vocab_size=64)
      mesh = partitioning.make_mesh(4)
      assert dict(mesh.shape) == {'data': 2, 'model': 4}, mesh.shape
      axes = network.param_axes(cfg)
      axes['prompt'] = {'prompt': ('prompt', 'prompt_embed')}
      s = partitioning.logical_to_sharding(axes, mesh)
      spec = lambda x: tuple(x.spec) + (None,) * (2 - len(x.spec))
      assert spec(s['token_embedder']['embedding']) == ('model', None)
      att = s['encoder']['layers_0']['attention']
      assert spec(att['query']['kernel']) == (None, 'model')
      assert spec(att['out']['kernel']) == ('model', None)
      assert spec(s['decoder']['layers_1']['mlp']['wo']['kernel']) == ('model', None)
      assert spec(s['decoder']['logits_dense']['kernel']) == (None, 'model')
      assert s['prompt']['prompt'].is_fully_replicated
      assert s['encoder']['encoder_norm']['scale'].is_fully_replicated
      params = jax.jit(lambda r: network.init_params(cfg, r),
                       out_shardings={k: v for k, v in s.items() if k != 'prompt'})(
                           jax.random.PRNGKey(0))
      q = params['encoder']['layers_0']['attention']['query']['kernel']
      assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.shape == (8, 2)
      print('OK')
  """)
  assert "OK" in out


def test_dimensions_the_mesh_does_not_divide_are_replicated():
  out = run_python("""
      import jax
      from prompt_tuning import partitioning
      from prompt_tuning.t5 import config, network
      cfg = config.get_config('t5_1_1_tiny')  # 2 heads on 4-way model parallelism
      mesh = partitioning.make_mesh(4)
      s = partitioning.logical_to_sharding(network.param_axes(cfg), mesh,
                                           shapes=network.param_shapes(cfg))
      assert s['encoder']['relpos_bias']['rel_embedding'].is_fully_replicated
      assert tuple(s['token_embedder']['embedding'].spec) == ('model', None)
      print('OK')
  """)
  assert "OK" in out
