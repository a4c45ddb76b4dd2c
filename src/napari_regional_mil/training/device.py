"""Where the first model runs: the CPU (default), a CUDA GPU when asked and present, or Apple's MPS.

On CUDA the forward passes run under autocast (bfloat16 where the GPU supports it, else
float16 with a gradient scaler); the weights stay float32 and a trained model is moved
back to the CPU before it is returned or saved, so checkpoints do not depend on the
device. Runs on the CPU are bitwise reproducible for the same seed; GPU runs are not
(atomic additions in ``index_add`` reorder sums).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace

import torch

from ..errors import TrainingError
from ..model.first_model import Bag

__all__ = ["DEVICES", "autocast", "bag_to", "grad_scaler", "resolve_device"]

#: What ``--device`` accepts (``cuda:N`` picks one of several GPUs).
DEVICES = ("cpu", "cuda", "cuda:N", "mps")


def resolve_device(name: str | torch.device | None) -> torch.device:
    """The torch device for ``--device NAME``.

    Parameters
    ----------
    name
        ``"cpu"`` (or ``None``), ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Raises
    ------
    TrainingError
        An unknown name, or a device this machine does not have (one line saying why).
    """
    if name is None:
        return torch.device("cpu")
    text = str(name).strip().lower()
    try:
        device = torch.device(text)
    except RuntimeError:
        raise TrainingError(f"--device {name!r}: unknown device; choose one of {', '.join(DEVICES)}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise TrainingError(f"--device {text}: CUDA is not available ({built}); use --device cpu")
        index = 0 if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise TrainingError(f"--device {text}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
        return torch.device("cuda", index)
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise TrainingError(f"--device {text}: Apple MPS is not available on this machine; use --device cpu")
        return device
    raise TrainingError(f"--device {name!r}: unknown device; choose one of {', '.join(DEVICES)}")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype on ``device`` (``None``: no autocast, full float32)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    """Mixed precision for forward passes on CUDA; nothing elsewhere."""
    dtype = autocast_dtype(device)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for float16 autocast (bfloat16 needs none)."""
    return torch.amp.GradScaler("cuda", enabled=autocast_dtype(device) == torch.float16)


def bag_to(bag: Bag, device: torch.device) -> Bag:
    """The bag with every tensor on ``device`` (the same object on the CPU)."""
    if device.type == "cpu":
        return bag

    def move(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device, non_blocking=True)

    return replace(
        bag,
        features=bag.features.to(device, non_blocking=True),
        region_index=move(bag.region_index),
        regional=move(bag.regional),
        neighbours=move(bag.neighbours),
        context={k: v.to(device, non_blocking=True) for k, v in bag.context.items()},
        clinical=move(bag.clinical),
    )
