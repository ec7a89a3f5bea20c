"""Device mesh, logical axis rules, sharded placement, and multi-host start-up.

Parameters and activations carry T5X logical axis names; `rules` map them onto the mesh axes
('data', 'model'). The prompt's axes are replicated: it is tiny and every device needs it whole.
"""

import os
from typing import Any, Sequence

import jax
import numpy as np
from absl import logging
from flax import linen as nn
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

Rules = Sequence[tuple[str, str | None]]

# T5X's standard 1D model-parallel rules: weights split over 'model' along their wide axis.
DEFAULT_RULES: Rules = (
    ("batch", "data"),
    ("vocab", "model"),
    ("mlp", "model"),
    ("heads", "model"),
    ("joined_kv", "model"),
    ("kv", None),
    ("embed", None),
    ("length", None),
    ("relpos_buckets", None),
    ("prompt", None),
    ("prompt_embed", None),
    ("prompt_layers", None),  # deep prompts' [layers, p, d] (prompts/deep.py)
)


def make_mesh(num_partitions: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ('data', 'model') mesh over all devices, `num_partitions` of them per model replica."""
  devices = list(jax.devices() if devices is None else devices)
  if num_partitions < 1 or len(devices) % num_partitions:
    raise ValueError(f"NUM_PARTITIONS={num_partitions} must be a positive divisor of the "
                     f"{len(devices)} devices; set --gin.NUM_PARTITIONS to one of "
                     f"{[d for d in range(1, len(devices) + 1) if len(devices) % d == 0]}.")
  shape = (len(devices) // num_partitions, num_partitions)
  # Auto axes: Linen's logical constraints need them (Explicit axes reject them).
  return jax.make_mesh(shape, ("data", "model"), axis_types=(AxisType.Auto,) * 2,
                       devices=devices)


def data_parallel_size(mesh: Mesh) -> int:
  return mesh.shape["data"]


def logical_to_sharding(axes_tree: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES,
                        shapes: Any = None) -> Any:
  """A tree of logical axis tuples -> the same tree of NamedShardings on `mesh`.

  With `shapes` (the same tree, leaves with `.shape`), a dimension that its mesh axes do not
  divide is replicated instead, with a warning: e.g. the tiny model's 2 heads on 4-way model
  parallelism. Without it such a sharding fails when arrays are placed.
  """
  is_axes = lambda x: isinstance(x, tuple) and all(isinstance(a, (str, type(None))) for a in x)
  to_spec = lambda axes: nn.logical_to_mesh_axes(axes, rules)
  if shapes is None:
    return jax.tree.map(lambda axes: NamedSharding(mesh, to_spec(axes)), axes_tree,
                        is_leaf=is_axes)
  return jax.tree.map(
      lambda axes, x: NamedSharding(mesh, _divisible(to_spec(axes), x.shape, mesh, axes)),
      axes_tree, shapes, is_leaf=is_axes)


def _divisible(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh,
               axes: tuple) -> PartitionSpec:
  entries = list(spec) + [None] * (len(shape) - len(spec))
  for i, entry in enumerate(entries):
    names = (entry,) if isinstance(entry, str) else tuple(entry or ())
    ways = int(np.prod([mesh.shape[n] for n in names])) if names else 1
    if shape[i] % ways:
      logging.warning("Replicating logical axis %r (size %d): %d-way %s does not divide it.",
                      axes[i], shape[i], ways, names)
      entries[i] = None
  return PartitionSpec(*entries)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Examples split over 'data'; every model-parallel device of a replica sees the same rows."""
  return NamedSharding(mesh, PartitionSpec("data"))


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's slice of the batch into global arrays sharded over 'data'."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  data = data_parallel_size(mesh)
  if batch_size % data or batch_size % jax.process_count():
    raise ValueError(f"BATCH_SIZE={batch_size} must be divisible by the data-parallel size "
                     f"{data} (devices / NUM_PARTITIONS) and by the {jax.process_count()} "
                     "processes; choose a multiple of both.")


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None,
                           cpu_collectives: str | None = None) -> None:
  """Starts JAX's multi-host runtime when this is one of several processes.

  TPU pods and GPU clusters (SLURM, Open MPI) describe themselves; elsewhere pass the
  coordinator's address and this process's place explicitly. On one host this does nothing.
  """
  explicit = coordinator_address is not None
  if not (explicit or _looks_multi_host()):
    return
  if cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  logging.info("Initialising multi-host JAX (coordinator=%s, processes=%s, id=%s).",
               coordinator_address, num_processes, process_id)
  jax.distributed.initialize(coordinator_address, num_processes, process_id)


def _looks_multi_host() -> bool:
  env = os.environ
  tpu_hosts = env.get("TPU_WORKER_HOSTNAMES", "")
  return ("," in tpu_hosts or int(env.get("SLURM_NTASKS", "1")) > 1
          or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
          or "JAX_COORDINATOR_ADDRESS" in env)


def standard_rules(overrides: Rules = ()) -> Rules:
  """DEFAULT_RULES with `overrides` ((logical, mesh axis or None) pairs) taking precedence."""
  overridden = {name for name, _ in overrides}
  return tuple(overrides) + tuple(r for r in DEFAULT_RULES if r[0] not in overridden)
