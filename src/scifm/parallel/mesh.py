"""The device mesh of a layout, and this rank's place in it.

Every run builds the same 4-D mesh ("pp", "dp_replicate", "dp_shard", "tp"), with size-1
dimensions for the strategies it does not use, so each strategy takes its sub-mesh by name.
"""

from __future__ import annotations

from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from scifm.parallel.config import DP_DIMS, MESH_DIMS, Layout, ParallelConfig


def build_mesh(cfg: ParallelConfig, world_size: int, device_type: str) -> DeviceMesh:
    layout = cfg.layout(world_size)
    return init_device_mesh(device_type, layout.shape(), mesh_dim_names=MESH_DIMS)


def mesh_layout(mesh: DeviceMesh) -> Layout:
    return Layout(*(mesh[name].size() for name in MESH_DIMS))


def data_parallel_rank(mesh: DeviceMesh) -> tuple[int, int]:
    """(rank, size) of this process among the data-parallel ranks (replicate x shard).

    Ranks that differ only in their pipeline stage or tensor-parallel position share a data
    rank: they read the same samples.
    """
    replicate, shard = mesh[DP_DIMS[0]], mesh[DP_DIMS[1]]
    rank = replicate.get_local_rank() * shard.size() + shard.get_local_rank()
    return rank, replicate.size() * shard.size()
