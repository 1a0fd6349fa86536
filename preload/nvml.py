"""What the NVIDIA driver says about this node's GPUs, behind a two-method reader.

:class:`LiveNvml` asks the driver through ``pynvml``; :class:`RecordedNvml` replays a JSON
recording, so topology tests run on machines without GPUs. Both give the same
:class:`GpuDevice` records. NVML numbers GPUs in PCI bus order, which is CUDA's order under
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (the nanny preload sets it for every worker).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "GpuDevice",
    "GpuNotFoundError",
    "LiveNvml",
    "MigDevice",
    "NvmlSource",
    "RecordedNvml",
    "ResolvedGpu",
    "normalize_pci_bus_id",
    "recording_of",
    "resolve_gpu",
]


@dataclass(frozen=True)
class MigDevice:
    """One MIG instance of a GPU (``MIG-<uuid>`` in ``CUDA_VISIBLE_DEVICES``)."""

    uuid: str
    name: str
    memory_bytes: int


@dataclass(frozen=True)
class GpuDevice:
    """One physical GPU; ``pci_bus_id`` is in sysfs form (``0000:1b:00.0``)."""

    index: int
    uuid: str
    name: str
    memory_bytes: int
    pci_bus_id: str
    mig_devices: tuple[MigDevice, ...] = ()


class NvmlSource(Protocol):
    """Where GPU records come from: the live driver or a recording."""

    def devices(self) -> tuple[GpuDevice, ...]:
        """All GPUs of the node, by NVML index; empty without a driver."""
        ...

    def describe(self) -> str:
        """One line for logs and the topology table: where the records came from."""
        ...


def normalize_pci_bus_id(bus_id: str) -> str:
    """NVML's ``00000000:1B:00.0`` in the form sysfs names devices: ``0000:1b:00.0``.

    >>> normalize_pci_bus_id("00000009:01:00.0")
    '0009:01:00.0'
    """
    domain, _, rest = bus_id.strip().lower().rpartition(":")
    domain, _, bus = domain.rpartition(":")
    if not domain or not bus or not rest:
        raise ValueError(f"cannot parse PCI bus id {bus_id!r} (expected DOMAIN:BUS:DEVICE.FN)")
    return f"{int(domain, 16):04x}:{bus}:{rest}"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class LiveNvml:
    """GPU records from the driver; no driver (a CPU node) gives no devices, not an error."""

    def __init__(self) -> None:
        self._devices: tuple[GpuDevice, ...] | None = None
        self.error: str | None = None

    def describe(self) -> str:
        """Say whether the driver answered."""
        self.devices()
        return "NVML (live)" if self.error is None else f"NVML unavailable: {self.error}"

    def devices(self) -> tuple[GpuDevice, ...]:
        """Query the driver once and keep the answer."""
        if self._devices is None:
            self._devices = self._query()
        return self._devices

    def _query(self) -> tuple[GpuDevice, ...]:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return ()
        try:
            return tuple(
                self._device(pynvml, index) for index in range(pynvml.nvmlDeviceGetCount())
            )
        finally:
            pynvml.nvmlShutdown()

    @staticmethod
    def _device(pynvml: Any, index: int) -> GpuDevice:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return GpuDevice(
            index=index,
            uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
            name=_text(pynvml.nvmlDeviceGetName(handle)),
            memory_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
            pci_bus_id=normalize_pci_bus_id(_text(pynvml.nvmlDeviceGetPciInfo(handle).busId)),
            mig_devices=LiveNvml._mig_devices(pynvml, handle),
        )

    @staticmethod
    def _mig_devices(pynvml: Any, handle: Any) -> tuple[MigDevice, ...]:
        try:
            current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
        except pynvml.NVMLError:
            return ()
        if current != pynvml.NVML_DEVICE_MIG_ENABLE:
            return ()
        found: list[MigDevice] = []
        for slot in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
            try:
                mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except pynvml.NVMLError:
                continue
            found.append(
                MigDevice(
                    uuid=_text(pynvml.nvmlDeviceGetUUID(mig)),
                    name=_text(pynvml.nvmlDeviceGetName(mig)),
                    memory_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(mig).total),
                )
            )
        return tuple(found)


class RecordedNvml:
    """GPU records replayed from a JSON recording (``{"gpus": [{"index": 0, ...}]}``).

    >>> RecordedNvml({"gpus": [{"index": 0, "uuid": "GPU-1", "name": "H100",
    ...     "memory_bytes": 1, "pci_bus_id": "00000000:1B:00.0"}]}).devices()[0].pci_bus_id
    '0000:1b:00.0'
    """

    def __init__(self, recording: Mapping[str, Any], *, origin: str = "recording") -> None:
        self._devices = tuple(
            GpuDevice(
                index=int(gpu["index"]),
                uuid=gpu["uuid"],
                name=gpu["name"],
                memory_bytes=int(gpu["memory_bytes"]),
                pci_bus_id=normalize_pci_bus_id(gpu["pci_bus_id"]),
                mig_devices=tuple(MigDevice(**mig) for mig in gpu.get("mig_devices", ())),
            )
            for gpu in recording["gpus"]
        )
        self._origin = origin

    @classmethod
    def from_file(cls, path: str | Path) -> RecordedNvml:
        """Read a recording written as JSON."""
        return cls(json.loads(Path(path).read_text()), origin=str(path))

    def devices(self) -> tuple[GpuDevice, ...]:
        """The recorded GPUs."""
        return self._devices

    def describe(self) -> str:
        """Name the recording."""
        return f"NVML recording {self._origin}"


class GpuNotFoundError(LookupError):
    """A ``CUDA_VISIBLE_DEVICES`` entry names no GPU that NVML knows."""


@dataclass(frozen=True)
class ResolvedGpu:
    """A ``CUDA_VISIBLE_DEVICES`` entry and the physical GPU (and MIG instance) it names."""

    gpu_id: str
    device: GpuDevice
    mig: MigDevice | None = None

    def as_record(self) -> dict[str, Any]:
        """Plain data for the worker's binding record (MIG instances report their own id)."""
        return {
            "id": self.gpu_id,
            "index": self.device.index,
            "uuid": self.mig.uuid if self.mig else self.device.uuid,
            "name": self.mig.name if self.mig else self.device.name,
            "memory_bytes": self.mig.memory_bytes if self.mig else self.device.memory_bytes,
            "pci_bus_id": self.device.pci_bus_id,
        }


