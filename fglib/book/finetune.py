"""The fine-tuning chapter's experiments: a network pre-trained with backprop on one task, then
fine-tuned on another (a new read-out layer) by each method, in three regimes, beside the same
training from scratch:

    from scratch a fresh network, every weight trains (the comparison the rest of the book makes)
    all layers   every weight trains
    last layer   only the new read-out layer trains; the rest is frozen
    subspace     every weight moves, but only along a random d-dimensional subspace
                 (fglib.RandomSubspace: theta = theta_0 + P z)

Each method is swept over its own rates (sweep.sweep_rates: the book's rule), and every run,
timing round and memory figure is saved raw; the chapter derives its tables from them.
"""
import copy
import pathlib

import torch
import torch.nn.functional as F
from torch import nn

from .. import checkpoint, checks
from ..measure import base_call, cost_rounds, held_tensors, peak_tensor_bytes, tensor_bytes
from ..models import build_model
from ..registry import make_method
from ..subspace import RandomSubspace
from ..to_target import eval_schedule
from ..train import evaluate, train
from .experiments import train_methods
from .sweep import add_runs, extend_sweep, rates_to_run, runs_to_add, sweep_rates

REGIMES = ("from scratch", "all layers", "last layer", "subspace")
# label: (make_method name, keyword arguments). K directions per step: averaged (the paper's
# estimator, unbiased) or projected on their span (Fluegel et al. 2025; shrunk by K/n).
METHODS = {
    "FG, normal": ("fg", {}),
    "FG, Rademacher": ("fg", {"direction": "rademacher"}),
    "FG, K = 4, mean": ("fg", {"n_directions": 4}),
    "FG, K = 4, projected": ("fg", {"n_directions": 4, "combine": "project"}),
    "FG, K = 16, mean": ("fg", {"n_directions": 16}),
    "FG, K = 16, projected": ("fg", {"n_directions": 16, "combine": "project"}),
    "MeZO": ("fd_inplace", {}),
    "backprop": ("bp", {}),
    "backprop, checkpointed": ("bp_ckpt", {}),
    "FG, in place": ("fg_inplace", {}),            # the memory-lean steps (fglib.lean): plain SGD,
    "backprop, in place": ("bp_inplace", {}),      # no whole gradient or direction held
}
# These perturb or cut an nn.Sequential layer by layer; a subspace model is one functional call.
SEQUENTIAL_ONLY = ("MeZO", "backprop, checkpointed", "FG, in place")


def methods_for(regime, methods=METHODS):
    """The methods that apply to a regime (no layer-by-layer method in a subspace)."""
    checks.choice("regime", regime, REGIMES)
    return {k: v for k, v in methods.items() if not (regime == "subspace" and k in SEQUENTIAL_ONLY)}


def pretrain(model_name, data, iterations, lr, seed=0, device="cpu", cache=None, progress=True):
    """The weights (a state_dict) of `model_name` trained by backprop on `data` for `iterations`
    steps at rate `lr` (the paper's decay), from `seed`, and its test accuracy. With `cache` (a
    folder, kept out of git), saved there and read back by the next call with the same settings."""
    path = None
    if cache is not None:
        path = pathlib.Path(cache) / f"pretrained-{model_name}-{iterations}-{lr:g}-seed{seed}.pt"
        if path.exists():
            saved = checkpoint.load(path, map_location=device)
            return saved["state"], saved["test accuracy"]
    model = build_model(model_name, seed=seed, device=device)
    method = make_method("bp", model, F.cross_entropy, lr, seed=seed)
    train(method, data, iterations, seed=seed, eval_at=[iterations], progress=progress, desc="pre-training")
    accuracy = evaluate(model, data["test"])[1]
    state = copy.deepcopy(model.state_dict())
    if path is not None:
        checkpoint.save(path, {"state": state, "test accuracy": accuracy})
    return state, accuracy


def read_out(model):
    """The model's last linear layer: the one a new task replaces."""
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError("the model has no linear layer to serve as its read-out")
    return linear[-1]


