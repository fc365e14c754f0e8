"""The local-losses chapter's experiments: six ways to train the same network (backprop,
FG-W and FG-A, each on the network's loss or on local losses), their estimators' error per
layer against backprop of the loss each targets, a learning-rate sweep per method, and what
a step costs."""
import copy

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..measure import base_call, cost_rounds
from ..registry import make_method
from ..models import LocalNet, build_model
from ..stats import estimator_errors
from ..registry import LABELS as METHOD_LABELS
from .sweep import lr_sweep

LABELS = {"bp": "backprop", "fg": "FG-W", "fg_a": "FG-A",
          "local_bp": "local backprop", "local_fg": "local FG-W", "local_fg_a": "local FG-A"}
LOCAL = ("local_bp", "local_fg", "local_fg_a")
REFERENCE = {"fg": "bp", "fg_a": "bp", "local_fg": "local_bp", "local_fg_a": "local_bp"}
PALETTE = {"backprop": "#DD8452", "FG-W": "#4C72B0", "FG-A": "#55A868",
           "local backprop": "#DA8BC3", "local FG-W": "#8172B3", "local FG-A": "#937860"}
RELABEL = {METHOD_LABELS[m]: LABELS[m] for m in LABELS}

# Quoted, not measured: Ren, Kornblith, Liao and Hinton (ICLR 2023), Table 3 (MNIST, supervised),
# test / train error in %, for two sizes of their LocalMixer (their Table 2: S/1/1 is one block
# of 256 channels in 1 group, 272K parameters; M/1/16 one block of 512 channels in 16 groups,
# each group with its own local loss, 429K parameters). Their names for our six methods.
REN_NAMES = {"backprop": "BP", "local backprop": "LG-BP", "FG-W": "FG-W", "FG-A": "FG-A",
             "local FG-W": "LG-FG-W", "local FG-A": "LG-FG-A"}
REN_MNIST = {  # method: {network: (test error, train error)}
    "BP": {"S/1/1": (2.66, 0.00), "M/1/16": (2.41, 0.00)},
    "LG-BP": {"S/1/1": (2.43, 0.00), "M/1/16": (2.81, 0.00)},
    "FG-W": {"S/1/1": (9.25, 8.93), "M/1/16": (8.56, 8.64)},
    "FG-A": {"S/1/1": (3.24, 1.53), "M/1/16": (3.76, 1.75)},
    "LG-FG-W": {"S/1/1": (9.25, 8.93), "M/1/16": (5.66, 4.59)},
    "LG-FG-A": {"S/1/1": (3.24, 1.53), "M/1/16": (2.55, 0.00)},
}


def model_for(method, base):
    """The network a method trains: the plain `base` ('mlp') or its LocalNet ('local_mlp')."""
    return f"local_{base}" if method in LOCAL else base


def layer_labels(model):
    """{parameter name: layer label}: 'layer k' for the k-th layer with weights of the
    network itself, 'head b' for block b's classifier head."""
    trunk = list(model.blocks) if isinstance(model, LocalNet) else [model]
    layers = [m for b in trunk for m in b.children() if any(True for _ in m.parameters(recurse=False))]
    name_of = {id(p): n for n, p in model.named_parameters()}
    labels = {name_of[id(p)]: f"layer {k}" for k, layer in enumerate(layers, 1) for p in layer.parameters()}
    labels.update({n: f"head {int(n.split('.')[1]) + 1}" for n in name_of.values() if n.startswith("heads.")})
    return labels


def error_draws(models, x, y, n_samples=50, seed=0):
    """models: {(point label, 'plain' or 'local'): model}. Raw: for each estimator, point, draw and
    layer, the relative error ||g - grad||^2 / ||grad||^2 over that layer's weights and bias, against
    backprop of the loss the estimator targets (the network's loss for FG-W and FG-A, the block's
    own loss for the local ones), and the cosine of the whole g. layer_errors summarises them."""
    rows = []
    for method, reference in REFERENCE.items():
        for (point, kind), model in models.items():
            if kind != ("local" if method in LOCAL else "plain"):
                continue
            model = copy.deepcopy(model)
            m = make_method(method, model, F.cross_entropy, 1.0, seed=seed)
            errors, exact = estimator_errors(m, make_method(reference, model, F.cross_entropy, 1.0), x, y, n_samples)
            labels = layer_labels(model)
            for layer in dict.fromkeys(labels.values()):
                names = [n for n, lab in labels.items() if lab == layer]
                norm2 = sum(float(exact[n].pow(2).sum()) for n in names)
                e = sum(errors[f"squared error, {n}"] for n in names) / norm2
                rows += [{"point": point, "method": LABELS[method], "layer": layer, "draw": k,
                          "relative error": float(v), "cosine (whole g)": float(c)}
                         for k, (v, c) in enumerate(zip(e, errors["cosine"]))]
    return pd.DataFrame(rows)