def resolve_gpu(gpu_id: str, devices: Sequence[GpuDevice]) -> ResolvedGpu:
    """Find the GPU behind an index, ``GPU-<uuid>``, ``MIG-<uuid>`` or ``MIG-GPU-<uuid>/g/c``.

    >>> gpu = GpuDevice(index=0, uuid="GPU-a", name="H100", memory_bytes=1, pci_bus_id="x",
    ...                 mig_devices=(MigDevice(uuid="MIG-b", name="1g.10gb", memory_bytes=1),))
    >>> resolve_gpu("MIG-b", [gpu]).as_record()["name"]
    '1g.10gb'
    """
    gpu_id = gpu_id.strip()
    for device in devices:
        if gpu_id in (str(device.index), device.uuid):
            return ResolvedGpu(gpu_id, device)
        if gpu_id.startswith("MIG-GPU-") and gpu_id[4:].split("/")[0] == device.uuid:
            return ResolvedGpu(gpu_id, device)
        for mig in device.mig_devices:
            if gpu_id == mig.uuid:
                return ResolvedGpu(gpu_id, device, mig)
    known = ", ".join(f"{d.index}={d.uuid}" for d in devices) or "none (no NVML driver)"
    raise GpuNotFoundError(
        f"CUDA_VISIBLE_DEVICES entry {gpu_id!r} names no GPU of this node; NVML knows {known}. "
        "Use an index, GPU-<uuid> or MIG-<uuid> from `nvidia-smi -L`."
    )


def recording_of(devices: Sequence[GpuDevice]) -> dict[str, Any]:
    """The JSON recording :class:`RecordedNvml` reads back (``python -m preload.topology``)."""
    return {"gpus": [asdict(device) for device in devices]}
