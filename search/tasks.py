"""Proxy tasks: small, real training problems that run on a CPU in a fraction of a second.

Every task trains K copies of one model at once (one per learning rate and initialisation seed
of the sweep): the parameters of copy k are row k of a ``(K, P)`` tensor, and each model is
written batched over that leading axis (``einsum``, grouped convolutions), which is several
times faster on a CPU than ``vmap`` over a module. Data come with scikit-learn (the 8x8 digits)
or are generated from a fixed seed; every copy sees the same minibatches, so fitness is
comparable across candidates.

The tasks carry the conditions of real training that a rule must survive (issue: a rule that
divides by an un-smoothed second moment turns a weight whose gradient is exactly 0 into nan):

  - exactly-zero gradient coordinates: constant (all-zero) input pixels in ``logreg`` and
    ``mlp``; dead ReLU units and a zero-initialised output layer (every hidden gradient is 0 at
    the first step) in ``mlp``; embedding rows that a minibatch does not touch in ``embedding``;
  - minibatch noise (every digits/embedding/transformer task samples its batches);
  - parameters of very different scales (``quadratic``: curvatures over three decades;
    embeddings of scale 1 next to zero-initialised biases);
  - a few hundred steps where the final held-out loss is what counts.

Proxy tasks (the search's fitness), cheapest first (hurdles cut bad candidates early):
  ``quadratic``   ill-conditioned quadratic (curvatures 1e-2..10) with noisy gradients
  ``logreg``      logistic regression on digits, constant pixels kept (their gradient is 0)
  ``embedding``   bag-of-tokens classifier over a Zipf vocabulary (untouched rows: zero grads)
  ``mlp``         a ReLU network on digits with a zero-initialised output layer
  ``transformer`` a one-layer attention model on a synthetic sequence task
Meta-validation tasks (held out of the search): larger and longer versions (``*_large``), a
convnet (``conv_large``), an architecture the proxies do not contain, and an autoencoder on sparse
data in [0, 1] (``sparse_ae_large``), a loss they do not contain.
Further tasks for ``--tasks`` (not in the default search): ``charlm`` / ``charlm_large``, causal
transformers predicting English text, and ``transformer_sort``, ``_reverse``, ``_cumsum``,
``_max_prefix``, the proxy transformer on other sequence tasks; ``lowrank_ae`` / ``lowrank_ae_large``,
a ReLU autoencoder with a bottleneck on low-rank Gaussian data (it penalises oversized early steps);
``sparse_ae``, the held-out autoencoder's smaller version.

Example:
    >>> task = get_task("logreg")
    >>> w = task.init_params(4)                  # 4 copies, identical initialisation
    >>> task.train_loss(task.unflatten(w), 1).shape
    torch.Size([4])
"""

from __future__ import annotations

import inspect
import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial

import numpy as np
import torch
import torch.nn.functional as F

Params = dict[str, torch.Tensor]


@dataclass
class Task:
    """One training problem. ``loss(params, batch)`` maps parameters of shape ``(K, *shape)`` to
    K losses; ``batch(t)`` is the minibatch of step t (1-based) and ``eval_batch`` the held-out
    data the final loss is measured on."""

    name: str
    description: str
    shapes: dict[str, tuple[int, ...]]
    init: Callable[[torch.Generator], Params]
    loss: Callable[[Params, object], torch.Tensor]
    batch: Callable[[int], object]
    eval_batch: object
    steps: int

    @property
    def size(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values())

    def init_params(self, k: int, seed: int = 0) -> torch.Tensor:
        """``(k, P)``: k identical copies of the initial parameters drawn with ``seed``."""
        return self.init_copies([seed], k)

    def init_copies(self, seeds: Sequence[int], per_seed: int) -> torch.Tensor:
        """``(len(seeds) * per_seed, P)``: for each seed in turn, ``per_seed`` copies of the
        parameters initialised with that seed (seed-major blocks)."""
        rows = []
        for seed in seeds:
            p = self.init(torch.Generator().manual_seed(seed))
            rows.append(torch.cat([p[n].reshape(-1) for n in self.shapes]).repeat(per_seed, 1))
        return torch.cat(rows)

    def unflatten(self, flat: torch.Tensor) -> Params:
        """Views of a ``(K, P)`` tensor as the named ``(K, *shape)`` parameters."""
        sizes = [math.prod(s) for s in self.shapes.values()]
        parts = torch.split(flat, sizes, dim=1)
        return {n: x.reshape(flat.shape[0], *s) for (n, s), x in zip(self.shapes.items(), parts)}

    def train_loss(self, params: Params, t: int) -> torch.Tensor:
        return self.loss(params, self.batch(t))

    def eval_loss(self, params: Params) -> torch.Tensor:
        return self.loss(params, self.eval_batch)


