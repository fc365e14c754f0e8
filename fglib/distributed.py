"""Data-parallel forward gradients on torch.distributed (gloo on CPU, NCCL on GPU).

A forward gradient is a scalar times a random direction: workers that can re-create the
direction from a seed need to exchange only the scalar. Every worker runs the same loop on
the same global batch of B examples (same seed, same order) and computes on its own shard of
B / W of them.

    shared        every worker draws the same v from the step's seed, computes d_w on its
                  shard, and the workers all-reduce the K scalars d_w (and the loss): the mean
                  d = (1/W) sum_w d_w is d on the whole global batch (equal shards), so the
                  update is single-process forward gradient descent on the global batch.
                  Sent per worker and step: K + 1 numbers.
    independent   worker w uses its own direction v_w (seed w of the step's W seeds) and its
                  shard; the workers all-gather the W pairs (seed, d_w) and every worker
                  re-creates all W directions and applies g = (1/W) sum_w d_w v_w: K = W
                  directions per step, at the cost of W scalars and W draws of v per worker.
    backprop      DistributedDataParallel on the same model, batch and order: it all-reduces
                  the n-float gradient every step (and the loss, as the others do).

`Communicator` hands tensors to the collectives and counts their bytes, so the bytes a method
sends are measured, not assumed (for DDP through a communication hook on its buckets).
Every collective has the process group's timeout: a worker that fails or hangs makes the
others fail with an error that says so, instead of waiting forever.
"""
import datetime
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from . import checks
from .directions import ONE_AT_A_TIME
from .methods import Backprop, ForwardGradientDescent

MODES = ("shared", "independent")


def init(backend=None, timeout_s=60):
    """Join the process group that torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR/PORT in
    the environment): gloo on CPU, NCCL when CUDA is there. Returns (rank, world size)."""
    if "RANK" not in os.environ:
        raise RuntimeError("fglib.distributed.init() must run under torchrun (RANK and WORLD_SIZE are not set); "
                           "e.g. torchrun --nproc-per-node 2 -m fglib.distributed ...")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    timeout = datetime.timedelta(seconds=checks.real("timeout_s", timeout_s, positive=True))
    dist.init_process_group(backend, timeout=timeout)
    return dist.get_rank(), dist.get_world_size()


def collective_failed(what, err):
    """The one plain message for a collective that failed: which, on which rank, and the likely cause."""
    return RuntimeError(f"{what} failed on rank {dist.get_rank()}: another worker failed or hung past the "
                        f"process group's timeout ({err})")


class Communicator:
    """The collectives a method uses, with a count of the bytes each worker hands to them."""

    def __init__(self):
        self.bytes_sent, self.calls = 0, 0

    def _count(self, tensor):
        self.bytes_sent += tensor.numel() * tensor.element_size()
        self.calls += 1

    def all_reduce_mean(self, tensor):
        self._count(tensor)
        try:
            dist.all_reduce(tensor)
        except RuntimeError as err:
            raise collective_failed("all-reduce", err) from err
        return tensor.div_(dist.get_world_size())

    def all_gather(self, tensor):
        self._count(tensor)
        out = torch.empty(dist.get_world_size() * tensor.numel(), dtype=tensor.dtype, device=tensor.device)
        try:
            _all_gather_single(out, tensor)
        except RuntimeError as err:
            raise collective_failed("all-gather", err) from err
        return out.view(dist.get_world_size(), *tensor.shape)


# torch 2.14 renamed all_gather_into_tensor (still there, deprecated); torch 2.11 has only the old name.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def shard(x, y, rank, world):
    """This worker's contiguous share of a global batch (its size must divide by the world)."""
    if x.shape[0] % world:
        raise ValueError(f"the global batch ({x.shape[0]}) must divide by the number of workers ({world})")
    size = x.shape[0] // world
    return x[rank * size:(rank + 1) * size], y[rank * size:(rank + 1) * size]


