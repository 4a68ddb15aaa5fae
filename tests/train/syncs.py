"""What would make a CUDA stream wait, counted on a machine without one.

`FakeCuda` is a dispatch mode over FakeTensorMode: tensors sent to `cuda` become fake
CUDA tensors (shapes and devices, no data, no driver), while tensors that only ever
meet CPU tensors stay real, so the CPU side of a step (seeded draws, choices read with
`bool`/`tolist`) runs as it does beside a GPU. Every op that would make the host wait
for the device is recorded in `waits`:

- a read of device data on the host (`.item()`, `bool()`, `nonzero`, `unique`, ...);
- a copy between host and device, except a non-blocking copy from pinned memory to the
  device (a copy from pageable memory first waits for the stream's queued work).

Pinning is emulated (no driver): `pin_memory()` returns a copy remembered as pinned.
"""

from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_leaves

aten = torch.ops.aten
HOST_READS = {
    aten._local_scalar_dense.default,
    aten.nonzero.default,
    aten.is_nonzero.default,
    aten.equal.default,
    aten.masked_select.default,
    aten._unique2.default,
    aten.unique_dim.default,
    aten.unique_consecutive.default,
    aten.repeat_interleave.Tensor,
}


def on_cuda(value: object) -> bool:
    return isinstance(value, FakeTensor) and value.device.type == "cuda"


class FakeCuda(TorchDispatchMode):
    """Fake CUDA tensors, with the ops that would wait for the device recorded (`waits`) and the copies that
    would not (`async_copies`)."""

    def __init__(self):
        super().__init__()
        self.fake = FakeTensorMode(allow_non_fake_inputs=True)
        self.pinned: list[torch.Tensor] = []  # kept alive, so no other tensor takes one's identity
        self.waits: list[str] = []
        self.async_copies = 0

    def __enter__(self):
        # cuDNN's kernels (grid_sample's, for one) have no fake implementation: torch's own run in their place.
        self.no_cudnn = torch.backends.cudnn.flags(enabled=False)
        self.no_cudnn.__enter__()
        self.fake.__enter__()  # with a fake mode active, torch does not initialise CUDA for `.to("cuda")`
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        self.fake.__exit__(*exc)
        return self.no_cudnn.__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten.is_pinned.default:
            return self._is_pinned(args[0])
        if func is aten._pin_memory.default:
            with _disable_current_modes():
                pinned = args[0].clone()
            self.pinned.append(pinned)
            return pinned
        tensors = [value for value in tree_leaves((args, kwargs)) if isinstance(value, torch.Tensor)]
        to_cuda = kwargs.get("device") is not None and torch.device(kwargs["device"]).type == "cuda"
        if not to_cuda and not any(isinstance(tensor, FakeTensor) for tensor in tensors):
            with _disable_current_modes():  # host-only work runs for real
                return func(*args, **kwargs)
        if func in HOST_READS and any(on_cuda(tensor) for tensor in tensors):
            self.waits.append(str(func))
            if func is aten._local_scalar_dense.default:
                return 0  # no data to read; go on, so every wait of the step is counted
        elif func in (aten._to_copy.default, aten.copy_.default):
            self._copy(func, args, kwargs)
        return func(*args, **kwargs)

    def _is_pinned(self, tensor: torch.Tensor) -> bool:
        return any(tensor is pinned for pinned in self.pinned)

    def _copy(self, func, args, kwargs) -> None:
        if func is aten._to_copy.default:
            source, target = args[0], torch.device(kwargs.get("device") or args[0].device)
            non_blocking = kwargs.get("non_blocking", False)
        else:
            target, source = args[0].device, args[1]
            non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
        if (source.device.type == "cuda") == (target.type == "cuda"):
            return
        if target.type == "cuda" and non_blocking and self._is_pinned(source):
            self.async_copies += 1
        else:
            self.waits.append(f"{func} {source.device} -> {target}")


class HostReads(TorchDispatchMode):
    """On a CPU run, the host reads of tensor data (`.item()`, `bool()`, ...) that on a GPU would wait for it,
    except of the tensors in `host_tensors()` (those a GPU run keeps on the host too)."""

    def __init__(self, host_tensors):
        super().__init__()
        self.host_tensors = host_tensors
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in HOST_READS and not any(args[0] is tensor for tensor in self.host_tensors()):
            self.reads.append(str(func))
        return func(*args, **kwargs)
