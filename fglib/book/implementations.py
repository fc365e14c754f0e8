"""The implementations chapter's benchmark: every way of taking a forward-gradient step, and
backprop, timed against each other in one interleaved run (fglib.timing).

Each variant trains its own copy of the same initial model with a learning rate too small
to change the cost. Ratios are taken per round (a variant's time over the base runtime,
or over backprop's, measured in the same round), then summarised by their median and
interquartile range over the quiet rounds.
"""
import copy
import pathlib

import pandas as pd
import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from .. import checks
from ..device import synchronize
from ..measure import base_call, step_parts
from ..forward_grad import module_jvp
from ..registry import make_method
from ..models import MODELS, build_model
from ..timing import quiet, ratio_samples, timed_rounds
from .grading import MODEL_WORDS
from .report import note_read

LR = 1e-9


def fwdgrad_style(model, seed):
    """A step computed the way the public port orobix/fwdgrad computes it, written here as a
    baseline (not copied): torch.func.jvp over functional_call with a tuple of parameters, one
    randn per parameter, and an in-place update p -= lr d v per parameter."""
    names = [n for n, _ in model.named_parameters()]
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)

    def step(x, y):
        with torch.no_grad():
            params = tuple(p.detach() for p in model.parameters())
            tangents = tuple(torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype) for p in params)
            f = lambda *ps: F.cross_entropy(functional_call(model, dict(zip(names, ps)), (x,)), y)
            loss, d = torch.func.jvp(f, params, tangents)
            for p, v in zip(params, tangents):
                p.sub_(LR * d * v)
        return loss
    return step


def plain_backprop(model):
    """Backprop the way a PyTorch tutorial writes the loop, as a second reference: torch.optim.SGD
    with its defaults, zero_grad, backward, step (fglib's 'bp' differs in using foreach=True)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)

    def step(x, y):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()
    return step


PLAIN = "backprop, plain PyTorch loop"
VARIANTS = {
    # label: (method, keyword arguments); None: the fwdgrad-style baseline; PLAIN: plain_backprop
    "backprop": ("bp", {}),
    PLAIN: (PLAIN, {}),
    "FG, fglib engine": ("fg", {"engine": "fglib"}),
    "FG, fglib engine, Rademacher": ("fg", {"engine": "fglib", "direction": "rademacher"}),
    "FG, forward_ad": ("fg", {"engine": "forward_ad"}),
    "FG, torch.func.jvp": ("fg", {"engine": "func"}),
    "fwdgrad-style baseline": (None, {}),
    "backprop, compiled": ("bp", {"compile": True}),
    "FG, fglib engine, compiled": ("fg", {"engine": "fglib", "compile": True}),
    "FG, fglib engine, Rademacher, compiled": ("fg", {"engine": "fglib", "direction": "rademacher",
                                                      "compile": True}),
    # the in-place steps (fglib.lean), timed in rounds of their own (LEAN)
    "backprop, in place": ("bp_inplace", {}),
    "FG in place, Rademacher": ("fg_inplace", {"direction": "rademacher"}),
    # GPU only: compiled and recorded as CUDA graphs (torch.compile's "reduce-overhead")
    "backprop, CUDA graphs": ("bp", {"compile": "reduce-overhead"}),
    "FG, fglib engine, CUDA graphs": ("fg", {"engine": "fglib", "compile": "reduce-overhead"}),
    "FG, fglib engine, Rademacher, CUDA graphs": ("fg", {"engine": "fglib", "direction": "rademacher",
                                                         "compile": "reduce-overhead"}),
}
GPU_ONLY = "CUDA graphs"
LEAN = ("backprop", PLAIN, "backprop, in place", "FG, fglib engine, Rademacher", "FG in place, Rademacher")


LEVELS = ("", "compiled", GPU_ONLY)   # levels of optimisation, lowest first


def references_of(label):
    """The backprop steps a variant may be set against: backprop at its own level of
    optimisation or at any lower one (eager < compiled < CUDA graphs); eager backprop both as fglib
    takes it and as the plain PyTorch loop (PLAIN) does."""
    level = next((lv for lv in LEVELS[1:] if label.endswith(lv)), "")
    return ["backprop", PLAIN] + [f"backprop, {lv}" for lv in LEVELS[1:LEVELS.index(level) + 1]]


def reference_of(label, medians=None):
    """Fastest against fastest: of references_of(label) that were timed (`medians`: {label:
    median seconds}), the quickest, so that a compiled forward-gradient step is never set against
    a compiled backprop slower than eager backprop. Without medians, the one at the variant's level."""
    refs = references_of(label)
    if medians is None:
        return refs[-1]
    timed = [r for r in refs if r in medians]
    return min(timed, key=medians.get) if timed else None