def _normal(gen: torch.Generator, *shape: int, std: float) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * std


# --- data -------------------------------------------------------------------------------------
@cache
def digits(image: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits: (X_train, y_train, X_val, y_val), 1347 / 450 images.

    Feature vectors (``image=False``, 64 features) are standardised per pixel on the training
    split; the pixels that are constant there are exactly 0 everywhere, so the weights reading
    them get exactly-zero gradients, as constant input features do in real data. Images
    (``image=True``) are shifted and scaled as a whole::

        x <- (x - mean_train) / std_train            per pixel (0 where std_train = 0)
        x <- (x - mean_train - 1e-3) / std_train     images: over all pixels

    Example:
        >>> x_train, y_train, x_val, y_val = digits()
        >>> x_train.shape, x_val.shape, int((x_train == 0).all(0).sum()), int(y_train.max())
        (torch.Size([1347, 64]), torch.Size([450, 64]), 3, 9)
    """
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm] / 16.0, torch.tensor(y[perm], dtype=torch.long)
    train = x[:1347]
    if image:
        x = (x - train.mean() - 1e-3) / train.std()
    else:
        std = train.std(0)
        x = np.where(std > 0, (x - train.mean(0)) / np.where(std > 0, std, 1.0), 0.0)
    x = torch.tensor(x, dtype=torch.float32)
    return x[:1347], y[:1347], x[1347:], y[1347:]


def _batches(n: int, batch: int, steps: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (steps, batch), generator=gen)


def _cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per copy: logits ``(K, N, C)``, labels ``(N,)`` -> ``(K,)``."""
    # Classes on axis 1: torch's CPU log-softmax over a short innermost axis (10 classes) runs
    # ~4x slower than over a strided one, and it was a third of a job's time.
    k, n, _ = logits.shape
    return F.cross_entropy(logits.transpose(1, 2), y.expand(k, n), reduction="none").mean(1)


def _digits_task(name, description, shapes, init, forward, steps, batch=128, seed=1, image=False) -> Task:
    xt, yt, xv, yv = digits(image)
    idx = _batches(len(xt), batch, steps, seed)

    def loss(p, b):
        x, y = b
        return _cross_entropy(forward(p, x), y)

    return Task(name, description, shapes, init, loss, lambda t: (xt[idx[t - 1]], yt[idx[t - 1]]),
                (xv, yv), steps)


# --- quadratic --------------------------------------------------------------------------------
def quadratic(name="quadratic", shapes=None, kappa=1e3, noise=0.1, steps=100, seed=0) -> Task:
    """``f(x) = 1/2 sum_i h_i (x_i - x*_i)^2`` with ``h`` log-spaced over ``[10/kappa, 10]``;
    each step's gradient carries N(0, noise^2) noise (the term ``xi_t . x`` in the loss). The
    initialisation seed moves the start point, ``x_0 ~ N(0, 0.5^2)``.

    Example:
        >>> task = quadratic()
        >>> task.description, task.steps
        ('ill-conditioned noisy quadratic, 96 parameters, kappa 1000', 100)
    """
    shapes = shapes or {"a": (8, 8), "b": (32,)}
    gen = torch.Generator().manual_seed(seed)
    n = sum(math.prod(s) for s in shapes.values())
    h = torch.logspace(math.log10(10.0 / kappa), 1.0, n)[torch.randperm(n, generator=gen)]
    target = torch.randn(n, generator=gen)
    xi = torch.randn(steps, n, generator=gen) * noise

    def loss(p, b):
        x = torch.cat([p[k].reshape(p[k].shape[0], -1) for k in shapes], dim=1)
        value = 0.5 * (h * (x - target) ** 2).sum(1)
        return value if b is None else value + (x * b).sum(1)

    init = lambda gen: {k: _normal(gen, *s, std=0.5) for k, s in shapes.items()}
    return Task(name, f"ill-conditioned noisy quadratic, {n} parameters, kappa {kappa:g}", shapes, init,
                loss, lambda t: xi[t - 1], None, steps)


# --- digits: logistic regression, MLP, convnet --------------------------------------------------
def logreg(name="logreg", steps=100, batch=128) -> Task:
    """Logistic regression on the 8x8 digits (:func:`digits`, constant pixels kept: the weights
    reading them get exactly-zero gradients), minibatches of ``batch``::

        logits = x W + b,   loss = cross_entropy(logits, y),   W ~ N(0, 0.01^2), b = 0

    Example:
        >>> task = logreg()
        >>> task.shapes, task.steps
        ({'w': (64, 10), 'b': (10,)}, 100)
        >>> task.eval_loss(task.unflatten(task.init_params(2)))     # ~ log(10) at the start
        tensor([2.3083, 2.3083])
    """
    n = digits()[0].shape[1]
    shapes = {"w": (n, 10), "b": (10,)}
    init = lambda gen: {"w": _normal(gen, n, 10, std=0.01), "b": torch.zeros(10)}
    fwd = lambda p, x: torch.einsum("ni,kio->kno", x, p["w"]) + p["b"][:, None]
    return _digits_task(name, "logistic regression on digits (constant pixels kept)", shapes, init, fwd, steps,
                        batch=batch)


def _relu_network(dims: Sequence[int], zero_output: bool = False):
    """``(shapes, init, forward)`` of a ReLU network with layer widths ``dims``, K copies at once:
    He-initialised weights (the last layer's zero with ``zero_output``), zero biases, and
    ``forward(p, x)`` mapping a batch ``x`` ``(N, dims[0])`` shared by the copies to ``(K, N, dims[-1])``."""
    shapes = {}
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        shapes[f"w{i}"], shapes[f"b{i}"] = (a, b), (b,)
    last = len(dims) - 2

    def init(gen):
        out = {}
        for i, (a, b) in enumerate(itertools.pairwise(dims)):
            std = 0.0 if zero_output and i == last else math.sqrt(2 / a)
            out[f"w{i}"], out[f"b{i}"] = _normal(gen, a, b, std=std), torch.zeros(b)
        return out

    def forward(p, x):
        h = torch.einsum("ni,kio->kno", x, p["w0"]) + p["b0"][:, None]
        for i in range(1, len(dims) - 1):
            h = torch.einsum("kni,kio->kno", F.relu(h), p[f"w{i}"]) + p[f"b{i}"][:, None]
        return h

    return shapes, init, forward


def mlp(name="mlp", widths=(32,), steps=150, batch=64) -> Task:
    """ReLU layers with He initialisation and a zero-initialised output layer: at the first step
    every hidden gradient is exactly 0, and dead units keep exactly-zero gradients after::

        h_0 = x,  h_i = relu(h_{i-1} W_i + b_i),  logits = h W_last + b_last,  W_last = 0 at the start

    Example:
        >>> task = mlp()
        >>> task.shapes
        {'w0': (64, 32), 'b0': (32,), 'w1': (32, 10), 'b1': (10,)}
        >>> task.eval_loss(task.unflatten(task.init_params(2)))     # zero logits: exactly log(10)
        tensor([2.3026, 2.3026])
    """
    dims = (digits()[0].shape[1], *widths, 10)
    shapes, init, fwd = _relu_network(dims, zero_output=True)
    return _digits_task(name, f"ReLU MLP {'-'.join(map(str, dims))} on digits, zero-initialised output",
                        shapes, init, fwd, steps, batch=batch)


def conv(name="conv", channels=(8,), steps=80) -> Task:
    """3x3 convolutions (padding 1, GELU), 2x2 average pooling, a linear classifier. The K copies
    share the first layer's 3x3 patches (one product for all copies); later layers run as one grouped
    convolution (groups=K)::

        h = gelu(conv3x3(x) + b) per layer,  logits = avgpool2x2(h) W + b

    Example:
        >>> conv(channels=(8,)).shapes
        {'c0': (8, 1, 3, 3), 'cb0': (8,), 'w': (128, 10), 'b': (10,)}
    """
    chans = (1, *channels)
    shapes = {}
    for i, (a, b) in enumerate(itertools.pairwise(chans)):
        shapes[f"c{i}"], shapes[f"cb{i}"] = (b, a, 3, 3), (b,)
    shapes["w"], shapes["b"] = (chans[-1] * 16, 10), (10,)

    def init(gen):
        out = {}
        for i, (a, b) in enumerate(itertools.pairwise(chans)):
            out[f"c{i}"], out[f"cb{i}"] = _normal(gen, b, a, 3, 3, std=1 / math.sqrt(9 * a)), torch.zeros(b)
        out["w"] = _normal(gen, chans[-1] * 16, 10, std=1 / math.sqrt(chans[-1] * 16))
        out["b"] = torch.zeros(10)
        return out

    def fwd(p, x):
        k, n = p["w"].shape[0], x.shape[0]
        # the first layer's input is the same image for every copy: its 3x3 patches are taken once
        # and every copy's filters applied in one product (4x faster than a grouped convolution)
        patches = F.unfold(x.reshape(n, 1, 8, 8), 3, padding=1)  # (n, 9, 64)
        h = torch.einsum("ncp,kbc->nkbp", patches, p["c0"].reshape(k, chans[1], 9))
        h = F.gelu((h + p["cb0"][None, :, :, None]).reshape(n, k * chans[1], 8, 8))
        for i, (a, b) in enumerate(itertools.pairwise(chans[1:]), 1):
            weight = p[f"c{i}"].reshape(k * b, a, 3, 3)
            h = F.gelu(F.conv2d(h, weight, p[f"cb{i}"].reshape(-1), padding=1, groups=k))
        h = F.avg_pool2d(h, 2).reshape(n, k, -1)
        return torch.einsum("nki,kio->kno", h, p["w"]) + p["b"][:, None]

    return _digits_task(name, f"convnet {'-'.join(map(str, channels))} channels on digits", shapes, init,
                        fwd, steps, batch=64, image=True)


# --- an autoencoder on low-rank data --------------------------------------------------------------
def lowrank_ae(name="lowrank_ae", d=32, rank=4, steps=200, batch=64, seed=11) -> Task:
    """A ReLU autoencoder ``d-16-rank-16-d`` (He initialisation) trained with squared error to
    reproduce Gaussian data near a ``rank``-dimensional subspace::

        x = z P + 0.1 noise,  z ~ N(0, I_rank),  P ~ N(0, 1)^(rank x d);   loss = |f(x) - x|^2 / d

    Its bottleneck units die for good under oversized early steps, so it tells Adam without bias
    correction (its first step is (1 - beta1) / sqrt(1 - beta2) times Adam's) from Adam with it,
    which the default proxies reward the other way (docs/search.md, "Bias correction").

    Example:
        >>> task = lowrank_ae()
        >>> task.shapes["w1"], task.steps
        ((16, 4), 200)
    """
    gen = torch.Generator().manual_seed(seed)
    basis = torch.randn(rank, d, generator=gen)
    n = steps * batch + 512
    x = torch.randn(n, rank, generator=gen) @ basis + 0.1 * torch.randn(n, d, generator=gen)
    return _autoencoder(name, f"rank-{rank} Gaussian data", x, (d, 16, rank, 16, d), steps, batch)


def _autoencoder(name: str, data: str, x: torch.Tensor, dims: Sequence[int], steps: int, batch: int) -> Task:
    """A ReLU network with widths ``dims`` (:func:`_relu_network`) trained with squared error to
    reproduce the rows of ``x``: the first ``steps * batch`` in minibatches of ``batch``, the rest
    held out; ``data`` says in words what ``x`` is."""
    train = x[:steps * batch].reshape(steps, batch, x.shape[1])
    shapes, init, forward = _relu_network(dims)

    def loss(p, xb):
        return ((forward(p, xb) - xb) ** 2).mean((1, 2))

    what = f"ReLU autoencoder {'-'.join(map(str, dims))} on {data}"
    return Task(name, what, shapes, init, loss, lambda t: train[t - 1], x[steps * batch:], steps)


# --- an autoencoder on data shaped like pixel intensities -----------------------------------------
def sparse_ae(name="sparse_ae", d=32, rank=4, hidden=16, code=6, steps=150, batch=64, seed=30) -> Task:
    """A ReLU autoencoder ``d-hidden-code-hidden-d`` (He initialisation) trained with squared error to
    reproduce bounded, sparse data, as images' pixels are::

        x = clip(z M, 0, 1),  z ~ N(0, I_rank),  M ~ N(0, 1 / rank)^(rank x d);   loss = |f(x) - x|^2 / d

    Half the entries are exactly 0 (their first-layer weights get exactly-0 gradients) and one in
    seven exactly 1. The held-out version, ``sparse_ae_large``, scores a step that grows as
    ``sqrt |m|`` (``sign(m) sqrt(|m|)``) below tuned AdamW (-0.13), as a real autoencoder of the 8x8
    digits does (1.6x AdamW's loss), where the classifiers and :func:`lowrank_ae`'s Gaussian data let
    it pass (docs/search.md, "The fitness").

    Example:
        >>> task = sparse_ae()
        >>> task.shapes["w1"], float((task.eval_batch == 0).float().mean().round(decimals=1))
        ((16, 6), 0.5)
    """
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(rank, d, generator=gen) / math.sqrt(rank)
    n = steps * batch + 512
    x = (torch.randn(n, rank, generator=gen) @ mix).clamp(0.0, 1.0)
    return _autoencoder(name, f"rank-{rank} data clipped to [0, 1]", x, (d, hidden, code, hidden, d), steps,
                        batch)


# --- bag of tokens over a Zipf vocabulary --------------------------------------------------------
def embedding(name="embedding", vocab=200, d=8, length=10, classes=4, steps=150, batch=32, seed=3) -> Task:
    """Mean of token embeddings, then a linear classifier. Tokens follow a Zipf law (exponent
    1.1), so most rows of the embedding table are absent from a given minibatch and get exactly
    zero gradient — the case of real embedding tables. Labels come from a fixed random linear
    teacher over token counts::

        logits = mean_j(E[x_j]) W + b,   y = argmax_c sum_j T[x_j, c]

    Example (116 of the 200 rows get exactly-zero gradient at the first step):
        >>> task = embedding()
        >>> w = task.init_params(1).requires_grad_()
        >>> (g,) = torch.autograd.grad(task.train_loss(task.unflatten(w), 1).sum(), w)
        >>> int((task.unflatten(g)["emb"][0].abs().sum(1) == 0).sum())
        116
    """
    gen = torch.Generator().manual_seed(seed)
    probs = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64) ** 1.1
    tokens = torch.multinomial(probs / probs.sum(), (steps * batch + 512) * length, replacement=True,
                               generator=gen).reshape(-1, length)
    teacher = torch.randn(vocab, classes, generator=gen)
    labels = teacher[tokens].sum(1).argmax(1)
    train_x, train_y = tokens[: steps * batch].reshape(steps, batch, length), labels[: steps * batch].reshape(steps, batch)
    shapes = {"emb": (vocab, d), "w": (d, classes), "b": (classes,)}

    def init(gen):
        return {"emb": _normal(gen, vocab, d, std=1.0), "w": _normal(gen, d, classes, std=1 / math.sqrt(d)),
                "b": torch.zeros(classes)}

    def loss(p, b):
        x, y = b
        h = p["emb"][:, x].mean(2)  # (K, N, d)
        return _cross_entropy(torch.einsum("knd,kdc->knc", h, p["w"]) + p["b"][:, None], y)

    return Task(name, f"bag of {length} Zipf tokens (vocabulary {vocab}, d={d}) -> {classes} classes", shapes,
                init, loss, lambda t: (train_x[t - 1], train_y[t - 1]),
                (tokens[steps * batch:], labels[steps * batch:]), steps)