def fine_tune_model(model_name, state, regime, seed=0, dim=1000, device="cpu"):
    """The pre-trained network (`state`) made ready for a new task: a fresh read-out layer (its
    initial weights from `seed`), then frozen but for the read-out ('last layer'), or wrapped to
    move in a random `dim`-dimensional subspace ('subspace', P from `seed`). 'from scratch': a
    fresh network of that seed, `state` unused."""
    checks.choice("regime", regime, REGIMES)
    model = build_model(model_name, seed=seed, device=device)
    if regime == "from scratch":
        return model
    model.load_state_dict(state)
    head = read_out(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(checks.seed("seed", seed))
        head.reset_parameters()
    if regime == "last layer":
        for p in model.parameters():
            p.requires_grad_(False)
        for p in head.parameters():
            p.requires_grad_(True)
    if regime == "subspace":
        return RandomSubspace(model, dim, seed=seed)
    return model


def sweep(make_model, data, methods, rates, runs, iterations, eval_points, seed=0, eval_examples=None,
          progress=True):
    """Each method of `methods` ({label: (name, kwargs)}) over its `rates` ({label: [rates]}) by the
    sweep rule, `runs` runs each (run r: seed + r for the read-out, the batches and the draws);
    make_model(seed) builds a fresh model. Raw (curves, finals), labelled."""
    eval_at = eval_schedule(checks.count("iterations", iterations), checks.count("eval_points", eval_points))

    def train_at(label, lr):
        name, kwargs = methods[label]
        return train_methods(make_model, data, {label: (name, lr, kwargs)}, runs, iterations, seed=seed,
                             progress=progress, eval_examples=eval_examples, eval_at=eval_at)
    return sweep_rates(train_at, {label: rates[label] for label in methods})


def sweep_regimes(raw, make_models, data, methods, rates, runs, iterations, eval_points, seed=0,
                  eval_examples=None):
    """Every regime's sweep (make_models, methods and rates keyed by regime), running only what raw
    (a RawTables) lacks: the (method, rate) pairs not saved, and the runs missing where `runs` has
    grown since (sweep.runs_to_add). Saves after each regime, so that a stop loses one regime at
    most. Returns the whole sweep (curves, finals) with a `regime` column."""
    curves, finals = raw.kept("curves.csv.gz"), raw.kept("finals.csv")
    for regime in methods:
        mine = finals[finals.regime == regime] if not finals.empty else finals
        grid = {label: rates[regime][label] for label in methods[regime]}
        todo, more = rates_to_run(mine, grid), runs_to_add(mine, grid, runs)
        if not (todo or more):
            continue

        def sweep_of(label, label_rates, n=0):
            return sweep(make_models[regime], data, {label: methods[regime][label]}, {label: label_rates}, runs - n,
                         iterations, eval_points, seed + n, eval_examples)
        for c, f in [sweep_of(label, todo[label]) for label in todo] + [add_runs(sweep_of, more)]:
            if not f.empty:
                curves, finals = extend_sweep((curves, finals), (c.assign(regime=regime), f.assign(regime=regime)))
        raw.save("curves.csv.gz", curves)
        raw.save("finals.csv", finals)
    return curves, finals


def step_rounds(make_model, methods, x, y, seed=0, warmup=5, repeats=30, device="cpu"):
    """What a step of each method costs on a fresh model, raw: every interleaved timing round, and
    one row per method with the bytes of the weights (all of them, frozen ones too), of the
    gradients and of the optimiser's state held between steps, and the step's own peak (the
    tensors it creates). The total is memory in the paper's sense: the weights and everything
    alive at the step's peak (a held gradient the step frees stops counting when it is freed)."""
    model = make_model(seed)
    calls = {"inference": base_call(model, F.cross_entropy, x, y)}
    held, alive = {}, {}
    for label, (name, kwargs) in methods.items():
        m = make_method(name, make_model(seed), F.cross_entropy, 1e-9, seed=seed, **kwargs)
        m.step(x, y)   # buffers a first step creates are held from then on
        calls[label] = lambda m=m: m.step(x, y)
        alive[label] = peak_tensor_bytes(calls[label], held=lambda m=m: held_tensors(m.params, m.optimizer)) / 2 ** 20
        state = [v for s in m.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
        held[label] = {"weights (MiB)": tensor_bytes(list(m.model.parameters()) + list(m.model.buffers())) / 2 ** 20,
                       "gradients (MiB)": tensor_bytes([p.grad for p in m.params if p.grad is not None]) / 2 ** 20,
                       "optimiser state (MiB)": tensor_bytes(state) / 2 ** 20}
    held["inference"] = {"weights (MiB)": tensor_bytes(list(model.parameters()) + list(model.buffers())) / 2 ** 20,
                         "gradients (MiB)": 0.0, "optimiser state (MiB)": 0.0}
    rounds, memory = cost_rounds(calls, device, warmup, repeats)
    memory = memory.rename(columns={"peak memory (MiB)": "step peak (MiB)"})
    memory = memory.assign(**{k: memory["name"].map(lambda n, k=k: held[n][k]) for k in held["inference"]})
    alive["inference"] = memory.set_index("name").loc["inference", "step peak (MiB)"]
    memory["total (MiB)"] = memory["weights (MiB)"] + memory["name"].map(alive)
    return rounds, memory