def variants_for(device, compiled=True):
    """The variants worth timing on `device`: CUDA graphs only on a GPU, compiled ones if asked; the
    in-place steps and the plain PyTorch loop are timed in rounds of their own (LEAN)."""
    on_gpu = str(device).startswith("cuda")
    return [label for label in VARIANTS if (compiled or "compiled" not in label and GPU_ONLY not in label)
            and (on_gpu or GPU_ONLY not in label) and label != PLAIN and "in place" not in label]


def make_steps(model, x, y, labels, seed=0):
    """{label: no-argument step} for each variant, each on its own copy of `model`, plus 'base'."""
    steps = {"base": base_call(model, F.cross_entropy, x, y)}
    for label in labels:
        if label not in VARIANTS:
            raise ValueError(f"labels must be among {sorted(VARIANTS)}, got {label!r}")
        method, kwargs = VARIANTS[label]
        own = copy.deepcopy(model)
        if method is None or method == PLAIN:
            step = fwdgrad_style(own, seed) if method is None else plain_backprop(own)
            steps[label] = lambda step=step: step(x, y)
        else:
            m = make_method(method, own, F.cross_entropy, LR, seed=seed, **kwargs)
            steps[label] = lambda m=m: m.step(x, y)
    return steps


def batch(data, batch_size, seed=0):
    """A fixed mini-batch of `batch_size` training images (repeated beyond the training set)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(data["train"]), (batch_size,), generator=g).to(data["train"].y.device)
    return data["train"].x[idx], data["train"].y[idx]


def summarise(rounds, labels):
    """One row per variant: median ms, R (per-round time / base) and, for a forward-gradient
    variant, R / R_b against the fastest backprop at its level of optimisation or below
    (reference_of; the column 'against' names it), each as a median with its interquartile range."""
    calm = quiet(rounds)
    medians = calm.groupby("name")["seconds"].median().to_dict()
    rows = []
    for label in labels:
        r = ratio_samples(calm, label, "base")
        row = {"variant": label, "median (ms)": 1e3 * calm.loc[calm["name"] == label, "seconds"].median(),
               "R": r.median(), "R q25": r.quantile(0.25), "R q75": r.quantile(0.75)}
        ref = reference_of(label, {k: v for k, v in medians.items() if k in labels})
        if ref is not None and ref != label and not label.startswith("backprop"):
            q = ratio_samples(calm, label, ref)
            row.update({"R/R_b": q.median(), "R/R_b q25": q.quantile(0.25), "R/R_b q75": q.quantile(0.75),
                        "against": ref})
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs["quiet rounds"] = int(calm["round"].nunique())
    out.attrs["rounds"] = int(rounds["round"].nunique())
    return out


def compare_variants(model_name, data, batch_size=64, labels=tuple(VARIANTS), warmup=5, repeats=100,
                     seed=0, device="cpu"):
    """Time every variant in one interleaved run; returns (summary table, raw rounds)."""
    checks.choice("model_name", model_name, MODELS)
    batch_size, repeats = checks.count("batch_size", batch_size), checks.count("repeats", repeats)
    model = build_model(model_name, seed=seed, device=device)
    x, y = batch(data, batch_size, seed)
    steps = make_steps(model, x, y, list(labels), seed)
    rounds = timed_rounds(steps, device, warmup, repeats)
    return summarise(rounds, list(labels)), rounds


def summarise_groups(rounds, by=("model",)):
    """summarise() for each group of saved rounds (by model, and batch or run), each group's
    variants read from its rounds; with the group's columns and its quiet and total rounds."""
    out = []
    for key, rows in rounds.groupby(list(by), sort=False):
        labels = [v for v in rows["name"].unique() if v != "base"]
        s = summarise(rows, labels)
        out.append(s.assign(**dict(zip(by, key)), **{"quiet rounds": s.attrs["quiet rounds"],
                                                     "rounds": s.attrs["rounds"]}))
    return pd.concat(out, ignore_index=True)