#: Sequence tasks for :func:`transformer`: tokens ``(N, L)`` -> targets ``(N, L)``.
TARGETS = {
    "mirror_add": lambda x, vocab: (x + x.flip(-1)) % vocab,  # attend to the mirror, add mod vocab
    "sort": lambda x, vocab: x.sort(-1).values,
    "reverse": lambda x, vocab: x.flip(-1),
    "cumsum": lambda x, vocab: x.cumsum(-1) % vocab,
    "max_prefix": lambda x, vocab: x.cummax(-1).values,
}


# --- transformers: synthetic sequence tasks, a character-level language model -------------------
def _block(h: torch.Tensor, qkv, o, m1, m2, length: int, mask=None) -> torch.Tensor:
    """One residual block on activations ``(K, N L, d)``: single-head attention within each
    sequence of ``length`` (``mask`` added to the (key, query) scores), then a GELU MLP. Every
    product is a bmm over the K copies: einsum had left permuted outputs, and the GELU, adds and
    softmax over them ran ~20% slower in all."""
    kk, nl, d = h.shape
    q, k, v = (x.reshape(-1, length, d) for x in torch.bmm(h, qkv).split(d, 2))
    # scores laid out (key, query) and the softmax over keys written out: torch's CPU kernel over
    # an axis of 8 was 2x slower (strided) or 6x slower (innermost)
    s = torch.bmm(k, q.transpose(1, 2)) / math.sqrt(d)
    if mask is not None:
        s = s + mask
    e = torch.exp(s - s.amax(1, keepdim=True).detach())
    h = h + torch.bmm(torch.bmm((e / e.sum(1, keepdim=True)).transpose(1, 2), v).reshape(kk, nl, d), o)
    return h + torch.bmm(F.gelu(torch.bmm(h, m1)), m2)