class DistributedForwardGradient(ForwardGradientDescent):
    """Forward gradient descent, data parallel: `step(x, y)` takes the global batch."""
    name = "forward gradient, distributed"

    def __init__(self, model, loss_fn, lr, mode="shared", communicator=None, **kwargs):
        super().__init__(model, loss_fn, lr, **kwargs)
        checks.choice("direction", self.direction, ONE_AT_A_TIME)
        if self.combine != "mean" or self.batched:   # fill_grad below averages d_k v_k, one pass each
            option = f"combine={self.combine!r}" if self.combine != "mean" else "batched=True"
            raise ValueError(f"{option} is not implemented for distributed forward gradients, which average "
                             "d_k v_k over the workers' directions: leave it out (combine='mean', batched=False)")
        self.mode = checks.choice("mode", mode, MODES)
        self.comm = communicator or Communicator()
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def fill_grad(self, x, y):
        x, y = shard(x, y, self.rank, self.world)
        k = self.n_directions
        workers = self.world if self.mode == "independent" else 1
        seeds = [int(torch.randint(2 ** 62, (), generator=self.seeds)) for _ in range(workers * k)]
        mine = seeds[self.rank * k:(self.rank + 1) * k] if self.mode == "independent" else seeds
        ds, loss = [], None
        for s in mine:
            loss, d = self._jvp(x, y, *self.directions(s))
            ds.append(d)
        local = torch.stack([*ds, loss])
        if self.mode == "shared":
            pairs = [(s, d) for s, d in zip(seeds, self.comm.all_reduce_mean(local)[:k].tolist())]
            loss = local[-1]
        else:  # every worker sends its k (seed, d) pairs; seeds travel as int64, d as float64 bits
            packed = torch.cat([torch.tensor(mine, dtype=torch.int64), local.to(torch.float64).view(torch.int64)])
            gathered = self.comm.all_gather(packed)
            pairs = [(int(s), float(d)) for row in gathered
                     for s, d in zip(row[:k].tolist(), row[k:2 * k].view(torch.float64).tolist())]
            loss = gathered[:, -1].view(torch.float64).mean()
        self.write_grad((value / len(pairs), self.directions(s)) for s, value in pairs)
        self.last_seeds = [s for s, _ in pairs]
        return loss.to(self.params[0].dtype)


class DistributedBackprop(Backprop):
    """Backprop with DistributedDataParallel: `step(x, y)` takes the global batch; the gradient
    all-reduce goes through a hook that counts its bytes."""
    name = "backprop, distributed"

    def __init__(self, model, loss_fn, lr, communicator=None, **kwargs):
        self.comm = communicator or Communicator()
        try:   # DDP broadcasts rank 0's weights to every worker here
            self.ddp = DistributedDataParallel(model)
        except RuntimeError as err:
            raise collective_failed("DistributedDataParallel's weight broadcast", err) from err
        self.ddp.register_comm_hook(self.comm, _counting_allreduce)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        super().__init__(self.ddp, loss_fn, lr, **kwargs)

    def fill_grad(self, x, y):
        """The gradient of this worker's shard (DDP averages them); returns the global batch's
        loss (one more number all-reduced, as forward gradients send theirs)."""
        try:   # DDP all-reduces the gradient's buckets during the backward pass
            loss = super().fill_grad(*shard(x, y, self.rank, self.world))
        except RuntimeError as err:
            raise collective_failed("backprop's gradient all-reduce (DistributedDataParallel)", err) from err
        return self.comm.all_reduce_mean(loss.reshape(1))[0]


def _counting_allreduce(comm, bucket):
    """DDP's default hook (all-reduce the bucket, divide by the world) with the bytes counted."""
    buffer = bucket.buffer()
    comm._count(buffer)
    buffer.div_(dist.get_world_size())
    return dist.all_reduce(buffer, async_op=True).get_future().then(lambda fut: fut.value()[0])