def step_ratios(folder):
    """{'model / variant': R_f/R_b} from the saved rounds at batch 64 (fastest against fastest,
    summarise), derived now; {} before the comparison has been saved raw."""
    path = pathlib.Path(folder) / "raw" / "implementations" / "rounds.csv.gz"
    note_read([path])
    if not path.exists():
        return {}
    from .runs import read_csv
    rounds = read_csv(path)
    summary = summarise_groups(rounds[rounds["batch"] == 64])
    return {f"{m} / {v}": float(q) for m, v, q in zip(summary["model"], summary["variant"],
                                                      summary.get("R/R_b", pd.Series(float("nan"), summary.index)))}


# ---- where the time goes: the parts of a step, and drawing v ------------------------------------

def breakdown_rounds(model_name, data, batch_size=64, warmup=5, repeats=50, seed=0, device="cpu"):
    """Every interleaved timing round of each part of each method's step (measure.step_parts,
    fglib engine), raw: one row per (round, part), named 'method: part'."""
    model = build_model(model_name, seed=seed, device=device)
    x, y = batch(data, batch_size, seed)
    parts = step_parts(model, F.cross_entropy, x, y, seed=seed, engine="fglib")
    return timed_rounds({f"{method}: {part}": fn for (method, part), fn in parts.items()}, device, warmup, repeats)


def in_base_runtimes(rounds, base):
    """{name: median seconds / the median of `base`}, medians over the quiet rounds, names in the
    order they were timed."""
    med = quiet(rounds).groupby("name", sort=False)["seconds"].median()
    return (med / med[base]).to_dict()


def breakdown_table(rounds):
    """Each part of each step in base runtimes: one row per (model, method, part)."""
    rows = []
    for model, r in rounds.groupby("model", sort=False):
        for name, ratio in in_base_runtimes(r, "base: forward and loss, no derivatives").items():
            method, part = name.split(": ", 1)
            if method != "base":
                rows.append({"model": model, "method": method, "part": part, "base runtimes": ratio})
    return pd.DataFrame(rows)


def draw_rounds(model_name, data, batch_size=64, warmup=3, repeats=50, seed=0, device="cpu"):
    """Every interleaved timing round of the base runtime and of drawing one random number per
    parameter three ways (torch.randn; on the CPU also directions.parallel_normal; Rademacher),
    raw, with the model's parameter count."""
    from ..directions import flat_direction, make_generator, parallel_normal
    model = build_model(model_name, seed=seed, device=device)
    params = list(model.parameters())
    n, dtype = sum(p.numel() for p in params), params[0].dtype
    g = make_generator(seed, device)
    x, y = batch(data, batch_size, seed)
    fns = {"base": base_call(model, F.cross_entropy, x, y),
           "randn": lambda: flat_direction(n, "normal", dtype, device, g),
           "Rademacher": lambda: flat_direction(n, "rademacher", dtype, device, g)}
    if torch.device(device).type == "cpu":
        fns["parallel normal"] = lambda: parallel_normal(n, dtype, g)
    return timed_rounds(fns, device, warmup, repeats).assign(parameters=n)


def draw_table(rounds):
    """Drawing v in base runtimes: one row per model (NaN for a way not timed on its device)."""
    rows = []
    for model, r in rounds.groupby("model", sort=False):
        ratio = in_base_runtimes(r, "base")
        rows.append({"model": model, "parameters": int(r["parameters"].iloc[0]),
                     **{k: ratio.get(k, float("nan")) for k in ("randn", "parallel normal", "Rademacher")}})
    return pd.DataFrame(rows)


# ---- work done: FLOPs, and the floor of the same products run bare --------------------------

HEAVY = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
         torch.ops.aten.convolution.default, torch.ops.aten.convolution_backward.default}