def causal_mask(length: int) -> torch.Tensor:
    """``(key, query)`` scores mask for :func:`_block`: -inf where the key comes after the query.

    Example:
        >>> causal_mask(3)
        tensor([[0., 0., 0.],
                [-inf, 0., 0.],
                [-inf, -inf, 0.]])
    """
    return torch.triu(torch.full((length, length), -math.inf), 1).T


def transformer(name="transformer", vocab=8, length=8, d=16, steps=60, batch=32, seed=2,
                target="mirror_add") -> Task:
    """One attention layer (single head, learned positions) plus a GELU MLP, both residual, on a
    sequence task of :data:`TARGETS`. The default, ``mirror_add``: the target at position i is
    ``(x_i + x_{L-1-i}) mod vocab``, so position i must attend to its mirror and the MLP must
    learn modular addition.

    Example:
        >>> task = transformer()
        >>> task.description
        '1-layer transformer (d=16): mirror_add, vocabulary 8, length 8'
        >>> TARGETS["mirror_add"](torch.tensor([[1, 2, 3, 4]]), 8)     # (1+4, 2+3, 3+2, 4+1) mod 8
        tensor([[5, 5, 5, 5]])
    """
    shapes = {"emb": (vocab, d), "pos": (length, d), "q": (d, d), "k": (d, d), "v": (d, d), "o": (d, d),
              "m1": (d, 2 * d), "m2": (2 * d, d), "out": (d, vocab)}
    gen = torch.Generator().manual_seed(seed)
    data = torch.randint(0, vocab, (steps + 1, batch, length), generator=gen)

    def init(gen):
        return {n: _normal(gen, *s, std=1 / math.sqrt(s[0]) if n not in ("emb", "pos") else 1.0)
                for n, s in shapes.items()}

    def loss(p, tokens):
        kk, n = p["emb"].shape[0], tokens.shape[0]
        h = (p["emb"][:, tokens] + p["pos"][:, None]).reshape(kk, n * length, d)
        h = _block(h, torch.cat([p["q"], p["k"], p["v"]], 2), p["o"], p["m1"], p["m2"], length)
        return _cross_entropy(torch.bmm(h, p["out"]), TARGETS[target](tokens, vocab).reshape(-1))

    return Task(name, f"1-layer transformer (d={d}): {target}, vocabulary {vocab}, length {length}", shapes,
                init, loss, lambda t: data[t - 1], data[steps], steps)


