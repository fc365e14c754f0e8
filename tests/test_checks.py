"""Every public entry point of fglib refuses a value it cannot use, and says which argument.

One row per bad input: the call, the exception type, and a pattern the message must
contain (the argument's name). The last test makes sure every public callable of
`fglib/__init__.py` has at least one row, so a new entry point cannot slip through.
"""
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import fglib
from fglib.book.sweep import lr_sweep
from fglib.data import Split

X, Y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))


def tiny_data(dtype=torch.float32):
    split = Split(torch.randn(64, 1, 28, 28, dtype=dtype), torch.randint(0, 10, (64,)))
    return {"train": split, "validation": split, "test": split}


def logreg():
    return fglib.build_model("logreg", seed=0)


def fg(**kw):
    return fglib.ForwardGradientDescent(logreg(), F.cross_entropy, **{"lr": 1e-3, **kw})


def train(**kw):
    method = fglib.make_method("bp", logreg(), F.cross_entropy, 1e-3)
    return fglib.train(method, **{"data": tiny_data(), "iterations": 2, "progress": False, **kw})


def labelled(label):
    data = tiny_data()
    data["train"].y[5] = label
    return data


def hooked():
    model = logreg()
    model.register_forward_hook(lambda module, inputs, out: out)
    return model


def two_method_curves():
    return pd.DataFrame({"method": ["forward gradient", "backprop"], "run": [0, 0], "split": ["validation"] * 2,
                         "iteration": [0, 0], "loss": [2.3, 2.3]})


def params():
    return list(logreg().parameters())