def make_distributed_method(name, model, lr, seed=0, **kwargs):
    """'fg-shared', 'fg-independent' or 'bp' (DDP), each with its own byte counter."""
    checks.choice("name", name, ("fg-shared", "fg-independent", "bp"))
    if name == "bp":
        return DistributedBackprop(model, F.cross_entropy, lr, **kwargs)
    return DistributedForwardGradient(model, F.cross_entropy, lr, mode=name.split("-")[1], seed=seed, **kwargs)


def check_arguments(parser, args):
    """Refuse bad --methods, --out and counts at once (parser.error names the option), so that no
    method trains before the last one is found to be misspelt or the results cannot be written."""
    import pathlib
    names = ("fg-shared", "fg-independent", "bp")
    bad = [m for m in args.methods.split(",") if m not in names]
    if bad or not args.methods:
        parser.error(f"argument --methods: {bad or args.methods!r} not among {', '.join(names)} (comma-separated)")
    for option in ("iterations", "batch_size", "n_directions"):
        if getattr(args, option) < 1:
            parser.error(f"argument --{option.replace('_', '-')}: must be a positive integer, got {getattr(args, option)}")
    if args.out:
        out = pathlib.Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            parser.error(f"argument --out: cannot create the folder {out} ({err})")
        if not os.access(out, os.W_OK):
            parser.error(f"argument --out: the folder {out} is not writable")


def main(argv=None):
    """torchrun --nproc-per-node W -m fglib.distributed --model mlp --methods fg-shared,bp ...

    Trains each method in turn from the same seed on the same global batches, and (rank 0)
    saves for each its train losses, final weights, bytes sent per step and step times to
    --out/<method>.pt."""
    import argparse
    import pathlib

    from .data import load_data
    from .models import MODELS, build_model
    from .train import train

    parser = argparse.ArgumentParser(prog="torchrun ... -m fglib.distributed", description=main.__doc__)
    parser.add_argument("--model", default="logreg", choices=MODELS)
    parser.add_argument("--methods", default="fg-shared,fg-independent,bp")
    parser.add_argument("--lr", type=float, default=1e-4, help="forward gradients' learning rate")
    parser.add_argument("--lr-bp", type=float, default=1e-2, help="backprop's learning rate")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch")
    parser.add_argument("--n-directions", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="training images to load (default all)")
    parser.add_argument("--timeout", type=float, default=60, help="seconds a collective may wait")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--out", default=None, help="folder for the results (rank 0)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu"],
                        help="auto: one GPU per worker (NCCL) when there are enough, else CPU (gloo)")
    args = parser.parse_args(argv)
    check_arguments(parser, args)   # before any process group, data or training
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    on_gpu = args.device == "auto" and torch.cuda.device_count() > int(os.environ.get("LOCAL_WORLD_SIZE", 1)) - 1
    device = f"cuda:{local_rank}" if on_gpu else "cpu"
    rank, world = init("nccl" if on_gpu else "gloo", timeout_s=args.timeout)
    dtype = getattr(torch, args.dtype)
    data = load_data("mnist", device=device, limit=args.limit, dtype=dtype)
    try:
        for name in args.methods.split(","):
            model = build_model(args.model, seed=args.seed, device=device).to(dtype)
            lr = args.lr_bp if name == "bp" else args.lr
            extra = {} if name == "bp" else {"n_directions": args.n_directions}
            method = make_distributed_method(name, model, lr, seed=args.seed, **extra)
            curve = train(method, data, args.iterations, args.batch_size, eval_every=args.iterations,
                          seed=args.seed, progress=False)
            if rank == 0 and args.out:
                train_rows = curve[curve["split"] == "train"]
                pathlib.Path(args.out).mkdir(parents=True, exist_ok=True)
                torch.save({"method": name, "world": world, "losses": train_rows["loss"].tolist(),
                            "step_times": train_rows["time"].diff().dropna().tolist(),
                            "weights": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                            "bytes_per_step": method.comm.bytes_sent / args.iterations,
                            "parameters": sum(p.numel() for p in model.parameters())},
                           pathlib.Path(args.out) / f"{name}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