@cache
def english_text() -> tuple[torch.Tensor, int, int]:
    """The dataset descriptions that ship with scikit-learn (~40 KB of English prose and tables),
    lower-cased, runs of whitespace as one space, as character ids (vocabulary: the characters
    that occur); with the vocabulary's size and where the held-out last 10% begins. (The text,
    and so its length and vocabulary, depends on the installed scikit-learn version.)

    Example:
        >>> ids, vocab, split = english_text()
        >>> ids.dtype, int(ids.max()) + 1 == vocab, split == int(0.9 * len(ids))
        (torch.int64, True, True)
    """
    from importlib.resources import files

    docs = sorted((f for f in files("sklearn.datasets.descr").iterdir() if f.name.endswith(".rst")),
                  key=lambda f: f.name)
    text = " ".join(re.sub(r"\s+", " ", f.read_text(encoding="utf-8").lower()) for f in docs)
    chars = sorted(set(text))
    return torch.tensor([chars.index(c) for c in text], dtype=torch.long), len(chars), int(0.9 * len(text))


def char_lm(name="charlm", d=16, length=16, layers=1, steps=100, batch=16, seed=4) -> Task:
    """A causal transformer (``layers`` blocks of :func:`_block`, learned positions) predicting
    the next character of English text (:func:`english_text`): the paper's language-model regime
    in miniature. Batches are random windows of the first 90% of the text; the held-out loss is
    on 64 windows of the last 10%. Rare characters leave rows of the embedding table with
    exactly-zero gradient.

    Example:
        >>> task = char_lm()
        >>> task.shapes["pos"], task.shapes["qkv0"], task.steps
        ((16, 16), (16, 48), 100)
        >>> task.train_loss(task.unflatten(task.init_params(2)), 1).shape
        torch.Size([2])
    """
    ids, vocab, split = english_text()
    train, val = ids[:split], ids[split:]
    gen = torch.Generator().manual_seed(seed)
    window = torch.arange(length + 1)
    train_windows = train[torch.randint(0, len(train) - length - 1, (steps, batch, 1), generator=gen) + window]
    val_windows = val[torch.linspace(0, len(val) - length - 2, 64).long()[:, None] + window]
    shapes = {"emb": (vocab, d), "pos": (length, d)}
    for i in range(layers):
        shapes |= {f"qkv{i}": (d, 3 * d), f"o{i}": (d, d), f"m1_{i}": (d, 2 * d), f"m2_{i}": (2 * d, d)}
    shapes["out"] = (d, vocab)
    future = causal_mask(length)

    def init(gen):
        return {n: _normal(gen, *s, std=1.0 if n in ("emb", "pos") else 1 / math.sqrt(s[0]))
                for n, s in shapes.items()}

    def loss(p, windows):
        x, y = windows[:, :-1], windows[:, 1:]
        kk, n = p["emb"].shape[0], x.shape[0]
        h = (p["emb"][:, x] + p["pos"][:, None]).reshape(kk, n * length, d)
        for i in range(layers):
            h = _block(h, p[f"qkv{i}"], p[f"o{i}"], p[f"m1_{i}"], p[f"m2_{i}"], length, future)
        return _cross_entropy(torch.bmm(h, p["out"]), y.reshape(-1))

    return Task(name, f"{layers}-layer causal transformer (d={d}, context {length}) on English text, "
                f"{vocab} characters", shapes, init, loss, lambda t: train_windows[t - 1], val_windows, steps)


