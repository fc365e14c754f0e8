"""Known third-party noise, silenced once, here, so that no chapter page shows it.

Each filter names one exact message from one library, and why it is harmless:

- PyTorch's forward_ad scripts its own JVP decompositions with torch.jit.script the first
  time a dual tensor is made, and torch.jit.script warns that it is deprecated (a
  DeprecationWarning in torch 2.11, the GPU machine's; a FutureWarning in 2.14). fglib never
  calls torch.jit itself.
- torch.compile's C++ builder logs "No CUDA runtime is found" on a machine without a GPU,
  where that is expected.
"""
import logging
import warnings


def silence_known_noise():
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script(_method)?` is deprecated", category=category)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
