"""Which GPUs this node shows a process: ``CUDA_VISIBLE_DEVICES`` first, else NVML's count."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["nvml_device_count", "visible_gpu_ids"]


def nvml_device_count() -> int:
    """GPUs the NVIDIA driver reports; 0 where there is no driver (a CPU node)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return 0
    try:
        return int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()


def visible_gpu_ids(environ: Mapping[str, str], nvml_count: int) -> list[str]:
    """The GPU ids a process may use, as ``CUDA_VISIBLE_DEVICES`` spells them.

    An explicit (possibly narrowed) ``CUDA_VISIBLE_DEVICES`` wins; an empty one means no GPU.

    >>> visible_gpu_ids({"CUDA_VISIBLE_DEVICES": "2,3"}, nvml_count=8)
    ['2', '3']
    >>> visible_gpu_ids({}, nvml_count=2)
    ['0', '1']
    >>> visible_gpu_ids({"CUDA_VISIBLE_DEVICES": ""}, nvml_count=2)
    []
    """
    if "CUDA_VISIBLE_DEVICES" in environ:
        return [item.strip() for item in environ["CUDA_VISIBLE_DEVICES"].split(",") if item.strip()]
    return [str(index) for index in range(nvml_count)]