# --- the registry -------------------------------------------------------------------------------
FACTORIES: dict[str, Callable[[], Task]] = {
    "quadratic": partial(quadratic),
    "logreg": partial(logreg),
    "embedding": partial(embedding),
    "mlp": partial(mlp),
    "transformer": partial(transformer),
    "quadratic_large": partial(quadratic, name="quadratic_large", shapes={"a": (20, 40), "b": (200,)},
                               kappa=1e4, steps=300, seed=10),
    "logreg_large": partial(logreg, name="logreg_large", steps=250),
    "embedding_large": partial(embedding, name="embedding_large", vocab=1000, d=16, length=10, classes=8,
                               steps=300, batch=64, seed=13),
    "mlp_large": partial(mlp, name="mlp_large", widths=(64, 64), steps=200, batch=64),
    "transformer_large": partial(transformer, name="transformer_large", vocab=12, length=12, d=24, steps=120,
                                 batch=32, seed=12),
    "conv_large": lambda: conv("conv_large", channels=(8, 8), steps=100),
    "lowrank_ae": lowrank_ae,
    "lowrank_ae_large": lambda: lowrank_ae("lowrank_ae_large", d=64, rank=8, steps=300, seed=21),
    "sparse_ae": partial(sparse_ae),
    "sparse_ae_large": partial(sparse_ae, name="sparse_ae_large", d=48, rank=6, hidden=24, code=8, steps=200,
                               seed=31),
    "charlm": char_lm,
    "charlm_large": lambda: char_lm("charlm_large", d=24, length=24, layers=2, steps=150, batch=16, seed=14),
    **{f"transformer_{t}": (lambda t=t: transformer(f"transformer_{t}", target=t)) for t in TARGETS
       if t != "mirror_add"},
}
PROXY_TASKS = ("quadratic", "logreg", "embedding", "mlp", "transformer")  # cheapest first (hurdles)
#: Of the default proxies, trained as a hurdle only (a candidate that fails it or scores below the
#: hurdle there stops) and left out of the fitness: over 48 rules trained on a real breast-cancer
#: MLP, 107 on a digits autoencoder and 36 on a character LM, its score ranked them against the
#: real tasks (Spearman -0.70, +0.09, -0.23); in two 10-minute discovery runs without it every
#: winner beat tuned AdamW held out (+0.154 to +0.229; +0.035 to +0.249 with it), and the real
#: autoencoder by more (docs/search.md).
HURDLE_ONLY = ("logreg",)
#: Held out of a search on the default proxies beside their larger versions: an architecture and a loss
#: they do not contain (a convnet; an autoencoder's squared error, which tells which rules train a real
#: autoencoder: docs/search.md, "The fitness").
UNSEEN_KINDS = ("conv_large", "sparse_ae_large")
META_TASKS = tuple(f"{t}_large" for t in PROXY_TASKS) + UNSEEN_KINDS