CASES = [
    # directions and generators
    ("sample_direction kind", lambda: fglib.sample_direction(torch.zeros(3), "uniform"), ValueError, "kind"),
    ("sample_directions kind", lambda: fglib.sample_directions(params(), 3), TypeError, "kind"),
    ("make_generator seed float", lambda: fglib.make_generator(1.5), TypeError, "seed"),
    ("make_generator seed negative", lambda: fglib.make_generator(-1), ValueError, "seed"),
    ("make_generator device", lambda: fglib.make_generator(0, "gpu"), ValueError, "device"),
    ("expected_second_moment kind", lambda: fglib.stats.expected_second_moment(torch.ones(3), "uniform"), ValueError,
     "kind"),
    # activity perturbation and local losses
    ("BlockForwardGradient perturb", lambda: fglib.BlockForwardGradient(fglib.build_model("logreg"), F.cross_entropy,
                                                                        0.1, perturb="both"), ValueError, "perturb"),
    ("LocalBackprop plain network", lambda: fglib.LocalBackprop(fglib.build_model("logreg"), F.cross_entropy, 0.1),
     ValueError, "LocalNet"),
    ("LocalNet heads", lambda: fglib.LocalNet([torch.nn.Sequential()], []), ValueError, "one head per block"),
    # the estimator
    ("jvp theta integer", lambda: fglib.jvp(fglib.beale, torch.arange(2), torch.zeros(2)), TypeError,
     r"theta must be a floating-point tensor, got dtype torch.int64"),
    ("forward_gradient theta list", lambda: fglib.forward_gradient(fglib.beale, [1.0, 2.0]), TypeError,
     "theta must be a floating-point tensor"),
    ("jvp v shape", lambda: fglib.jvp(fglib.beale, torch.zeros(2), torch.zeros(3)), ValueError, "v must"),
    ("jvp v dtype", lambda: fglib.jvp(fglib.beale, torch.zeros(2), torch.zeros(2, dtype=torch.float64)),
     ValueError, "v has dtype"),
    ("forward_gradient kind", lambda: fglib.forward_gradient(fglib.beale, torch.zeros(2), kind="cauchy"),
     ValueError, "kind"),
    ("module_jvp short directions", lambda: fglib.module_jvp(logreg(), F.cross_entropy, X, Y, params()[:1]),
     ValueError, "directions has 1 tensors but there are 2"),
    ("module_jvp direction shape",
     lambda: fglib.module_jvp(logreg(), F.cross_entropy, X, Y, [torch.zeros(10, 784), torch.zeros(9)]),
     ValueError, r"directions\[1\] has shape \(9,\)"),
    ("module_jvp x dtype", lambda: fglib.module_jvp(logreg(), F.cross_entropy, X.double(), Y, params()),
     ValueError, "x has dtype"),
    ("module_forward_gradient kind",
     lambda: fglib.module_forward_gradient(logreg(), F.cross_entropy, X, Y, kind="uniform"), ValueError, "kind"),
    # models and test functions
    ("build_model name", lambda: fglib.build_model("resnet"), ValueError, "name must be one of"),
    ("build_model seed string", lambda: fglib.build_model("mlp", seed="0"), TypeError, "seed"),
    ("build_model seed 2**64", lambda: fglib.build_model("mlp", seed=2 ** 64), ValueError, "seed"),
    ("build_model dtype", lambda: fglib.build_model("mlp", dtype=torch.int64), TypeError, "dtype"),
    ("build_model depth zero", lambda: fglib.build_model("deep", depth=0), ValueError, "depth"),
    ("build_model depth float", lambda: fglib.build_model("deep", depth=2.5), TypeError, "depth"),
    ("get_function name", lambda: fglib.get_function("himmelblau"), ValueError, "name must be one of"),
    ("count_parameters model", lambda: fglib.count_parameters("mlp"), TypeError, "model"),
    # data
    ("load_data name", lambda: fglib.load_data("cifar"), ValueError, "name must be one of"),
    ("load_data limit zero", lambda: fglib.load_data("mnist", limit=0), ValueError, "limit"),
    ("load_data limit float", lambda: fglib.load_data("mnist", limit=10.5), TypeError, "limit"),
    ("load_data dtype", lambda: fglib.load_data("mnist", dtype="float32"), TypeError, "dtype"),
    ("BatchSampler batch_size too big", lambda: fglib.BatchSampler(tiny_data()["train"], 65), ValueError,
     "batch_size"),
    ("BatchSampler batch_size float", lambda: fglib.BatchSampler(tiny_data()["train"], 6.4), TypeError,
     "batch_size"),
    # methods
    ("ForwardGradientDescent lr string", lambda: fg(lr="0.1"), TypeError, "lr"),
    ("ForwardGradientDescent lr negative", lambda: fg(lr=-1.0), ValueError, "lr"),
    ("ForwardGradientDescent lr nan", lambda: fg(lr=math.nan), ValueError, "lr"),
    ("ForwardGradientDescent n_directions float", lambda: fg(n_directions=2.5), TypeError, "n_directions"),
    ("ForwardGradientDescent n_directions string", lambda: fg(n_directions="3"), TypeError, "n_directions"),
    ("ForwardGradientDescent n_directions zero", lambda: fg(n_directions=0), ValueError, "n_directions"),
    ("ForwardGradientDescent n_directions bool", lambda: fg(n_directions=True), TypeError, "n_directions"),
    ("ForwardGradientDescent n_directions huge", lambda: fg(n_directions=10 ** 9), ValueError,
     "n_directions must be ≤ 10,000.*forward-mode pass in every step"),
    ("ForwardGradientDescent seed 2**64", lambda: fg(seed=2 ** 64), ValueError, "seed must be an integer ≥ 0 and ≤"),
    ("ForwardGradientDescent direction", lambda: fg(direction="cauchy"), ValueError, "direction"),
    ("ForwardGradientDescent seed", lambda: fg(seed=0.5), TypeError, "seed"),
    ("ForwardGradientDescent decay", lambda: fg(decay=-1e-4), ValueError, "decay"),
    ("ForwardGradientDescent engine", lambda: fg(engine="jax"), ValueError, "engine must be one of"),
    ("ForwardGradientDescent regenerate", lambda: fg(regenerate="yes"), TypeError, "regenerate"),
    ("ForwardGradientDescent compile", lambda: fg(compile=1), TypeError, "compile"),
    ("ForwardGradientDescent batched", lambda: fg(batched=1), TypeError, "batched"),
    ("ForwardGradientDescent compile mode", lambda: fg(compile="fast"), ValueError, "compile must be one of"),
    ("module_jvp engine", lambda: fglib.module_jvp(logreg(), F.cross_entropy, X, Y, params(), engine="x"),
     ValueError, "engine"),
    ("jvp engine", lambda: fglib.jvp(fglib.beale, torch.zeros(2), torch.zeros(2), engine="jax"), ValueError,
     "engine"),
    ("ForwardGradientDescent optimizer", lambda: fg(optimizer="lbfgs"), ValueError, "optimizer"),
    ("Backprop lr", lambda: fglib.Backprop(logreg(), F.cross_entropy, lr=0), ValueError, "lr"),
    ("CheckpointedBackprop segments", lambda: fglib.CheckpointedBackprop(logreg(), F.cross_entropy, 0.1, segments=0),
     ValueError, "segments"),
    ("make_method name", lambda: fglib.make_method("sgd", logreg(), F.cross_entropy, 0.1), ValueError,
     "name must be one of"),
    ("learning_rate i", lambda: fglib.learning_rate(-1, 0.1), ValueError, "i must"),
    # zeroth order
    ("FiniteDifferenceDescent h", lambda: fglib.FiniteDifferenceDescent(logreg(), F.cross_entropy, 0.1, h=-1.0),
     ValueError, "h must be a positive"),
    ("InPlaceForwardGradient hooked model", lambda: fglib.InPlaceForwardGradient(hooked(), F.cross_entropy, 0.1),
     ValueError, "hook"),
    ("InPlaceForwardGradient n_directions", lambda: fglib.InPlaceForwardGradient(logreg(), F.cross_entropy, 0.1,
                                                                                 n_directions=0), ValueError, "n_directions"),
    ("InPlaceFiniteDifference hooked model", lambda: fglib.InPlaceFiniteDifference(hooked(), F.cross_entropy, 0.1),
     ValueError, r"forward hook.*make_method\('fd', \.\.\.\)"),
    ("InPlaceFiniteDifference scheme", lambda: fglib.InPlaceFiniteDifference(logreg(), F.cross_entropy, 0.1,
                                                                            scheme="left"), ValueError, "scheme"),
    ("finite_difference v", lambda: fglib.finite_difference(logreg(), F.cross_entropy, X, Y, [], 1e-3), ValueError,
     "one tensor per parameter"),
    ("peak_tensor_bytes fn", lambda: fglib.peak_tensor_bytes(3), TypeError, "fn must be"),
    ("learning_rate lr0", lambda: fglib.learning_rate(0, "0.1"), TypeError, "lr0"),
    # the loop
    ("train iterations negative", lambda: train(iterations=-5), ValueError, "iterations"),
    ("train iterations float", lambda: train(iterations=10.0), TypeError, "iterations"),
    ("train eval_every zero", lambda: train(eval_every=0), ValueError, "eval_every"),
    ("train batch_size", lambda: train(batch_size=0), ValueError, "batch_size"),
    ("train seed", lambda: train(seed=-2), ValueError, "seed"),
    ("train eval_examples", lambda: train(eval_examples=0), ValueError, "eval_examples"),
    ("train data dtype", lambda: train(data=tiny_data(torch.float64)), ValueError, "dtype"),
    ("train data type", lambda: train(data=[1, 2]), TypeError, "data must"),
    ("evaluate split a tuple", lambda: fglib.evaluate(logreg(), (X, Y)), TypeError,
     r"split must be a fglib.data.Split \(x, y\).*got tuple"),
    ("runtime_ratios methods a list", lambda: fglib.runtime_ratios(logreg(), ["fg"], F.cross_entropy, X, Y),
     TypeError, r"methods must be a dict \{name: method\}"),
    ("runtime_ratios a method missing", lambda: fglib.runtime_ratios(logreg(), {"fg": None}, F.cross_entropy, X, Y),
     TypeError, "methods must be"),
    ("train split a tuple", lambda: train(data={"train": (X, Y), "validation": (X, Y)}), TypeError,
     r"data\['train'\] must be a fglib.data.Split \(x, y\).*got tuple; wrap your tensors"),
    ("make_method model a function", lambda: fglib.make_method("fg", lambda x: x, F.cross_entropy, 0.1), TypeError,
     "model must be a torch.nn.Module, got function"),
    ("make_method loss a string", lambda: fglib.make_method("bp", logreg(), "cross_entropy", 0.1), TypeError,
     "loss_fn must be callable"),
    ("train method", lambda: fglib.train("fg", tiny_data()), TypeError, "method must"),
    ("train data None for a network", lambda: train(data=None), TypeError, "data is None.*pass data=fglib.load_data"),
    ("train labels outside the classes", lambda: train(data=labelled(12)), ValueError,
     r"data\['train'\]: labels must be class indices in \[0, 10\).*got 12"),
    ("train labels negative", lambda: train(data=labelled(-3)), ValueError, r"got -3"),
    ("evaluate batch_size", lambda: fglib.evaluate(logreg(), tiny_data()["test"], batch_size=0), ValueError,
     "batch_size"),
    # measures
    ("median_times repeats zero", lambda: fglib.median_times({"a": lambda: None}, "cpu", repeats=0), ValueError,
     "repeats"),
    ("median_times warmup float", lambda: fglib.median_times({"a": lambda: None}, "cpu", warmup=0.5), TypeError,
     "warmup"),
    ("median_times fns", lambda: fglib.median_times({}, "cpu"), TypeError, "fns"),
    ("runtime_ratios repeats", lambda: fglib.runtime_ratios(logreg(), {}, F.cross_entropy, X, Y, repeats=-1),
     ValueError, "repeats"),
    ("keep_freed_memory threshold", lambda: fglib.keep_freed_memory(threshold=-1), ValueError, "threshold"),
    ("peak_memory device", lambda: fglib.peak_memory(lambda: None, "gpu"), ValueError, "device"),
    ("saved_bytes fn", lambda: fglib.saved_bytes("step"), TypeError, "fn"),
    ("time_to_target columns", lambda: fglib.time_to_target(pd.DataFrame({"loss": [1.0]})), ValueError,
     "validation"),
    ("describe_ratio value", lambda: fglib.describe_ratio("fast"), TypeError, "value"),
    ("resolve_device", lambda: fglib.resolve_device("tpu"), ValueError, "device"),
    ("device_name", lambda: fglib.device_name(3), TypeError, "device"),
    # time to target
    ("eval_schedule iterations", lambda: fglib.eval_schedule(0), ValueError, "iterations"),
    ("eval_schedule points", lambda: fglib.eval_schedule(100, 2.5), TypeError, "points"),
    ("decompose curves", lambda: fglib.decompose(pd.DataFrame({"loss": [1.0]}), 1.0, 1.0), ValueError, "curves"),
    ("decompose method name", lambda: fglib.decompose(two_method_curves(), 1.0, 1.0, fg="forward gradients"),
     ValueError, r"fg='forward gradients' is not a method.*'backprop', 'forward gradient'"),
    ("decompose step_fg", lambda: fglib.decompose(pd.DataFrame({"method": [], "run": [], "split": [], "iteration": [],
                                                                "loss": []}), 0.0, 1.0), ValueError, "step_fg"),
    ("levelled_off curves", lambda: fglib.levelled_off(pd.DataFrame({"loss": [1.0]})), ValueError, "curves"),
    # experiments
    ("run_function runs zero", lambda: fglib.book.run_function("beale", 0.01, runs=0), ValueError, "runs"),
    ("run_function lr string", lambda: fglib.book.run_function("beale", "0.01"), TypeError, "lr"),
    ("run_function name", lambda: fglib.book.run_function("himmelblau", 0.01), ValueError, "name"),
    ("run_training iterations", lambda: fglib.book.run_training("logreg", tiny_data(), 1e-3, iterations=-5),
     ValueError, "iterations"),
    ("run_training runs zero", lambda: fglib.book.run_training("logreg", tiny_data(), 1e-3, runs=0), ValueError,
     "runs"),
    ("run_training model_name", lambda: fglib.book.run_training("resnet", tiny_data(), 1e-3), ValueError,
     "model_name"),
    ("run_training methods", lambda: fglib.book.run_training("logreg", tiny_data(), 1e-3, methods=("sgd",)),
     ValueError, "methods"),
    ("run_training methods string", lambda: fglib.book.run_training("logreg", tiny_data(), 1e-3, methods="fg"),
     TypeError, "methods"),
    ("measure_runtime runs", lambda: fglib.book.measure_runtime("logreg", tiny_data(), runs=0), ValueError, "runs"),
    ("measure_runtime batch_size", lambda: fglib.book.measure_runtime("logreg", tiny_data(), batch_size=2.5),
     TypeError, "batch_size"),
    ("lr_sweep rates", lambda: lr_sweep("logreg", tiny_data(), {"fg": []}), ValueError, r"rates\['fg'\]"),
    ("lr_sweep method", lambda: lr_sweep("logreg", tiny_data(), {"adam": [0.1]}), ValueError, "rates key"),
    ("RandomSubspace dim", lambda: fglib.RandomSubspace(fglib.build_model("logreg"), 0), ValueError, "dim"),
    ("RandomSubspace model", lambda: fglib.RandomSubspace("mlp", 10), TypeError, "model"),
    # reporting
    ("environment device", lambda: fglib.book.environment("gpu"), ValueError, "device"),
    ("glue name", lambda: fglib.book.glue(3, 1.0), TypeError, "name"),
    ("save_results name", lambda: fglib.book.save_results("", {}), ValueError, "name"),
    ("save_results results", lambda: fglib.book.save_results("x", [1, 2]), TypeError, "results"),
    ("load_results folder", lambda: fglib.book.load_results("/no/such/folder"), FileNotFoundError, "folder"),
]


