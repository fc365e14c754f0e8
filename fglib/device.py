"""Which device a computation runs on, its name, and waiting for it (for honest clocks)."""
import platform

import torch

from . import checks


def resolve_device(device="auto"):
    """'auto' picks the GPU when there is one, else the CPU."""
    checks.device("device", device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return device


def device_name(device):
    """'NVIDIA H100 ...' for a GPU, 'CPU (x86_64, 2 threads)' for the CPU."""
    checks.device("device", device)
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    threads = torch.get_num_threads()
    return f"CPU ({platform.processor() or platform.machine()}, {threads} thread{'' if threads == 1 else 's'})"


def synchronize(device):
    """Wait until the device has finished its queued work (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