def meta_tasks_for(tasks) -> tuple[str, ...]:
    """The held-out tasks for a search on ``tasks``: the larger version of each proxy (those that
    have one and that are not proxies themselves: a task the search trains on is not held out),
    plus :data:`UNSEEN_KINDS` when the proxies are the default ones.

    Example:
        >>> meta_tasks_for(["mlp", "charlm", "transformer_sort"])
        ('mlp_large', 'charlm_large')
        >>> meta_tasks_for(["quadratic", "quadratic_large", "logreg"])
        ('logreg_large',)
        >>> meta_tasks_for(PROXY_TASKS)[-3:]
        ('transformer_large', 'conv_large', 'sparse_ae_large')
    """
    tasks = tuple(tasks)
    extra = UNSEEN_KINDS if tasks == PROXY_TASKS else ()
    larger = ("{}_large{}{}".format(*t.partition("@")) for t in tasks)
    return tuple(t for t in larger if t.partition("@")[0] in FACTORIES and t not in tasks) + extra


def proxy_of(meta_task: str) -> str | None:
    """The proxy whose larger version ``meta_task`` is (``mlp_large`` -> ``mlp``), if any.

    Example:
        >>> proxy_of("mlp_large"), proxy_of("conv_large"), proxy_of("mlp")
        ('mlp', None, None)
    """
    base, at, factor = meta_task.partition("@")
    name = base.removesuffix("_large")
    return name + at + factor if name != base and name in FACTORIES else None


