"""Random directions v for the forward gradient g = (grad f . v) v.

The estimator is unbiased when E[v v^T] = I (Baydin et al. 2022, Theorem 1, asks for
independent components with zero mean and unit variance; E[v v^T] = I is all the proof
uses). The laws here:

    normal      v_i ~ N(0, 1)                 (the paper's choice)    E||g||^2 = (n + 2)||grad f||^2
    rademacher  v_i = +1 or -1, p=1/2         (64 signs per word)     E||g||^2 =  n      ||grad f||^2
    sphere      v = sqrt(n) z / ||z||, z normal: uniform on the sphere of radius sqrt(n)
                (components not independent, but E[v v^T] = I)      E||g||^2 =  n      ||grad f||^2
    orthogonal  K directions at once, orthogonal to each other, each uniform on the sphere
                of radius sqrt(n) (`orthogonal_directions`): the mean of their K forward
                gradients is unbiased, with less variance than K independent ones, and exact
                (= grad f) when K = n

A direction over all parameters is drawn in one call, into one flat buffer with a view
per parameter. Rademacher signs come from random 64-bit words, 64 signs per word: each
byte of a word picks a row of a 256 x 8 table of +-1, so drawing n signs costs n/64
random words and one table lookup, instead of one random number per sign.

Normal draws on the CPU come from PyTorch's Mersenne Twister, which is sequential: one
stream keeps one core busy. `parallel_normal` draws STREAMS chunks at once, each from its
own generator seeded from the caller's (exactly N(0, I); the same seed gives the same v
whatever the number of threads). Timed on 2 cores in the implementations chapter, in rounds
beside a forward pass as in a training step, it gained little over one torch.randn call (likely
because OpenMP's idle threads still spin on the second core), so directions use torch.randn.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from collections.abc import Iterable

import torch

from . import checks

DIRECTIONS = ("normal", "rademacher", "sphere", "orthogonal")
ONE_AT_A_TIME = ("normal", "rademacher", "sphere")   # "orthogonal" draws K together
INDEPENDENT = ("normal", "rademacher")   # laws with independent components: v drawn a block at a time has the same law
BLOCK = 2 ** 16   # the most elements one block of a blocked draw holds (256 KiB in float32), whole rows
STREAMS = 4
_SIGN_TABLES, _POOL = {}, []


def check_direction(kind, name="direction"):
    return checks.choice(name, kind, DIRECTIONS)


def check_generator(generator, like):
    """A generator must live on the device of the tensors it fills."""
    if generator is not None and generator.device.type != like.device.type:
        raise ValueError(f"generator is on {generator.device} but the parameters are on {like.device}; "
                         f"make it with fglib.make_generator(seed, {str(like.device)!r})")


def sign_table(dtype, device):
    """Row b holds the 8 bits of the byte b as +-1 (bit 0 first): a (256, 8) table."""
    key = (dtype, torch.device(device))
    if key not in _SIGN_TABLES:
        bits = (torch.arange(256)[:, None] >> torch.arange(8)) & 1
        _SIGN_TABLES[key] = (2 * bits - 1).to(dtype=dtype, device=device)
    return _SIGN_TABLES[key]


RADEMACHER_CHUNK = 2 ** 16   # bytes of random words turned into signs at a time


def rademacher(n, dtype, device, generator=None, out=None):
    """n independent signs +-1 with probability 1/2 each, 64 from every random 64-bit word: each
    byte of the words picks its 8 signs from a table. The bytes are looked up a chunk at a time,
    written straight into the result (or into `out`, n elements), so that the step holds no index
    as large as v."""
    words = torch.randint(-2 ** 63, 2 ** 63 - 1, ((n + 63) // 64,), dtype=torch.int64, device=device,
                          generator=generator)
    table = sign_table(dtype, device)
    octets = words.view(torch.uint8)
    count = octets.shape[0]
    whole = n == 8 * count and out is not None   # the signs fit `out` exactly: written there
    signs = out.view(-1, 8) if whole else torch.empty(count, 8, dtype=dtype, device=device)
    for start in range(0, count, RADEMACHER_CHUNK):
        stop = min(start + RADEMACHER_CHUNK, count)
        torch.index_select(table, 0, octets[start:stop].int(), out=signs[start:stop])
    if out is None:
        return signs.view(-1)[:n]
    return out if whole else out.copy_(signs.view(-1)[:n])


def _pool():
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=min(STREAMS, max(1, torch.get_num_threads()))))
    return _POOL[0]


def parallel_normal(n, dtype, generator=None):
    """n draws of N(0, 1) on the CPU, STREAMS chunks filled at once from seeded sub-generators."""
    seeds = torch.randint(2 ** 62, (STREAMS,), generator=generator).tolist()
    out = torch.empty(n, dtype=dtype)
    fill = lambda chunk_seed: chunk_seed[0].normal_(generator=torch.Generator().manual_seed(chunk_seed[1]))
    list(_pool().map(fill, zip(out.chunk(STREAMS), seeds)))
    return out


def flat_direction(n, kind, dtype, device, generator=None, out=None):
    """One direction of n components, drawn in one call (into `out`, n contiguous elements, if given:
    the same numbers as without it)."""
    if kind == "rademacher":
        return rademacher(n, dtype, device, generator, out)
    if kind == "orthogonal":
        raise ValueError("direction 'orthogonal' draws K directions together: use orthogonal_directions "
                         "(or ForwardGradientDescent(direction='orthogonal', n_directions=K))")
    z = torch.randn(n, dtype=dtype, device=device, generator=generator, out=out)
    return z.mul_(n ** 0.5 / z.norm()) if kind == "sphere" else z


def direction_rows(rows, n, kind, dtype=torch.float64, device="cpu", generator=None):
    """A (rows, n) matrix whose rows are independent directions of n components."""
    if kind == "sphere":
        z = torch.randn(rows, n, dtype=dtype, device=device, generator=generator)
        return z.mul_(n ** 0.5 / z.norm(dim=1, keepdim=True))
    if kind == "orthogonal":  # independent blocks of n rows (and one shorter), orthogonal within each
        full, rest = divmod(rows, n)
        parts = [orthogonal_rows(n, n, dtype, device, generator, blocks=full)] if full else []
        parts += [orthogonal_rows(rest, n, dtype, device, generator)] if rest else []
        return torch.cat(parts)
    return flat_direction(rows * n, kind, dtype, device, generator).view(rows, n)


def orthogonal_rows(k, n, dtype=torch.float64, device="cpu", generator=None, blocks=1):
    """(blocks * k, n): for each block, sqrt(n) times the first k columns of a Haar-random
    orthogonal matrix, from the QR factorisation of an n x k normal matrix with the signs of
    R's diagonal moved into Q (Mezzadri 2007), so that each row is uniform on the sphere of
    radius sqrt(n). Blocks are independent, factorised in one batched call."""
    if k > n:
        raise ValueError(f"n_directions ({k}) must be at most the number of parameters ({n}) for "
                         "orthogonal directions")
    q, r = torch.linalg.qr(torch.randn(blocks, n, k, dtype=dtype, device=device, generator=generator))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :] * n ** 0.5
    return q.transpose(1, 2).reshape(blocks * k, n).contiguous()


def orthogonal_directions(tensors, k, generator=None):
    """K directions over all the tensors, orthogonal to each other: a list of K lists of views
    (one per tensor), as sample_directions gives one."""
    tensors = list(tensors)
    check_generator(generator, tensors[0])
    sizes = [t.numel() for t in tensors]
    rows = orthogonal_rows(checks.count("n_directions", k), sum(sizes), tensors[0].dtype, tensors[0].device,
                           generator)
    return [[part.view(t.shape) for part, t in zip(row.split(sizes), tensors)] for row in rows]


def sample_direction(like: torch.Tensor, kind: str = "normal", generator: torch.Generator | None = None) -> torch.Tensor:
    """One direction with the shape, dtype and device of the tensor `like`.

    The generator must live on `like`'s device (see `make_generator`).
    """
    check_direction(kind, "kind")
    check_generator(generator, like)
    return flat_direction(like.numel(), kind, like.dtype, like.device, generator).view(like.shape)


def per_tensor_direction(like, index, step_seed, kind="normal", generator=None):
    """The part of v for tensor number `index`, drawn on its own: the generator is seeded with
    (step_seed + 7919 index) mod 2^63, so the same (step seed, index) gives the same draw at any
    time, in any order, without drawing the other tensors' parts (the in-place methods regenerate
    a tensor's part for the update this way)."""
    generator.manual_seed((step_seed + 7919 * index) % 2 ** 63)
    return sample_direction(like, kind, generator)


