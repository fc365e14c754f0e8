"""A chapter's papermill parameters, checked before any data is loaded.

Each chapter calls `check_parameters(name=value, ...)` in the cell right after its
parameters cell, so that a bad `-p` on papermill's command line fails at once with a
message naming the parameter, not at the bottom of a long traceback. Every parameter
name a chapter uses must have a rule here.
"""
from .. import checks
from ..registry import METHODS
from ..models import MODELS


def _count_or_counts_by_model(name, value):
    """An integer, or {model: integer} (the learning-rate sweep's iterations per model)."""
    if isinstance(value, dict):
        return {checks.choice(f"{name} key", k, MODELS): checks.count(f"{name}[{k!r}]", v)
                for k, v in value.items()}
    return checks.count(name, value)


def _rates_by_method(name, value):
    if not isinstance(value, dict) or not value:
        raise TypeError(f"{name} must be a dict {{'fg': [...], 'bp': [...]}}, got {value!r}")
    return {checks.choice(f"{name} key", k, METHODS): checks.rates(f"{name}[{k!r}]", v)
            for k, v in value.items()}


def _rates_by_model(name, value):
    """{model: {'fg': [...], 'bp': [...]}}: a model's own grid in the learning-rate sweep."""
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict {{model name: {{'fg': [...], 'bp': [...]}}}}, got {value!r}")
    return {checks.choice(f"{name} key", k, MODELS): _rates_by_method(f"{name}[{k!r}]", v) for k, v in value.items()}


def _targets(name, value):
    """{'loss': [levels], 'accuracy': [levels]}: the learning-rate sweep's fixed targets."""
    if not isinstance(value, dict) or not value or set(value) - {"loss", "accuracy"}:
        raise TypeError(f"{name} must be a dict with keys 'loss' and/or 'accuracy', each a list of levels, "
                        f"got {value!r}")
    for k, v in value.items():
        levels = checks.rates(f"{name}[{k!r}]", v)
        if k == "accuracy" and max(levels) > 1:
            raise ValueError(f"{name}['accuracy'] levels are fractions between 0 and 1, got {v!r}")
    return value


def _rate_by_model(name, value):
    """{model: learning rate}."""
    if not isinstance(value, dict) or not value:
        raise TypeError(f"{name} must be a dict {{model name: learning rate}}, got {value!r}")
    return {checks.choice(f"{name} key", k, MODELS): checks.rate(f"{name}[{k!r}]", v) for k, v in value.items()}


def _integers(name, value):
    """A non-empty list of integers (e.g. the exponents k of h = 10^k)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") or not list(value):
        raise TypeError(f"{name} must be a non-empty list of integers, got {value!r}")
    return [checks.integer(f"{name}[{i}]", k) for i, k in enumerate(value)]


def _models(name, value):
    if isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty list of model names, got {value!r}")
    return [checks.choice(f"{name}[{i}]", m, MODELS) for i, m in enumerate(value)]


def _settings(name, value):
    """{method: {optimizer: [rates]}}: the optimisers chapter's grids."""
    from .optimisers import check_settings
    return check_settings(name, value)


def _k_rates(name, value):
    """{K: [rates]}: the variance chapter's grid for each number of directions."""
    from .variance import check_k_rates
    return check_k_rates(name, value)


def _regime_methods(name, value):
    """{regime: [method labels]}: the fine-tuning chapter's methods in each regime."""
    from .finetune import METHODS, REGIMES
    if not isinstance(value, dict) or not value:
        raise TypeError(f"{name} must be a dict {{regime: [method labels]}}, got {value!r}")
    for regime, labels in value.items():
        checks.choice(f"{name} key", regime, REGIMES)
        if isinstance(labels, str) or not labels:
            raise TypeError(f"{name}[{regime!r}] must be a non-empty list of method labels, got {labels!r}")
        for i, label in enumerate(labels):
            checks.choice(f"{name}[{regime!r}][{i}]", label, METHODS)
    return value


def _regime_rates(name, value):
    """{regime: {method label: [rates]}}: the fine-tuning chapter's grids."""
    from .finetune import METHODS, REGIMES
    if not isinstance(value, dict) or not value:
        raise TypeError(f"{name} must be a dict {{regime: {{method label: [rates]}}}}, got {value!r}")
    for regime, by_method in value.items():
        checks.choice(f"{name} key", regime, REGIMES)
        if not isinstance(by_method, dict) or not by_method:
            raise TypeError(f"{name}[{regime!r}] must be a dict {{method label: [rates]}}, got {by_method!r}")
        for label, rates in by_method.items():
            checks.choice(f"{name}[{regime!r}] key", label, METHODS)
            checks.rates(f"{name}[{regime!r}][{label!r}]", rates)
    return value


def _fraction(name, value):
    value = checks.real(name, value, positive=True)
    if value > 1:
        raise ValueError(f"{name} is a fraction between 0 and 1 (e.g. 0.7 for 70%), got {value!r}")
    return value


def _folder(name, value):
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a folder name, got {value!r}")
    return value


COUNTS = ("runs", "eval_every", "timing_repeats", "repeats", "mc_repeats", "n_steps", "n_figure_samples",
          "variance_samples", "broken_samples", "z_samples", "memory_depth", "beale_iterations",
          "rosenbrock_iterations", "batch_repeats", "eval_points", "n_directions", "quant_iterations",
          "batch_size", "limit", "n_samples", "trained_steps", "k_budget", "k_runs", "k_eval_points",
          "long_iterations", "pretrain_iterations", "subspace_dim", "again_pairs", "again_repeats")
RULES = {
    "smoke": checks.boolean, "compile_variants": checks.boolean, "remeasure": checks.boolean, "seed": checks.seed, "device": checks.device,
    "lr": checks.rate, "beale_lr": checks.rate, "rosenbrock_lr": checks.rate,
    "learning_rates": checks.rates, "rates": _rates_by_method, "model_rates": _rates_by_model,
    "model_runs": _count_or_counts_by_model,
    "iterations": _count_or_counts_by_model, "eval_examples": checks.optional_count,
    "sizes": checks.counts, "depths": checks.counts, "batch_sizes": checks.counts,
    "k_values": checks.counts, "dims": checks.counts,
    "model_name": lambda name, value: checks.choice(name, value, MODELS), "models": _models,
    "results_dir": _folder, "targets": _targets,
    "train_models": _models, "fg_lr": _rate_by_model, "bp_lr": _rate_by_model, "exponents": _integers,
    "target_loss": checks.rate, "quant_step": checks.rate, "quant_h": checks.rate, "worlds": checks.counts,
    "latency_us": checks.rate, "fg_rate": checks.rate, "bp_rate": checks.rate,
    "k_model": lambda name, value: checks.choice(name, value, MODELS),
    "optimizer_rates": _settings, "fashion_local_rates": checks.rates,
    "train_runs": lambda name, value: value if value is None else checks.integer(name, value, minimum=0),
    "k_rates": _k_rates, "pretrain_lr": checks.rate, "regime_methods": _regime_methods,
    "finetune_rates": _regime_rates, "target_accuracy": _fraction, "k_bp_rates": checks.rates, "k_target_loss": checks.rate,
    **{name: checks.count for name in COUNTS},
}


def check_parameters(**params):
    """Check every chapter parameter by its rule; an unknown name is itself an error."""
    for name, value in params.items():
        if name not in RULES:
            raise KeyError(f"no rule for chapter parameter {name!r}: add one to fglib/book/parameters.py")
        RULES[name](name, value)