def layer_errors(draws):
    """error_draws' rows summarised per (point, method, layer): the mean relative error
    E||g - grad||^2 / ||grad||^2, its standard error, and the mean cosine of the whole g."""
    g = draws.groupby(["point", "method", "layer"], sort=False)
    return pd.DataFrame({"relative error": g["relative error"].mean(),
                         "± (se)": g["relative error"].std() / np.sqrt(g["relative error"].count()),
                         "cosine (whole g)": g["cosine (whole g)"].mean()}).reset_index()


def perturbed_counts(model, x):
    """Per layer with weights: its parameters and its outputs per example (the quantities
    FG-W and FG-A perturb), from one forward pass."""
    rows, labels = [], layer_labels(model)
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    outputs = {}
    hooks = [m.register_forward_hook(lambda mod, i, o: outputs.__setitem__(mod, o[0].numel())) for m in layers]
    with torch.no_grad():
        (model.local_logits if isinstance(model, LocalNet) else model)(x[:1])
    for h in hooks:
        h.remove()
    named = {id(p): n for n, p in model.named_parameters()}
    for m in layers:
        rows.append({"layer": labels[named[id(m.weight)]], "parameters": sum(p.numel() for p in m.parameters()),
                     "outputs per example": outputs[m]})
    return pd.DataFrame(rows)


def sweep(base, data, rates, runs, iterations, eval_points, seed=0, device="cpu", eval_examples=None):
    """lr_sweep of each method on its network (plain or local), to its first divergent rate;
    returns (curves, finals) with the chapter's method labels."""
    parts = [lr_sweep(model, data, {m: r for m, r in rates.items() if model_for(m, base) == model}, runs,
                      iterations, eval_points, seed, device, eval_examples=eval_examples)
             for model in dict.fromkeys(model_for(m, base) for m in rates)]
    curves = pd.concat([c for c, _ in parts], ignore_index=True)
    finals = pd.concat([f for _, f in parts], ignore_index=True)
    return curves.replace({"method": RELABEL}), finals.replace({"method": RELABEL})


def step_rounds(base, x, y, seed=0, warmup=5, repeats=30, device="cpu"):
    """What a step of each of the six methods and of inference costs, raw (fglib.measure.cost_rounds:
    every interleaved timing round, each call's peak tensor memory), each method on a fresh network
    of the same seed. grading.cost_table reads them."""
    calls = {"inference": base_call(build_model(base, seed=seed, device=device), F.cross_entropy, x, y)}
    for m in LABELS:
        method = make_method(m, build_model(model_for(m, base), seed=seed, device=device), F.cross_entropy, 1e-9,
                             seed=seed)
        calls[LABELS[m]] = lambda method=method: method.step(x, y)
    return cost_rounds(calls, device, warmup, repeats)


# The local-losses chapter as it last ran calls these three; its re-run on raw results reads
# error_draws, step_rounds and grading.ren_findings directly (issue 28).
def error_by_layer(models, x, y, n_samples=50, seed=0):
    """layer_errors(error_draws(...)): each estimator's error per layer and point."""
    return layer_errors(error_draws(models, x, y, n_samples, seed))


def step_costs(base, x, y, seed=0, warmup=5, repeats=30, device="cpu"):
    """grading.cost_table of step_rounds: median step time, S / S_backprop, peak tensor memory."""
    from .grading import cost_table
    return cost_table(*step_rounds(base, x, y, seed, warmup, repeats, device)).rename(
        columns={"peak memory (MiB)": "peak tensor memory (MiB)"})


def ren_findings(errors, table):
    """grading.ren_findings (the verdict words live in the grading module)."""
    from .grading import ren_findings as grade
    return grade(errors, table)


def beside_ren(table):
    """at_best_rates' table (our six methods) beside Ren et al.'s MNIST test errors (REN_MNIST,
    quoted): one row per method with their name for it, their test error on each LocalMixer
    (columns 'Ren et al., S/1/1' and 'Ren et al., M/1/16') and ours (mean ± sd), each in % with
    its gap to the same column's backprop in points, in brackets."""
    ours = table.set_index("method")
    base = ours.loc["backprop", "test error (%)"]
    rows = []
    for method, ren in REN_NAMES.items():
        row = {"method": method, "their name": ren}
        for net, (test, _) in REN_MNIST[ren].items():
            row[f"Ren et al., {net}"] = f"{test:.2f} ({test - REN_MNIST['BP'][net][0]:+.2f})"
        mean, sd = ours.loc[method, "test error (%)"], ours.loc[method, "± sd"]
        spread = f" ± {sd:.2f}" if sd == sd else ""
        row["ours"] = f"{mean:.2f}{spread} ({mean - base:+.2f})"
        rows.append(row)
    return pd.DataFrame(rows)
