"""Non-negative matrix factorisation in torch, for :func:`cnnviz.concepts`: ``A ~ W H`` with
``A`` (positions x channels), ``W`` (positions x k) and ``H`` (k x channels) all non-negative.

The solver is hierarchical alternating least squares (HALS: Cichocki & Phan 2009; what
scikit-learn's coordinate-descent NMF does), started from NNDSVDa (Boutsidis & Gallopoulos 2008:
the leading singular vectors' positive parts, zeros filled with the mean), so that the same
activations give the same concepts. It runs on the activations' own device (a GPU where the model
is on one) and needs no dependency beyond torch; ``benchmarks/bench_concepts.py`` measures it
against scikit-learn's ``NMF(solver="cd")`` on the same sample (docs/benchmarks.md).

Example::

    >>> import torch
    >>> from cnnviz.analyses.concepts_nmf import factorise, coefficients
    >>> truth = torch.tensor([[1., 1, 0, 0, 0, 1], [0, 0, 1, 1, 1, 0]])        # two directions, 6 channels
    >>> mixing = torch.rand(500, 2, generator=torch.Generator().manual_seed(0))
    >>> fit = factorise(mixing @ truth, 2)
    >>> fit.error < 1e-2                                       # the data has rank 2: reconstructed
    True
    >>> (fit.directions * 3 ** 0.5).round(decimals=1)          # found again (unit length, largest first)
    tensor([[0., 0., 1., 1., 1., 0.],
            [1., 1., 0., 0., 0., 1.]])
    >>> coefficients(mixing[:3] @ truth, fit.directions).shape    # any positions, the directions fixed
    torch.Size([3, 2])
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

#: iterations of the fit at most (each updates every coefficient and every direction once)
FIT_ITERATIONS = 200
#: the fit stops once ten iterations lower the squared error by less than this share of the first's
TOLERANCE = 1e-5
#: iterations of the coefficients of new positions, the directions fixed (a convex problem)
TRANSFORM_ITERATIONS = 40
_TINY = 1e-12


@dataclass(frozen=True)
class Factorisation:
    """``directions`` (k x C, each of unit length), the sample's ``coefficients`` (n x k) and the
    relative reconstruction error ``||A - W H|| / ||A||`` of the sample."""

    directions: torch.Tensor
    coefficients: torch.Tensor
    error: float


def factorise(activations: torch.Tensor, k: int, iterations: int = FIT_ITERATIONS,
              tolerance: float = TOLERANCE) -> Factorisation:
    """The non-negative factorisation of ``activations`` (n x C, non-negative) into ``k`` directions,
    ordered by the activation each explains (largest first). It stops after ``iterations``, or
    once ten iterations lower the squared error by less than ``tolerance`` of the first one's (as
    scikit-learn's NMF does)."""
    a = activations.float()
    w, h = _nndsvda(a, k)
    total = float((a * a).sum())
    first = previous = None
    for iteration in range(iterations):
        projected, gram = a @ h.T, h @ h.T
        w = _hals(projected, gram, w)
        if iteration % 10 == 0:  # ||A - W H||^2 from what the update already has
            error = total - 2 * float((w * projected).sum()) + float(((w.T @ w) * gram).sum())
            if first is None:
                first = error
            elif (previous - error) < tolerance * max(first, _TINY):
                break
            previous = error
        h = _hals((w.T @ a).T, w.T @ w, h.T.contiguous()).T.contiguous()
    length = h.norm(dim=1).clamp_min(_TINY)
    w, h = w * length, h / length[:, None]
    order = torch.argsort(w.sum(0) * h.sum(1), descending=True)  # the activation each explains
    w, h = w[:, order].contiguous(), h[order].contiguous()
    return Factorisation(h, w, relative_error(a, w, h))


def coefficients(activations: torch.Tensor, directions: torch.Tensor,
                 iterations: int = TRANSFORM_ITERATIONS) -> torch.Tensor:
    """The non-negative coefficients (n x k) of ``activations`` (n x C) on fixed ``directions``
    (k x C): non-negative least squares, each position on its own."""
    a, h = activations.float(), directions.float()
    gram = h @ h.T
    projected = a @ h.T
    start = torch.linalg.solve(gram + 1e-6 * torch.eye(len(h), device=h.device, dtype=h.dtype), projected.T).T
    return _hals(projected, gram, start.clamp_min(0), iterations)


def relative_error(a: torch.Tensor, w: torch.Tensor, h: torch.Tensor) -> float:
    """``||A - W H|| / ||A||`` (0 for an all-zero ``A``)."""
    norm = float(a.norm())
    return float((a - w @ h).norm()) / norm if norm > 0 else 0.0


def _hals(projected: torch.Tensor, gram: torch.Tensor, w: torch.Tensor, iterations: int = 1) -> torch.Tensor:
    """HALS updates of ``w`` (n x k) for ``||A - w h||`` given ``projected = A h^T`` and ``gram = h h^T``:
    each column in turn, the exact minimiser with the others fixed, clipped at zero."""
    w = w.clone()
    for _ in range(iterations):
        for j in range(w.shape[1]):
            step = (projected[:, j] - w @ gram[:, j]) / gram[j, j].clamp_min(_TINY)
            w[:, j] = (w[:, j] + step).clamp_min(0)
    return w


def _nndsvda(a: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """NNDSVDa: for each leading singular pair, the sign pattern whose positive parts are larger,
    scaled by the singular value; zeros filled with the mean of ``a`` (so that HALS can move them)."""
    gram = (a.T @ a).double()
    values, vectors = torch.linalg.eigh(gram)  # ascending; deterministic (no random projection)
    order = torch.argsort(values, descending=True)[:k]
    singular = values[order].clamp_min(0).sqrt().float()
    v = vectors[:, order].float()  # C x k
    u = (a @ v) / singular.clamp_min(_TINY)
    w = torch.zeros(a.shape[0], k, device=a.device)
    h = torch.zeros(k, a.shape[1], device=a.device)
    for j in range(min(k, len(singular))):
        x, y = u[:, j], v[:, j]
        xp, xn, yp, yn = x.clamp_min(0), (-x).clamp_min(0), y.clamp_min(0), (-y).clamp_min(0)
        positive = xp.norm() * yp.norm()
        negative = xn.norm() * yn.norm()
        (left, right, size) = (xp, yp, positive) if positive >= negative else (xn, yn, negative)
        scale = (singular[j] * size).sqrt()
        w[:, j] = scale * left / left.norm().clamp_min(_TINY)
        h[j] = scale * right / right.norm().clamp_min(_TINY)
    mean = a.mean().clamp_min(_TINY)
    w = torch.where(w > 0, w, mean)
    h = torch.where(h > 0, h, mean)
    return w, h