@pytest.mark.parametrize("call,error,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_named(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_every_public_callable_has_a_row():
    covered = {c[0].split()[0] for c in CASES}
    public = {name for name in dir(fglib) if not name.startswith("_") and callable(getattr(fglib, name))
              and not isinstance(getattr(fglib, name), type(fglib)) and name.isidentifier()}
    exempt = {"PointModel", "ForwardGradient", "beale", "rosenbrock", "value_loss"}  # plain maths / data
    assert public - exempt <= covered, f"no bad-input row for {sorted(public - exempt - covered)}"


def test_nan_validation_loss_stops_the_run():
    """A model whose outputs are NaN on validation images: the run stops at iteration 0, saying so."""
    data = tiny_data()
    data["validation"] = Split(torch.full((64, 1, 28, 28), math.nan), data["validation"].y)
    method = fglib.make_method("bp", logreg(), F.cross_entropy, 1e-3)
    with pytest.raises(FloatingPointError, match="validation loss became nan at iteration 0"):
        fglib.train(method, data, iterations=2, progress=False)


def test_integral_numpy_values_are_accepted():
    import numpy as np
    method = fg(n_directions=np.int64(2), lr=np.float32(1e-3), seed=np.int64(1))
    assert method.n_directions == 2 and type(method.n_directions) is int
