"""fglib: forward gradients (Baydin et al. 2022) in PyTorch, with backprop beside them.

The method, one idea per module:

    directions     the laws of the random direction v
    forward_grad   d = grad f . v and g = d v in one forward pass
    methods        forward gradient descent and backprop behind one interface (any torch.optim)
    registry       every method by name, with its label and class; make_method
    layerwise      a forward-mode pass a layer at a time, each layer's part of v drawn as it runs
    lean           forward gradients and backprop in place, no whole v or gradient held (fg_inplace, bp_inplace)
    models, functions, data   the paper's networks, test functions and MNIST
    train          the training loop and evaluation
    checkpoint     a run's saved state: atomic, hashed, loaded without running code, one process
    engine         fglib's own forward-mode engine: a value and tangent rule per layer
    substitute     calling a module with other values for its parameters
    measure        the paper's runtime measures, memory, time to target
    to_target      time to a target loss decomposed, T = I x S, and when a run can be judged
    timing         fair timing: warm-up, sync, rotating interleaved rounds, machine load
    stats          the estimator's mean, variance and cosine
    zeroth_order   finite differences along v (SPSA, MeZO) beside the exact forward gradient
    local          activity-perturbed forward gradients and local losses (Ren et al. 2023)
    subspace       training in a random subspace of the weights, theta = theta_0 + P z
    distributed    data-parallel forward gradients on torch.distributed (run with torchrun)
    numerics       finite differences and the complex step against the exact derivative
    device         choosing, naming and synchronising the device
    checks         the argument checks every public function uses
    quiet          known third-party warnings, silenced once

The book's machinery (experiments, sweep, runs, grading, verdict, tables, plots, reports) is
the subpackage `fglib.book` (import fglib.book), built on the method and never imported by it.
Everything the method offers is importable from `fglib` itself.
"""
from . import quiet

quiet.silence_known_noise()

from .directions import DIRECTIONS, make_generator, sample_direction, sample_directions
from .forward_grad import ForwardGradient, forward_gradient, jvp, module_forward_gradient, module_jvp
from .functions import FUNCTIONS, PointModel, beale, get_function, rosenbrock, value_loss
from .models import MODELS, LocalNet, build_model, count_parameters
from .data import BatchSampler, load_data
from .methods import Backprop, CheckpointedBackprop, ForwardGradientDescent, learning_rate, PAPER_DECAY
from .registry import METHODS, make_method
from .train import evaluate, train
from .zeroth_order import FiniteDifferenceDescent, InPlaceFiniteDifference, finite_difference
from .lean import InPlaceForwardGradient
from .local import BlockForwardGradient, LocalBackprop
from .subspace import RandomSubspace
from .measure import describe_ratio, peak_memory, peak_tensor_bytes, runtime_ratios, saved_bytes, time_to_target
from .timing import keep_freed_memory, median_times
from .device import device_name, resolve_device
from .to_target import decompose, eval_schedule, levelled_off
from . import checkpoint, checks, distributed, engine, lean, local, measure, numerics, registry, stats, subspace, timing, to_target, zeroth_order

__version__ = "0.1.0"