def block_rows(like, block=BLOCK):
    """[(start, stop)]: the rows (along dim 0) of each block of a blocked draw of a tensor shaped
    like `like`, whole rows of at most `block` elements each (one row where a row holds more); one
    block for a tensor of at most `block` elements or of no dimensions."""
    if like.dim() == 0 or like.numel() <= block:
        return [(0, like.shape[0] if like.dim() else 1)]
    length = like.shape[0]
    rows = max(1, block // (like.numel() // length))
    return [(start, min(start + rows, length)) for start in range(0, length, rows)]


def _draw_block(like, index, step_seed, block, rows, kind, generator, out=None):
    """Block number `block` (rows `rows` of block_rows(like)) of tensor number `index`'s part of v,
    drawn from the seed (step_seed + 7919 index + 104729 block) mod 2^63; into `out` if given."""
    generator.manual_seed((step_seed + 7919 * index + 104729 * block) % 2 ** 63)
    part = like if like.dim() == 0 else like[rows[0]:rows[1]]
    flat = flat_direction(part.numel(), kind, like.dtype, like.device, generator,
                          None if out is None else out.view(-1))
    return flat.view(part.shape)


def block_direction(like, index, step_seed, block, kind="normal", generator=None):
    """Block number `block` of tensor number `index`'s part of v (rows block_rows(like)[block]),
    drawn on its own from the seed (step_seed + 7919 index + 104729 block) mod 2^63: the same
    (step seed, tensor, block) gives the same draw at any time, without drawing the rest of v."""
    check_direction(kind, "kind")
    check_generator(generator, like)
    return _draw_block(like, index, step_seed, block, block_rows(like)[block], kind, generator)


def block_directions(like, index, step_seed, kind="normal", generator=None):
    """(rows, block) for each block of tensor number `index`'s part of v, in order, each drawn as
    block_direction draws it, one at a time."""
    check_direction(kind, "kind")
    check_generator(generator, like)
    for b, rows in enumerate(block_rows(like)):
        yield slice(*rows), _draw_block(like, index, step_seed, b, rows, kind, generator)


def blocked_direction(like, index, step_seed, kind="normal", generator=None):
    """Tensor number `index`'s whole part of v: its blocks (block_direction), each drawn straight
    into its place in the result."""
    check_direction(kind, "kind")
    check_generator(generator, like)
    blocks = block_rows(like)
    if len(blocks) == 1:
        return _draw_block(like, index, step_seed, 0, blocks[0], kind, generator)
    out = torch.empty_like(like, memory_format=torch.contiguous_format)
    for b, rows in enumerate(blocks):
        _draw_block(like, index, step_seed, b, rows, kind, generator, out[rows[0]:rows[1]])
    return out


def sample_directions(tensors: Iterable[torch.Tensor], kind: str = "normal",
                      generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """One direction per tensor, together one v over all parameters: drawn as one flat
    buffer (one random call), returned as a view of it per tensor. (For 'orthogonal', which
    draws K together, see orthogonal_directions.)"""
    check_direction(kind, "kind")
    tensors = list(tensors)
    if not tensors:
        return []
    check_generator(generator, tensors[0])
    sizes = [t.numel() for t in tensors]
    flat = flat_direction(sum(sizes), kind, tensors[0].dtype, tensors[0].device, generator)
    return [part.view(t.shape) for part, t in zip(flat.split(sizes), tensors)]


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A seeded torch.Generator on `device`, so that directions are reproducible."""
    seed, device = checks.seed("seed", seed), checks.device("device", device)
    return torch.Generator(device=torch.device(device)).manual_seed(seed)
