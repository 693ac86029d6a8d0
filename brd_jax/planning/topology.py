"""Target machines for `brd plan`: chips, hosts, HBM, peak FLOP/s and bandwidth, and their devices
for ahead-of-time compilation on this CPU machine (TPU via libtpu, H100 via the CUDA plugin).

Peak bf16 FLOP/s and HBM bandwidth per chip are the vendors' published figures; the TPU names and
chip configs are the ones `jax.experimental.topologies` accepts (see shared/notes/aot-compile.md).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib

from brd_jax.errors import UserError

GiB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Topology:
  name: str
  platform: str           # tpu | cuda
  chips: int              # devices JAX sees (a v4 / v5p megacore chip is one device)
  chips_per_host: int
  hbm_bytes: int          # per device
  peak_flops: float       # bf16 dense, per device
  hbm_bandwidth: float    # bytes/s per device
  aot_name: str = ""      # get_topology_desc topology_name (TPU) or topology (GPU)
  chip_config: str = "default"
  hbm_note: str = ""      # how hbm_bytes was derived, when it is not the whole memory

  @property
  def hosts(self) -> int:
    return max(self.chips // self.chips_per_host, 1)

  @property
  def hbm_gib(self) -> float:
    return self.hbm_bytes / GiB


# (generation, chips -> TPU topology shape)
_V5E = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
       256: "4x8x8", 512: "8x8x8"}
# HBM per device is the figure the TPU compiler reports as available (a little under the spec).
_TPU = {  # prefix: (jax generation, cores per chip in the name, HBM, peak, bandwidth, config)
    "v5e": ("v5e", 1, int(15.75 * GiB), 197e12, 819e9, "default", _V5E),
    "v4": ("v4", 2, int(30.75 * GiB), 275e12, 1228e9, "megacore", _3D),
    "v5p": ("v5", 2, int(95.74 * GiB), 459e12, 2765e9, "megacore", _3D),
}
# H100 SXM: device_memory_size of h100_sxm.txtpb (what cudaMemGetInfo reports, 79.1 GiB).
_GPU = {"h100": (84_929_347_584, 989e12, 3.35e12)}
# JAX on GPU may use this fraction of device memory; launch/gpu.sh exports it so plans and runs agree
# (JAX's own default is 0.75).
GPU_MEM_FRACTION = 0.9


def gpu_mem_fraction() -> float:
  """The fraction of GPU memory a JAX process may use: the environment's, else launch/gpu.sh's."""
  for var in ("XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION"):
    if os.environ.get(var):
      try:
        frac = float(os.environ[var])
      except ValueError:
        raise UserError(f"{var}={os.environ[var]!r}: not a number") from None
      if not 0 < frac <= 1:
        raise UserError(f"{var}={frac:g}: must be in (0, 1]")
      return frac
  return GPU_MEM_FRACTION


def get(name: str) -> Topology:
  """'v5e-64', 'v4-32', 'v5p-8' (TPU names count cores: v4/v5p have 2 per chip) or 'h100x8'."""
  key = name.strip().lower()
  for prefix, (gen, cores, hbm, peak, bw, config, shapes) in _TPU.items():
    if key.startswith(prefix + "-"):
      try:
        n = int(key[len(prefix) + 1:]) // cores
      except ValueError:
        break
      if n not in shapes:
        raise UserError(f"--topology {name}: {prefix} slices here have "
                        f"{', '.join(str(c * cores) for c in shapes)} {'cores' if cores > 1 else 'chips'}")
      per_host = n if gen == "v5e" and n <= 8 else min(4, n)  # v5litepod-8 is one 8-chip VM
      return Topology(name, "tpu", n, per_host, hbm, peak, bw, f"{gen}:{shapes[n]}", config)
  for prefix, (hbm, peak, bw) in _GPU.items():
    if key.startswith(prefix + "x"):
      try:
        n = int(key[len(prefix) + 1:])
      except ValueError:
        break
      if n < 1:
        break
      frac = gpu_mem_fraction()
      return Topology(name, "cuda", n, min(n, 8), int(hbm * frac), peak, bw,
                      f"1x{max(n // 8, 1)}x{min(n, 8)}",
                      hbm_note=f"XLA_CLIENT_MEM_FRACTION={frac:g} of {hbm / GiB:.2f} GiB")
  raise UserError(f"--topology {name}: unknown (known: v5e-N, v4-N, v5p-N, h100xN)")


def host(topo: Topology) -> Topology:
  """One host of the slice, as a topology of its own (generation plans and compiles per host:
  the TPU compiler only assigns programs to whole slices)."""
  if topo.chips == topo.chips_per_host:
    return topo
  if topo.platform == "tpu":
    gen = topo.aot_name.split(":")[0]
    shapes = _V5E if gen == "v5e" else _3D
    return dataclasses.replace(topo, name=f"{topo.name} (one host)", chips=topo.chips_per_host,
                               aot_name=f"{gen}:{shapes[topo.chips_per_host]}")
  return dataclasses.replace(topo, name=f"{topo.name} (one host)", chips=topo.chips_per_host,
                             aot_name=f"1x1x{topo.chips_per_host}")


def _tpu_env() -> None:
  """libtpu on a machine without TPUs: skip the metadata server, name a worker (quiet stderr)."""
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-8")
  # compile-only: several planning processes (pytest -n, a user's shell) may load libtpu at once
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


def devices(topo: Topology) -> list:
  """Compile-only devices of the target (raises UserError when its compiler is not installed)."""
  from jax.experimental import topologies
  if topo.platform == "tpu":
    _tpu_env()
    try:
      desc = topologies.get_topology_desc(
          topology_name=topo.aot_name, platform="tpu", chip_config_name=topo.chip_config,
          chips_per_host_bounds=(2, 2, 1), num_slices=1)
    except Exception as e:  # pylint: disable=broad-except
      raise UserError(f"--aot for {topo.name} needs the TPU compiler: pip install "
                      f"'brd_jax[tpu]' ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return list(desc.devices)
  os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
  target = (pathlib.Path(__file__).parent / "h100_sxm.txtpb").read_text()
  try:
    desc = topologies.get_topology_desc(platform="cuda", target_config=target,
                                        topology=topo.aot_name)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"--aot for {topo.name} needs the CUDA compiler plugin: pip install "
                    f"'brd_jax[aot-gpu]' ({type(e).__name__}: "
                    f"{str(e).splitlines()[0][:200]})") from None
  return list(desc.devices)
