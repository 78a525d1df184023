"""`RayOptions`: where and how wide `--runner ray` runs.

A leaf module (it imports no runner): the CLI builds it for `RunOptions.ray` without importing the Ray
runner, which itself takes `RunOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlbcli.errors import UsageError


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray runner runs (`RunOptions.ray`)."""

    address: str | None = None  # a cluster ("ray://host:10001", "auto"); None: $RAY_ADDRESS or a local Ray
    gpus_per_worker: float | None = None  # None: 1 when the cluster has GPUs, else 0 (CPU actors)
    workers_per_node: int = 1  # model actors per node
    task_retries: int = 2  # Ray retries of a task whose worker died (on a restarted actor)
    quiet: bool = False  # `-q`: Ray's own warnings stay off the terminal too (errors still show)

    def __post_init__(self) -> None:
        if self.task_retries < 0:
            raise UsageError(f"task_retries must be >= 0, got {self.task_retries}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise UsageError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker}")
        if self.workers_per_node < 1:
            raise UsageError(f"--workers-per-node must be >= 1, got {self.workers_per_node}")