class RecordProducts(TorchDispatchMode):
    """Records every matrix product and convolution a computation runs (operator and inputs)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in HEAVY:
            self.calls.append((func, [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args],
                               dict(kwargs or {})))
        return func(*args, **(kwargs or {}))


def flops(fn):
    """Floating-point operations of one call of fn (PyTorch's FLOP counter: products and convolutions)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def bare_products(fn):
    """A no-argument callable that runs the same products and convolutions as fn, and nothing else."""
    recorder = RecordProducts()
    with recorder:
        fn()
    calls = recorder.calls

    def run():
        with torch.no_grad():
            for func, args, kwargs in calls:
                func(*args, **kwargs)
    return run


def floor_rounds(model_name, data, batch_size=64, warmup=5, repeats=50, seed=0, device="cpu", kind="normal"):
    """For the fastest eager forward-gradient step (fglib engine) and eager backprop, raw:
    (rounds, work). rounds: every interleaved timing round of each step, of the same products
    and convolutions run bare, of its update, and of drawing v; work: each step's FLOPs."""
    from ..directions import make_generator, sample_directions
    model = build_model(model_name, seed=seed, device=device)
    x, y = batch(data, batch_size, seed)
    methods = {"forward gradient": make_method("fg", copy.deepcopy(model), F.cross_entropy, LR, seed=seed,
                                               engine="fglib", direction=kind),
               "backprop": make_method("bp", copy.deepcopy(model), F.cross_entropy, LR)}
    params = list(methods["forward gradient"].params)
    gen = make_generator(seed, device)
    for m in methods.values():
        m.step(x, y)  # creates .grad for the update alone
    fns = {}
    for name, m in methods.items():
        fns[name] = lambda m=m: m.step(x, y)
        fns[f"{name}: products"] = bare_products(lambda m=m: m.fill_grad(x, y))
        fns[f"{name}: update"] = m.optimizer.step
    fns["draw v"] = lambda: sample_directions(params, kind, gen)
    rounds = timed_rounds(fns, device, warmup, repeats)
    work = pd.DataFrame([{"method": name, "FLOP per step": flops(lambda m=m: m.fill_grad(x, y))}
                         for name, m in methods.items()])
    synchronize(device)
    return rounds, work


def floor_table(rounds, work):
    """One row per (model, method): FLOPs, the median step over the quiet rounds, its products
    alone, and the floor: the products run bare, plus the update, plus drawing v for a forward
    gradient; step / floor and GFLOP/s."""
    rows = []
    for model, r in rounds.groupby("model", sort=False):
        med = quiet(r).groupby("name")["seconds"].median()
        for name, flop in work.loc[work["model"] == model, ["method", "FLOP per step"]].itertuples(index=False):
            floor = med[f"{name}: products"] + med[f"{name}: update"] + (med["draw v"] if name == "forward gradient" else 0)
            rows.append({"model": model, "method": name, "GFLOP per step": flop / 1e9, "step (ms)": 1e3 * med[name],
                         "products alone (ms)": 1e3 * med[f"{name}: products"], "floor (ms)": 1e3 * floor,
                         "step / floor": med[name] / floor, "GFLOP/s": flop / 1e9 / med[name]})
    return pd.DataFrame(rows)


# ---- the chapter's targets -----------------------------------------------------------------------

def pick(summary, model, variant, col="R/R_b"):
    """One number of the summary table (NaN when that model or variant was not timed)."""
    row = summary[(summary["model"] == model) & (summary["variant"] == variant)]
    return float(row[col].iloc[0]) if len(row) else float("nan")


def status(value, limit, q25=float("nan"), q75=float("nan")):
    """'met', 'not met, by x%' or 'not measured' for value <= limit; with the rounds' interquartile
    range (q25, q75), 'within the noise' where that range holds the limit: the median alone
    would then call a side that half the rounds contradict."""
    if value != value:
        return "not measured"
    if q25 <= limit <= q75:
        return f"within the noise (IQR {q25:.3f}–{q75:.3f})"
    if value <= limit:
        return "met"
    above = f" (lower quartile {q25:.3f})" if q25 == q25 else ""   # the digits that show the range clears the limit
    return f"not met, by {100 * (value / limit - 1):.0f}%{above}"


def targets_table(summary, work, models, labels, device):
    """The targets the engine work set itself, each with our number and whether it was met."""
    rows = []

    def said(name):
        words = MODEL_WORDS.get(name, name)
        return words[:1].upper() + words[1:]
    for name in models:
        r = pick(summary, name, "FG, fglib engine", "median (ms)") / pick(summary, name, "fwdgrad-style baseline",
                                                                          "median (ms)")
        rows.append({"target": f"{said(name)}: fglib step / fwdgrad-style step < 1", "ours": r,
                     "status": status(r, 0.999)})
    for name, limit in (("mlp", 1.15), ("cnn", 1.0)):
        if name not in models:
            continue
        for variant in ("FG, fglib engine", "FG, fglib engine, Rademacher", "FG, fglib engine, compiled",
                        "FG, fglib engine, Rademacher, compiled"):
            if variant in labels:
                r = pick(summary, name, variant)
                q25, q75 = (pick(summary, name, variant, f"R/R_b {q}") for q in ("q25", "q75"))
                rows.append({"target": f"{said(name)}, {variant[4:]}: R_f/R_b ≤ {limit}", "ours": r,
                             "status": status(r, limit, q25, q75)})
    for name, ratio in zip(work["model"], work["step / floor"].where(work["method"] == "forward gradient")):
        if ratio == ratio:
            rows.append({"target": f"{said(name)}: forward-gradient step within 1.2× its floor", "ours": ratio,
                         "status": status(ratio, 1.2)})
    on_gpu = str(device).startswith("cuda")
    rows.append({"target": "GPU: R_f/R_b ≤ 0.555 / 0.592 / 0.649", "ours": float("nan"),
                 "status": "see the table above" if on_gpu else "untested on GPU"})
    return pd.DataFrame(rows)


# ---- the lean step's targets: memory from claim 6's table, time from the lean rounds ---------------

LEAN_FG, LEAN_FG_IN_PLACE = "FG, fglib engine, Rademacher", "FG in place, Rademacher"
LEAN_MEMORY = (("MLP", "forward gradient", "fg", 1.0), ("CNN", "forward gradient", "fg", 1.0),
               ("MLP", "forward gradient, in place", "fg_inplace", 0.55),
               ("CNN", "forward gradient, in place", "fg_inplace", 0.9))
LEAN_SPEED = 1.10   # fg's step with Rademacher directions, over the fastest eager backprop step


def lean_targets(rounds, memory):
    """The lean step's targets, each with our number and status():
    - step memory, weights included, over backprop's (`memory`: claim 6's table,
      fglib.book.runs.measure_network_memory, its 'total' column; 'not measured' without it);
    - fg_inplace's step time over fg's, and fg's over the fastest eager backprop (fglib's bp or
      the plain PyTorch loop, reference_of: attrs['against'] names it), per round of the lean rounds
      (`rounds`, raw), each with its interquartile range."""
    rows = []
    wide = (memory.pivot_table(index="network", columns="method", values="total", sort=False)
            if len(memory) else pd.DataFrame())
    for network, method, code, limit in LEAN_MEMORY:
        held = (wide.loc[network, method] / wide.loc[network, "backprop"]
                if network in wide.index and method in wide else float("nan"))
        rows.append({"target": f"{network}: {code}'s step memory ≤ {limit} × backprop's", "ours": float(held),
                     "status": status(held, limit)})
    calm = quiet(rounds)
    model = MODEL_WORDS.get(rounds["model"].iloc[0], rounds["model"].iloc[0]) if "model" in rounds else "MLP"
    q = ratio_samples(calm, LEAN_FG_IN_PLACE, LEAN_FG)
    rows.append({"target": f"{model}: fg_inplace's step time ≤ fg's", "ours": q.median(),
                 "status": status(q.median(), 1.0, q.quantile(0.25), q.quantile(0.75))})
    medians = calm.groupby("name")["seconds"].median().to_dict()
    ref = reference_of(LEAN_FG, medians)
    q = ratio_samples(calm, LEAN_FG, ref)
    rows.append({"target": f"{model}, Rademacher: fg's step time ≤ {LEAN_SPEED:.2f} × the faster backprop loop's",
                 "ours": q.median(), "status": status(q.median(), LEAN_SPEED, q.quantile(0.25), q.quantile(0.75))})
    out = pd.DataFrame(rows)
    out.attrs["against"] = ref
    return out


# ---- the model chapter's own step timing, run again: is its ratio the code, the process or the time? ----

def chapter_timing_again(plan, pairs=4, repeats=30, device="cpu"):
    """A model chapter's own step timing (fglib.book.runs.measure_steps, on the whole training set)
    run again now, in `pairs` pairs: once in a fresh Python process, as that chapter times it, and
    once in this process, alternating. Raw rounds with 'pair', 'where' ('fresh process' or 'this
    process') and 'process' (one number per run), for grading.step_ratio_spread."""
    import subprocess
    import sys
    import tempfile
    from ..data import load_data
    from .runs import measure_steps, plan_json, read_csv
    data = load_data("mnist", device=device)
    folder, out = pathlib.Path(tempfile.mkdtemp()), []
    for pair in range(checks.count("pairs", pairs)):
        path = folder / f"fresh-{pair}.csv"
        subprocess.run([sys.executable, "-c", "import sys; from fglib.book.implementations import _fresh_timing; "
                        "_fresh_timing(sys.argv[1:])", plan_json(plan), str(path),
                        str(repeats), str(device)], check=True)
        out.append(read_csv(path).assign(where="fresh process", pair=pair))
        out.append(measure_steps(plan, data, repeats=repeats, device=device).assign(where="this process", pair=pair))
    rounds = pd.concat(out, ignore_index=True)
    return rounds.assign(process=rounds.groupby(["pair", "where"], sort=False).ngroup())


def _fresh_timing(argv):
    """PLAN_JSON PATH REPEATS DEVICE: measure_steps in this (fresh) process, its rounds written to PATH."""
    from ..data import load_data
    from .runs import measure_steps, plan_from_json, write_csv
    data = load_data("mnist", device=argv[3])
    write_csv(measure_steps(plan_from_json(argv[0]), data, repeats=int(argv[2]), device=argv[3]), argv[1])


def timing_again_table(rounds):
    """Each run's S_f/S_b (the ratio of its median steps, as the model chapters take it) with its
    pair and where it ran."""
    from .grading import step_ratio_spread
    per = step_ratio_spread(rounds)["per process"]
    where = rounds.drop_duplicates("process").set_index("process")[["pair", "where"]]
    return per.join(where, on="process")[["pair", "where", "S_f/S_b", "sd within", "rounds"]]


# ---- which matrix products a computation runs (forward and reverse mode's toy function) ------------

PRODUCTS = HEAVY | {torch.ops.aten.mv.default, torch.ops.aten.addmv.default}


class CountProducts(TorchDispatchMode):
    """Counts the matrix products and convolutions a computation runs, and those whose matrix
    operand is all zeros (a zero tangent built whole and multiplied anyway)."""

    def __init__(self):
        super().__init__()
        self.products, self.with_zeros = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in PRODUCTS:
            matrices = [a for a in args if isinstance(a, torch.Tensor) and a.dim() >= 2]
            self.products += 1
            self.with_zeros += any(not bool(m.any()) for m in matrices)
        return func(*args, **(kwargs or {}))


def products(fn):
    """(products, products with an all-zero matrix) that one call of fn runs."""
    counter = CountProducts()
    with counter:
        fn()
    return counter.products, counter.with_zeros


def zero_products_table(models, data, seed=0, device="cpu"):
    """Per model, the matrix products and convolutions of one forward-mode pass (batch 64) with
    fglib's engine and with PyTorch's forward_ad, forward_ad's products by an all-zero matrix, and
    the FLOPs forward_ad runs beyond fglib's engine, relative to them."""
    rows = []
    for name in models:
        net = build_model(name, seed=seed, device=device)
        x, y = batch(data, 64, seed)
        v = [torch.randn_like(p) for p in net.parameters()]
        jvp = lambda engine: (lambda: module_jvp(net, F.cross_entropy, x, y, v, engine=engine))
        fwad, ours = products(jvp("forward_ad")), products(jvp("fglib"))
        rows.append({"model": name, "fglib engine": ours[0], "forward_ad": fwad[0], "by a zero tangent": fwad[1],
                     "ours by a zero tangent": ours[1],
                     "extra FLOPs": flops(jvp("forward_ad")) / flops(jvp("fglib")) - 1})
    return pd.DataFrame(rows)
