"""Projections onto convex cones and the derivatives of those projections.

Every cone class acts on a stack ``x`` of shape ``(k, d)``: k cones of one kind and one size,
handled with array operations (no Python loop over cones). `ProductCone` walks the offsets of a
product-cone vector once, groups its blocks by kind (and by size for second-order and PSD
cones), and then projects or differentiates each group in one call.

Conventions, shared with SCS, Clarabel and cvxpy and used by the whole package:

* `CONE_ORDER`: blocks appear in a product-cone vector as zero, nonnegative, second-order,
  PSD, exponential, dual exponential, power (SCS's order).
* Second-order cone: ``(t, x)`` with ``||x|| <= t``.
* PSD cone (`PSD_TRIANGLE_KIND`): a symmetric n x n matrix is stored as its lower triangle,
  column by column, off-diagonal entries scaled by sqrt(2), so that the dot product of two
  vectors equals the trace inner product of the matrices (`svec`, `smat`). Clarabel stores the
  upper triangle instead; `psd_svec_permutation` converts.
* Exponential cone (`EXP_CONE_ORDER`): closure of {(x, y, z): y > 0, y exp(x/y) <= z}; dual:
  {(u, v, w): u < 0, -u exp(v/u) <= e w} ∪ {(0, v, w): v, w >= 0}.
* Power cone, alpha in (0, 1): {(x, y, z): x^alpha y^(1-alpha) >= |z|, x, y >= 0}; dual:
  {(u, v, w): (u/alpha)^alpha (v/(1-alpha))^(1-alpha) >= |w|, u, v >= 0}.
* Duals are projected with Moreau's decomposition, Pi_K*(v) = v + Pi_K(-v), so their
  derivative is I - DPi_K(-v).

Where a projection is not differentiable (on the boundary between two regions) the derivative
returned is a one-sided one: the identity on the boundary of K (1 at a zero entry of the
nonnegative cone, zero eigenvalues count as nonnegative), zero on the boundary of the polar cone
-K*, and for the power cone at z = 0 the limit as z -> 0. Each is an element of the generalized
Jacobian, finite and symmetric, so `ProjectionDerivative.T` is the operator itself.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

Array: TypeAlias = npt.NDArray[np.float64]
Index: TypeAlias = npt.NDArray[np.intp]
Mask: TypeAlias = npt.NDArray[np.bool_]

CONE_ORDER: tuple[str, ...] = ("zero", "nonneg", "soc", "psd", "exp", "exp_dual", "power")
PSD_TRIANGLE_KIND = "lower"  # SCS: lower triangle, column-major, off-diagonals times sqrt(2)
EXP_CONE_ORDER: tuple[int, int, int] = (0, 1, 2)  # (x, y, z) with y exp(x/y) <= z, as cvxpy
_SQRT2 = float(np.sqrt(2.0))
_BISECTION_STEPS = 300  # ample: every bracket reaches float resolution in far fewer


def _is_count(n: object) -> bool:
    return isinstance(n, (int, np.integer)) and not isinstance(n, bool) and bool(n >= 0)


@dataclass(frozen=True)
class ConeDims:
    """Sizes of the cones of a product cone, field by field in `CONE_ORDER` (SCS's cone dict).

    ``soc`` holds the size of each second-order cone, ``psd`` the matrix order n of each PSD
    cone (its block has n(n+1)/2 entries), ``power`` the exponent of each power cone.
    """

    zero: int = 0
    nonneg: int = 0
    soc: tuple[int, ...] = ()
    psd: tuple[int, ...] = ()
    exp: int = 0
    exp_dual: int = 0
    power: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name, n in (("zero", self.zero), ("nonneg", self.nonneg), ("exp", self.exp),
                        ("exp_dual", self.exp_dual)):
            if not _is_count(n):
                raise ValueError(f"ConeDims.{name} must be a non-negative int, got {n!r}.")
        for name, sizes in (("soc", self.soc), ("psd", self.psd)):
            if not isinstance(sizes, tuple) or not all(_is_count(s) and s >= 1 for s in sizes):
                raise ValueError(f"ConeDims.{name} must be a tuple of ints >= 1, got {sizes!r}.")
        if not isinstance(self.power, tuple) or not all(
            isinstance(a, (float, np.floating)) and 0.0 < a < 1.0 for a in self.power
        ):
            raise ValueError(f"ConeDims.power must be a tuple of floats in (0, 1), "
                             f"got {self.power!r}.")

    @property
    def size(self) -> int:
        """Length of a vector of the product cone."""
        return int(self.zero + self.nonneg + sum(self.soc) + sum(n * (n + 1) // 2 for n in self.psd)
                   + 3 * (self.exp + self.exp_dual + len(self.power)))


def _lower(n: int) -> tuple[Index, Index]:
    """Rows and columns of the lower triangle of an n x n matrix, column by column."""
    cols, rows = np.triu_indices(n)
    return rows, cols


def _psd_order(d: int) -> int:
    n = round((np.sqrt(8 * d + 1) - 1) / 2)
    if n * (n + 1) // 2 != d:
        raise ValueError(f"A PSD block has n(n+1)/2 entries; got a block of {d} entries.")
    return n


def svec(X: npt.ArrayLike) -> Array:
    """Vectorise symmetric matrices (leading axes batch) in the SCS convention of this module."""
    X = np.asarray(X, dtype=float)
    rows, cols = _lower(X.shape[-1])
    return X[..., rows, cols] * np.where(rows == cols, 1.0, _SQRT2)


def smat(v: npt.ArrayLike) -> Array:
    """Inverse of `svec`: the symmetric matrices stored in ``v`` (leading axes batch)."""
    v = np.asarray(v, dtype=float)
    n = _psd_order(v.shape[-1])
    rows, cols = _lower(n)
    w = v / np.where(rows == cols, 1.0, _SQRT2)
    X = np.zeros(v.shape[:-1] + (n, n))
    X[..., rows, cols] = w
    X[..., cols, rows] = w
    return X


def psd_svec_permutation(n: int) -> Index:
    """Indices ``perm`` with ``v_clarabel = v_scs[perm]`` for one PSD block of order n.

    Clarabel stores the upper triangle column by column (same sqrt(2) scaling); its entry (i, j),
    i <= j, is the mirror of SCS's lower entry (j, i). The inverse is ``np.argsort(perm)``.
    """
    rows, cols = _lower(n)
    position = np.empty((n, n), dtype=np.intp)
    position[rows, cols] = np.arange(rows.size)
    upper_cols, upper_rows = np.tril_indices(n)  # Clarabel's (upper_rows, upper_cols) in order
    return position[upper_cols, upper_rows]


def scs_to_clarabel_permutation(dims: ConeDims) -> Index:
    """Permutation ``perm`` of a whole product-cone vector: ``v_clarabel = v_scs[perm]``."""
    perm = np.arange(dims.size)
    offset = dims.zero + dims.nonneg + sum(dims.soc)
    for n in dims.psd:
        d = n * (n + 1) // 2
        perm[offset:offset + d] = offset + psd_svec_permutation(n)
        offset += d
    return perm


# ---------------------------------------------------------------- derivative operators

def _eye_stack(k: int, d: int) -> Array:
    return np.broadcast_to(np.eye(d), (k, d, d))


class AbstractBlockOperator(abc.ABC):
    """k square d x d blocks of DPi, one per cone of a group; acts on stacks (k, d, m)."""

    @abc.abstractmethod
    def mv(self, dx: Array) -> Array:
        """Apply each block to its slice: (k, d, m) -> (k, d, m)."""

    @abc.abstractmethod
    def as_matrices(self) -> Array:
        """The blocks as a dense (k, d, d) array."""


@dataclass(frozen=True, eq=False)
class DiagonalBlocks(AbstractBlockOperator):
    """Diagonal blocks (zero, free and nonnegative cones): ``diag`` is (k, d)."""

    diag: Array

    def mv(self, dx: Array) -> Array:
        return self.diag[:, :, None] * dx

    def as_matrices(self) -> Array:
        return self.diag[:, :, None] * np.eye(self.diag.shape[1])


@dataclass(frozen=True, eq=False)
class DenseBlocks(AbstractBlockOperator):
    """Dense blocks (exponential and power cones and their duals): ``J`` is (k, d, d)."""

    J: Array

    def mv(self, dx: Array) -> Array:
        return self.J @ dx

    def as_matrices(self) -> Array:
        return self.J


@dataclass(frozen=True, eq=False)
class SOCBlocks(AbstractBlockOperator):
    """Second-order cone blocks [[p, q xbar^T], [q xbar, c I + e xbar xbar^T]], all (k,) but xbar.

    This covers the three regions (p=c=1, q=e=0 inside; all zero in the polar; else the
    rank-one-corrected middle formula) and costs O(kd) per product instead of O(kd^2).
    """

    p: Array
    q: Array
    c: Array
    e: Array
    xbar: Array

    def mv(self, dx: Array) -> Array:
        dt, dxs = dx[:, :1, :], dx[:, 1:, :]
        s = np.einsum("ki,kim->km", self.xbar, dxs)[:, None, :]
        xb = self.xbar[:, :, None]
        top = self.p[:, None, None] * dt + self.q[:, None, None] * s
        rest = (self.q[:, None, None] * xb * dt + self.c[:, None, None] * dxs
                + self.e[:, None, None] * xb * s)
        return np.concatenate([top, rest], axis=1)

    def as_matrices(self) -> Array:
        return self.mv(_eye_stack(self.p.shape[0], self.xbar.shape[1] + 1))


@dataclass(frozen=True, eq=False)
class PSDBlocks(AbstractBlockOperator):
    """PSD blocks: dX -> V (B o (V^T dX V)) V^T in svec coordinates, V the eigenvectors."""

    V: Array
    B: Array

    def mv(self, dx: Array) -> Array:
        V, Vt = self.V[:, None], np.swapaxes(self.V, 1, 2)[:, None]
        inner = self.B[:, None] * (Vt @ smat(np.swapaxes(dx, 1, 2)) @ V)  # (k, m, n, n)
        return np.swapaxes(svec(V @ inner @ Vt), 1, 2)

    def as_matrices(self) -> Array:
        # W diag(b) W^T: W's columns are the svec of the orthonormal basis (v_i v_j^T + v_j v_i^T)
        # / sqrt(2), i > j, and v_i v_i^T of symmetric matrices; b the matching entries of B.
        rows, cols = _lower(self.V.shape[1])
        diag = rows == cols
        Va, Vb = self.V[:, rows, :], self.V[:, cols, :]  # rows a and b of each svec entry (a, b)
        W = Va[:, :, rows] * Vb[:, :, cols] + Va[:, :, cols] * Vb[:, :, rows]
        W *= np.where(diag, 1.0, _SQRT2)[:, None] / np.where(diag, 2.0, _SQRT2)
        return (W * self.B[:, rows, cols][:, None, :]) @ np.swapaxes(W, 1, 2)


@dataclass(frozen=True, eq=False)
class ProjectionDerivative:
    """DPi at a point of a product cone: a symmetric block-diagonal linear operator.

    ``blocks`` pairs each group's block operator with the (k, d) positions of its cones.
    """

    size: int
    blocks: tuple[tuple[AbstractBlockOperator, Index], ...]

    def mv(self, dv: npt.ArrayLike) -> Array:
        """DPi dv for dv of shape (size,) or (size, m)."""
        dv = np.asarray(dv, dtype=float)
        if dv.ndim not in (1, 2) or dv.shape[0] != self.size:
            raise ValueError(f"Expected an array of shape ({self.size},) or ({self.size}, m), "
                             f"got shape {dv.shape}.")
        columns = dv.reshape(self.size, -1)
        out = np.zeros_like(columns)
        for op, idx in self.blocks:
            out[idx] = op.mv(columns[idx])
        return out.reshape(dv.shape)

    @property
    def T(self) -> ProjectionDerivative:
        """The transpose; DPi is symmetric (a projection onto a convex set is a gradient)."""
        return self

    def as_matrix(self) -> sp.csc_array:
        """The operator as a sparse block-diagonal matrix with the same action as `mv`."""
        rows, cols, vals = [np.zeros(0, np.intp)], [np.zeros(0, np.intp)], [np.zeros(0)]
        for op, idx in self.blocks:
            J = op.as_matrices()
            rows.append(np.broadcast_to(idx[:, :, None], J.shape).ravel())
            cols.append(np.broadcast_to(idx[:, None, :], J.shape).ravel())
            vals.append(J.ravel())
        matrix = sp.coo_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                              shape=(self.size, self.size)).tocsc()
        matrix.eliminate_zeros()
        return matrix


# ---------------------------------------------------------------- cones with closed forms

class AbstractCone(abc.ABC):
    """A cone kind. Methods take a stack x of shape (k, d): k cones of this kind and size d."""

    @abc.abstractmethod
    def project(self, x: Array) -> Array:
        """Euclidean projection of each row onto the cone, shape (k, d)."""

    @abc.abstractmethod
    def dproject(self, x: Array) -> AbstractBlockOperator:
        """Derivative of `project` at x, one d x d block per row."""

    @abc.abstractmethod
    def dual(self) -> AbstractCone:
        """The dual cone K* = {y : <y, x> >= 0 for all x in K}."""


def _moreau_dproject(primal: AbstractCone, x: Array) -> DenseBlocks:
    """Derivative of Pi_K*(x) = x + Pi_K(-x): I - DPi_K(-x)."""
    return DenseBlocks(np.eye(x.shape[1]) - primal.dproject(-x).as_matrices())


@dataclass(frozen=True)
class ZeroCone(AbstractCone):
    """The cone {0} (equality constraints)."""

    def project(self, x: Array) -> Array:
        return np.zeros_like(x)

    def dproject(self, x: Array) -> DiagonalBlocks:
        return DiagonalBlocks(np.zeros_like(x))

    def dual(self) -> FreeCone:
        return FreeCone()


@dataclass(frozen=True)
class FreeCone(AbstractCone):
    """The whole space, dual of the zero cone."""

    def project(self, x: Array) -> Array:
        return x.copy()

    def dproject(self, x: Array) -> DiagonalBlocks:
        return DiagonalBlocks(np.ones_like(x))

    def dual(self) -> ZeroCone:
        return ZeroCone()


@dataclass(frozen=True)
class NonnegativeCone(AbstractCone):
    """The nonnegative orthant; self-dual. At 0 the derivative is 1 (the side of K)."""

    def project(self, x: Array) -> Array:
        return np.maximum(x, 0.0)

    def dproject(self, x: Array) -> DiagonalBlocks:
        return DiagonalBlocks((x >= 0).astype(float))

    def dual(self) -> NonnegativeCone:
        return self


def _soc_parts(x: Array) -> tuple[Array, Array, Array, Array, Array]:
    """t, the rest, its norm r, and masks of the inside (r <= t) and the middle (|t| < r)."""
    t, rest = x[:, 0], x[:, 1:]
    r = np.linalg.norm(rest, axis=1)
    inside = r <= t
    return t, rest, r, inside, ~inside & (r > -t)


@dataclass(frozen=True)
class SecondOrderCone(AbstractCone):
    """{(t, x): ||x|| <= t}; self-dual."""

    def project(self, x: Array) -> Array:
        t, rest, r, inside, middle = _soc_parts(x)
        scale = np.where(middle, (t + r) / (2 * np.where(middle, r, 1.0)), 0.0)
        out = np.concatenate([(scale * r)[:, None], scale[:, None] * rest], axis=1)
        return np.where(inside[:, None], x, out)

    def dproject(self, x: Array) -> SOCBlocks:
        t, rest, r, inside, middle = _soc_parts(x)
        rs = np.where(middle, r, 1.0)
        half = np.where(middle, 0.5, 0.0)
        one = inside.astype(float)
        return SOCBlocks(p=one + half, q=half, c=one + half * (1 + t / rs), e=-half * t / rs,
                         xbar=rest / rs[:, None])

    def dual(self) -> SecondOrderCone:
        return self


@dataclass(frozen=True)
class PSDCone(AbstractCone):
    """Symmetric positive semidefinite matrices in `svec` form; self-dual."""

    def project(self, x: Array) -> Array:
        lam, V = np.linalg.eigh(smat(x))
        return svec((V * np.maximum(lam, 0.0)[:, None, :]) @ np.swapaxes(V, 1, 2))

    def dproject(self, x: Array) -> PSDBlocks:
        # Divided differences of max(., 0) over eigenvalue pairs, written without cancellation:
        # 1 if both >= 0, 0 if both < 0, else lam_+ / (|lam_i| + |lam_j|).
        lam, V = np.linalg.eigh(smat(x))
        pos = lam >= 0
        li, lj = lam[:, :, None], lam[:, None, :]
        both, neither = pos[:, :, None] & pos[:, None, :], ~pos[:, :, None] & ~pos[:, None, :]
        denom = np.where(both | neither, 1.0, np.abs(li) + np.abs(lj))
        mixed = (np.maximum(li, 0) + np.maximum(lj, 0)) / denom
        return PSDBlocks(V=V, B=np.where(both, 1.0, np.where(neither, 0.0, mixed)))

    def dual(self) -> PSDCone:
        return self


# ---------------------------------------------------------------- exponential cone

def _solve(J: Array, B: Array) -> Array:
    """J^-1 B for stacks of small matrices; the pseudo-inverse only if some J is singular."""
    try:
        return np.asarray(np.linalg.solve(J, B), dtype=np.float64)
    except np.linalg.LinAlgError:
        return np.asarray(np.linalg.pinv(J) @ B, dtype=np.float64)


def _exp_regions(v: Array) -> tuple[Mask, Mask, Mask, Mask]:
    """Masks: v in K, in the polar -K*, under the face rule (x <= 0, y <= 0), and the rest."""
    r, s, t = v.T
    with np.errstate(divide="ignore", invalid="ignore"):
        in_k = ((s > 0) & (t > 0) & (r <= s * np.log(t / s))) | ((r <= 0) & (s == 0) & (t >= 0))
        in_polar = ((r > 0) & (t < 0) & (s <= r * (1 + np.log(-t / r)))) | (
            (r == 0) & (s <= 0) & (t <= 0))
    in_polar &= ~in_k
    face = (r <= 0) & (s <= 0) & ~in_k & ~in_polar
    return in_k, in_polar, face, ~(in_k | in_polar | face)


def _exp_rho(r: Array, s: Array, t: Array) -> Array:
    """Root rho = x/y of the projection's ray, by bisection (Friberg 2021's univariate problem).

    The projection is p = sigma a(rho), a = (rho, 1, e^rho), and v - p = mu b(rho) with
    b = (1, 1 - rho, -e^-rho); a and b are orthogonal, so v lies in their span: rho is the root of
    h(rho) = <v, a x b>, increasing where sigma, mu > 0. sigma > 0 and mu > 0 give
    1 - y/x < rho < x/y; when one side is unbounded, |p| <= |v| (or |v - p| <= |v|) gives the
    logarithmic bound used below. h is scaled by e^-|rho| so nothing overflows.
    """
    norm = np.sqrt(r * r + s * s + t * t)
    with np.errstate(divide="ignore", invalid="ignore"):
        far_lo = -np.maximum(np.maximum(2 * np.abs(r / s), 1.0), 2 * np.log(6 * norm / s))
        lo = np.where(r > 0, 1 - s / r, far_lo)
        hi = np.where(s > 0, r / s, np.maximum(2 * lo, 2 * np.log(2 * norm / r)))
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        m = np.abs(mid)
        h = (((mid - 1) * r + s) * np.exp(mid - m) - (r - mid * s) * np.exp(-mid - m)
             - (mid * (mid - 1) + 1) * t * np.exp(-m))
        done = hi - lo <= 1e-15 * (1 + np.abs(mid))  # per row, so results ignore the batch
        if np.all(done):
            break
        lo, hi = np.where(~done & (h < 0), mid, lo), np.where(~done & (h >= 0), mid, hi)
    return 0.5 * (lo + hi)


def _ray_family_derivative(v: Array, a: Array, da: Array, b: Array, db: Array) -> Array:
    """DPi at rows v whose projection lies on a smooth one-parameter family of boundary rays.

    a(theta) spans a ray of K and b(theta) the outward normal there (a . b = 0); da, db are their
    theta-derivatives, each pair scaled by any positive factor. With unit rays,
    v = alpha a + beta b, so dv = [a, b, alpha a' + beta b'] d(alpha, beta, theta) and
    dp = [a, 0, alpha a'] d(alpha, beta, theta). Only unit vectors and |v| enter, so this stays
    well conditioned as alpha -> 0 or beta -> 0 (next to the polar cone or to K).
    """
    na, nb = np.linalg.norm(a, axis=1, keepdims=True), np.linalg.norm(b, axis=1, keepdims=True)
    a, da, b, db = a / na, da / na, b / nb, db / nb
    da = da - a * np.sum(a * da, axis=1, keepdims=True)  # derivative of the unit vector
    db = db - b * np.sum(b * db, axis=1, keepdims=True)
    alpha = np.maximum(np.sum(v * a, axis=1), 0.0)[:, None]
    beta = np.maximum(np.sum(v * b, axis=1), 0.0)[:, None]
    J = np.stack([a, b, alpha * da + beta * db], axis=2)
    N = np.stack([a, np.zeros_like(a), alpha * da], axis=2)
    D = np.swapaxes(_solve(np.swapaxes(J, 1, 2), np.swapaxes(N, 1, 2)), 1, 2)  # N J^-1
    return 0.5 * (D + np.swapaxes(D, 1, 2))


def _exp_rays(rho: Array) -> tuple[Array, Array, Array, Array]:
    """a = (rho, 1, e^rho), b = (1, 1 - rho, -e^-rho) and their derivatives, overflow-free.

    Each pair is scaled by e^-rho (a, for rho > 0) or e^rho (b, for rho < 0).
    """
    g, o, z = np.exp(-np.abs(rho)), np.ones_like(rho), np.zeros_like(rho)
    up = (rho > 0)[:, None]
    a = np.where(up, np.stack([rho * g, g, o], 1), np.stack([rho, o, g], 1))
    da = np.where(up, np.stack([g, z, o], 1), np.stack([o, z, g], 1))
    b = np.where(up, np.stack([o, 1 - rho, -g], 1), np.stack([g, (1 - rho) * g, -o], 1))
    db = np.where(up, np.stack([z, -o, g], 1), np.stack([z, -g, o], 1))
    return a, da, b, db


@dataclass(frozen=True)
class ExponentialCone(AbstractCone):
    """closure{(x, y, z): y > 0, y exp(x/y) <= z}; x must be (k, 3)."""

    def project(self, x: Array) -> Array:
        in_k, _, face, generic = _exp_regions(x)
        p = np.zeros_like(x)
        p[in_k] = x[in_k]
        p[face, 0], p[face, 2] = x[face, 0], np.maximum(x[face, 2], 0)
        # onto the ray a(rho), so that p lies in K exactly
        a = _exp_rays(_exp_rho(*x[generic].T))[0]
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        p[generic] = np.maximum(np.sum(x[generic] * a, axis=1), 0.0)[:, None] * a
        return p

    def dproject(self, x: Array) -> DenseBlocks:
        in_k, _, face, generic = _exp_regions(x)
        D = np.zeros(x.shape + (3,))
        D[in_k] = np.eye(3)
        D[face, 0, 0], D[face, 2, 2] = 1.0, x[face, 2] >= 0
        D[generic] = _ray_family_derivative(x[generic], *_exp_rays(_exp_rho(*x[generic].T)))
        return DenseBlocks(D)

    def dual(self) -> DualExponentialCone:
        return DualExponentialCone()


@dataclass(frozen=True)
class DualExponentialCone(AbstractCone):
    """{(u, v, w): u < 0, -u exp(v/u) <= e w} ∪ {(0, v, w): v, w >= 0}; via Moreau."""

    def project(self, x: Array) -> Array:
        return x + ExponentialCone().project(-x)

    def dproject(self, x: Array) -> DenseBlocks:
        return _moreau_dproject(ExponentialCone(), x)

    def dual(self) -> ExponentialCone:
        return ExponentialCone()


# ---------------------------------------------------------------- power cone

def _pow_coordinate(r: Array, x0: Array, w0: Array, a: Array) -> Array:
    """x solving x^2 - x0 x - a r (w0 - r) = 0, x >= 0, without cancellation when x0 < 0."""
    c = a * r * (w0 - r)
    root = np.sqrt(x0 * x0 + 4 * c)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x0 >= 0, 0.5 * (x0 + root), np.where(c > 0, 2 * c / (root - x0), 0.0))


def _pow_regions(v: Array, a: Array) -> tuple[Mask, Mask, Mask, Mask]:
    """Masks: v in K, in the polar -K*, z = 0 (else), and the rest."""
    x0, y0, z0 = v.T
    with np.errstate(invalid="ignore"):
        in_k = (x0 >= 0) & (y0 >= 0) & (np.maximum(x0, 0) ** a * np.maximum(y0, 0) ** (1 - a)
                                        >= np.abs(z0))
        in_polar = (x0 <= 0) & (y0 <= 0) & ~in_k & (
            np.maximum(-x0 / a, 0) ** a * np.maximum(-y0 / (1 - a), 0) ** (1 - a) >= np.abs(z0))
    flat = (z0 == 0) & ~in_k & ~in_polar  # by symmetry in z: project onto (x, y) >= 0
    return in_k, in_polar, flat, ~(in_k | in_polar | flat)


def _pow_solve(v: Array, a: Array) -> tuple[Array, Array, Array]:
    """x, y and z of the projection for z != 0 outside K and its polar (Hien 2015).

    With r = |z| of the projection and w0 = |z0|, stationarity gives x(r), y(r) as roots of
    x^2 - x0 x - a r (w0 - r) = 0 (and 1 - a for y); r in (0, w0) is the unique root of
    phi(r) = x^a y^(1-a) - r, found by bisection keeping phi(lo) >= 0 so the result lies in K.
    """
    x0, y0, z0 = v.T
    w0 = np.abs(z0)
    lo, hi = np.zeros_like(w0), w0.copy()
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        x, y = _pow_coordinate(mid, x0, w0, a), _pow_coordinate(mid, y0, w0, 1 - a)
        feasible = x**a * y ** (1 - a) >= mid
        done = hi - lo <= 1e-15 * hi
        if np.all(done):
            break
        lo, hi = np.where(~done & feasible, mid, lo), np.where(~done & ~feasible, mid, hi)
    return _pow_coordinate(lo, x0, w0, a), _pow_coordinate(lo, y0, w0, 1 - a), np.sign(z0) * lo


def _pow_derivative(v: Array, a: Array) -> Array:
    """Derivative at generic rows: that of a projection onto a family of boundary rays.

    The ray through p is (t, 1 - t, g) with t = x / (x + y), g = t^a (1 - t)^(1 - a), its normal
    (-a g/t, -(1 - a) g/(1 - t), 1) (z negated below the plane); theta = log(t / (1 - t)) keeps
    every derivative bounded. t is accurate even where r is not: next to the polar cone r is
    tiny and ill-determined, but x / y tends to a limit.
    """
    x, y, _ = _pow_solve(v, a)
    sign = np.where(v[:, 2] < 0, -1.0, 1.0)
    t = np.clip(np.divide(x, x + y, out=np.full_like(x, 0.5), where=x + y > 0), 1e-300,
                1 - 1e-16)
    g_t, g_1t = ((1 - t) / t) ** (1 - a), (t / (1 - t)) ** a  # g/t, g/(1-t)
    g, o, zero = t * g_t, np.ones_like(t), np.zeros_like(t)
    ray = np.stack([t, 1 - t, sign * g], 1)
    dray = np.stack([t * (1 - t), -t * (1 - t), sign * g * (a - t)], 1)
    normal = np.stack([-a * g_t, -(1 - a) * g_1t, sign * o], 1)
    dnormal = (a * (1 - a))[:, None] * np.stack([g_t, -g_1t, zero], 1)
    return _ray_family_derivative(v, ray, dray, normal, dnormal)


@dataclass(frozen=True, eq=False)
class PowerCone(AbstractCone):
    """{(x, y, z): x^alpha y^(1-alpha) >= |z|, x, y >= 0}; ``alpha`` has one entry per cone."""

    alpha: Array

    def __post_init__(self) -> None:
        alpha = np.asarray(self.alpha, dtype=float)
        if alpha.ndim != 1 or not np.all((alpha > 0) & (alpha < 1)):
            raise ValueError(f"PowerCone.alpha must be a 1-D array in (0, 1), got {self.alpha!r}.")

    def project(self, x: Array) -> Array:
        a = np.asarray(self.alpha, dtype=float)
        in_k, _, flat, generic = _pow_regions(x, a)
        p = np.zeros_like(x)
        p[in_k] = x[in_k]
        p[flat, :2] = np.maximum(x[flat, :2], 0)
        p[generic] = np.stack(_pow_solve(x[generic], a[generic]), 1)
        return p

    def dproject(self, x: Array) -> DenseBlocks:
        a = np.asarray(self.alpha, dtype=float)
        in_k, _, flat, generic = _pow_regions(x, a)
        D = np.zeros(x.shape + (3,))
        D[in_k] = np.eye(3)
        # At z = 0 the limit of the generic derivative as z -> 0: dz/dz0 -> 1, 1/2 or 0 as the
        # exponent of the negative coordinate is below, at or above 1/2.
        D[flat, 0, 0], D[flat, 1, 1] = x[flat, 0] > 0, x[flat, 1] > 0
        exponent = np.where(x[flat, 0] < 0, a[flat], 1 - a[flat])
        D[flat, 2, 2] = np.where(exponent < 0.5, 1.0, np.where(exponent == 0.5, 0.5, 0.0))
        D[generic] = _pow_derivative(x[generic], a[generic])
        return DenseBlocks(D)

    def dual(self) -> DualPowerCone:
        return DualPowerCone(self.alpha)


@dataclass(frozen=True, eq=False)
class DualPowerCone(AbstractCone):
    """{(u, v, w): (u/alpha)^alpha (v/(1-alpha))^(1-alpha) >= |w|, u, v >= 0}; via Moreau."""

    alpha: Array

    def __post_init__(self) -> None:
        PowerCone(self.alpha)  # same validation

    def project(self, x: Array) -> Array:
        return x + PowerCone(self.alpha).project(-x)

    def dproject(self, x: Array) -> DenseBlocks:
        return _moreau_dproject(PowerCone(self.alpha), x)

    def dual(self) -> PowerCone:
        return PowerCone(self.alpha)


# ---------------------------------------------------------------- product cone

Groups: TypeAlias = tuple[tuple[AbstractCone, Index], ...]


def _group(cone: AbstractCone, offset: int, sizes: npt.ArrayLike) -> list[tuple[AbstractCone,
                                                                                   Index]]:
    """Positions of consecutive cones of one kind starting at offset, one group per size."""
    sizes = np.asarray(sizes, dtype=np.intp)
    starts = offset + np.cumsum(sizes) - sizes
    return [(cone, starts[sizes == d][:, None] + np.arange(d)) for d in np.unique(sizes)]


@dataclass(frozen=True, eq=False)
class ProductCone:
    """A product of cones laid out as `ConeDims` says (or its dual when ``is_dual``).

    Build it with `from_dims`; ``groups`` pairs a cone with the (k, d) positions of its k blocks.
    """

    dims: ConeDims
    is_dual: bool
    groups: Groups

    @classmethod
    def from_dims(cls, dims: ConeDims, dual: bool = False) -> ProductCone:
        """The product cone of ``dims`` in `CONE_ORDER`, or its dual cone."""
        layout: tuple[tuple[AbstractCone, list[int]], ...] = (
            (ZeroCone(), [1] * dims.zero), (NonnegativeCone(), [1] * dims.nonneg),
            (SecondOrderCone(), list(dims.soc)), (PSDCone(), [n * (n + 1) // 2 for n in dims.psd]),
            (ExponentialCone(), [3] * dims.exp), (DualExponentialCone(), [3] * dims.exp_dual),
            (PowerCone(np.asarray(dims.power, dtype=float)), [3] * len(dims.power)),
        )
        groups, offset = [], 0
        for cone, sizes in layout:
            groups += _group(cone.dual() if dual else cone, offset, sizes)
            offset += sum(sizes)
        return cls(dims, dual, tuple(groups))

    @property
    def size(self) -> int:
        """Length of a vector of the cone."""
        return self.dims.size

    def _check(self, v: npt.ArrayLike) -> Array:
        v = np.asarray(v, dtype=float)
        if v.shape != (self.size,):
            raise ValueError(f"Expected a vector of shape ({self.size},), got shape {v.shape}.")
        return v

    def project(self, v: npt.ArrayLike) -> Array:
        """Euclidean projection of v onto the cone."""
        v = self._check(v)
        out = np.empty_like(v)
        for cone, idx in self.groups:
            out[idx] = cone.project(v[idx])
        return out

    def dual(self) -> ProductCone:
        """The dual cone: zero <-> free, exp <-> dual exp, power <-> dual power, others self."""
        return ProductCone(self.dims, not self.is_dual,
                           tuple((cone.dual(), idx) for cone, idx in self.groups))

    def dproject(self, v: npt.ArrayLike) -> ProjectionDerivative:
        """Derivative of `project` at v, as a block-diagonal operator."""
        v = self._check(v)
        blocks = tuple((cone.dproject(v[idx]), idx) for cone, idx in self.groups)
        return ProjectionDerivative(self.size, blocks)

    def contains(self, v: npt.ArrayLike, tol: float = 1e-8) -> bool:
        """Whether v is in the cone: ||Pi(v) - v|| <= tol max(1, ||v||)."""
        v = self._check(v)
        return bool(np.linalg.norm(self.project(v) - v) <= tol * max(1.0, float(np.linalg.norm(v))))
