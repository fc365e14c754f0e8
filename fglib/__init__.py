"""fglib: forward gradients (Baydin et al. 2022) in PyTorch, with backprop beside them.

    forward_gradient, module_forward_gradient   g = (grad f . v) v in one forward pass
    ForwardGradientDescent, Backprop            two methods, one interface, any torch.optim
    build_model, FUNCTIONS, load_data           the paper's models, test functions, MNIST
    train, run_training, measure_runtime        the loop and the paper's measures
"""
from .directions import DIRECTIONS, make_generator, sample_direction, sample_directions
from .forward_grad import ForwardGradient, forward_gradient, jvp, module_forward_gradient, module_jvp
from .functions import FUNCTIONS, PointModel, beale, get_function, rosenbrock, value_loss
from .models import MODELS, build_model, count_parameters
from .data import BatchSampler, load_data
from .methods import Backprop, ForwardGradientDescent, learning_rate, make_method, PAPER_DECAY
from .train import evaluate, train
from .measure import (median_times, peak_memory, runtime_ratios, saved_bytes, time_to_target,
                      describe_ratio)
from .experiments import measure_runtime, run_function, run_training
from .report import device_name, environment, glue, load_results, resolve_device, save_results
from . import experiments, measure, paper, plots, report, stats, sweep, verdict

__version__ = "0.1.0"