MAX_BATCH_FACTOR = 1024  # (the digits tasks then draw 131,072 rows a step: more is a typo, not a regime)


def at_batch(name: str) -> Callable[[], Task] | None:
    """The factory of ``NAME@F``: built-in task NAME with F times its minibatch (the noisy
    quadratic, whose gradient noise stands for a minibatch's, with that noise / sqrt(F)), as the
    Lion paper's batch sizes are to ours; None where ``name`` is no such task (F from 1 to
    ``MAX_BATCH_FACTOR``).

    Example:
        >>> at_batch("mlp@64")().name, at_batch("conv_large@4"), at_batch("mlp@0"), at_batch("mlp@5000")
        ('mlp@64', None, None, None)
        >>> at_batch("mlp@" + "9" * 5000)  # (int() refuses 4,300 digits: not asked)
    """
    base, _, factor = name.partition("@")
    made = FACTORIES.get(base)
    if not factor.isascii() or not factor.isdigit() or len(factor) > 9 or not 1 <= int(factor) <= MAX_BATCH_FACTOR:
        return None
    if not isinstance(made, partial):
        return None
    defaults = {k: p.default for k, p in inspect.signature(made.func).parameters.items()}
    keywords = {**defaults, **made.keywords, "name": name}
    if "batch" in keywords:
        keywords["batch"] *= int(factor)
    else:
        keywords["noise"] /= math.sqrt(int(factor))
    return partial(made.func, **keywords)


def is_task(name: str) -> bool:
    """Is ``name`` a built-in task, or one at a larger batch (:func:`at_batch`)?

    Example:
        >>> is_task("mlp"), is_task("mlp_large@16"), is_task("mlp@x")
        (True, True, False)
    """
    return name in FACTORIES or at_batch(name) is not None


@cache
def get_task(name: str) -> Task:
    """The task called ``name`` (built once per process): a built-in one, or a user task given by
    reference, ``path/to/file.py:function`` (:func:`search.user_task.load_task`).

    Example:
        >>> get_task("mlp_large").description
        'ReLU MLP 64-64-64-10 on digits, zero-initialised output'
        >>> get_task("mlp") is get_task("mlp")
        True
    """
    from .user_task import is_reference, load_task  # user tasks build on this module

    if is_reference(name):
        return load_task(name)
    factory = FACTORIES.get(name) or at_batch(name)
    if factory is None:
        raise KeyError(f"unknown task {name!r}; choose from {', '.join(FACTORIES)} (or NAME@F: F times "
                       "its batch)")
    return factory()
