"""The derivative of the cone-program solution map at a solution, as a linear operator.

At a solution (x, y, s) of ``min ½xᵀPx + cᵀx s.t. Ax + s = b, s ∈ K`` write v = y − s, so
that y = Π_K*(v) and s = Π_K*(v) − v (Moreau). The KKT conditions become

    F(u, v) = [ P u + Aᵀ Π_K*(v) + c ;  A u + Π_K*(v) − v − b ] = 0,

and by the implicit function theorem, with D = DΠ_K*(v),

    J [du; dv] = −dF,     J = [[P, Aᵀ D], [A, D − I]],
    dF = [dP x + dAᵀ y + dc ; dA x − db],
    dx = du,  dy = D dv,  ds = D dv − dv.

This is the residual route of DESIGN.md: for P = 0 it agrees with the derivative of the
homogeneous self-dual embedding (Agrawal et al. 2019) wherever the map is differentiable,
and it is exact in P because P enters J and dF as itself. J is square (n + m); it is
never formed for the matrix-free modes. At degenerate points J is singular and the
solve returns the least-squares / minimum-norm answer, flagged ``degenerate``.

The adjoint runs the same chain with Jᵀ (:meth:`KKTOperator.T`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from .._sparse import CACHE_BYTES
from ..cones import ConeDims, ProductCone, ProjectionDerivative
from .lifting import LiftLayout
from .pattern import KKTPattern

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class KKTOperator:
    """J = [[P, Aᵀ D], [A, D − I]] (or its transpose) as a linear operator."""

    P: sp.csc_matrix | None  # full symmetric
    A: sp.csc_matrix  # data in the pattern's order
    D: ProjectionDerivative  # of Π_K* at v
    pattern: KKTPattern
    P_upper_data: FloatArray | None = None
    transposed: bool = False

    n = property(lambda self: int(self.A.shape[1]), doc="variables")
    m = property(lambda self: int(self.A.shape[0]), doc="constraint rows")

    @property
    def in_size(self) -> int:
        return self.n + self.m

    def mv(self, z: FloatArray) -> FloatArray:
        """J z (or Jᵀ z); z may be (n+m,) or (n+m, r). (J̃'s, lifted, by its matrix.)"""
        if self.pattern.extra:
            return self.as_matrix() @ z
        n = self.n
        u, w = z[:n], z[n:]
        Pu = self.P @ u if self.P is not None else np.zeros_like(u)
        if not self.transposed:
            Dw = self.D.mv(w)
            return np.concatenate([Pu + self.A.T @ Dw, self.A @ u + Dw - w])
        # Jᵀ = [[P, Aᵀ], [D A, D − I]]  (P, D symmetric)
        return np.concatenate([Pu + self.A.T @ w, self.D.mv(self.A @ u + w) - w])

    @property
    def T(self) -> KKTOperator:
        return dataclasses.replace(self, transposed=not self.transposed)

    def scalar_blocks(self) -> FloatArray:
        """D_ii where D's block at row i is 1×1 (zero, free and nonnegative cones), NaN
        inside larger blocks."""
        return self.pattern.plan.scalar_values(self.pattern.d_values(self.D))

    def as_matrix(self) -> sp.csc_matrix:
        """The sparse matrix of J (or Jᵀ), for the direct and dense modes (assembled on
        the program's fixed pattern, see :mod:`dpplayers._derivative.pattern`)."""
        J = self.pattern.assemble(self.P_upper_data, self.A.data, self.pattern.d_values(self.D))
        return J.T.tocsc() if self.transposed else J


def kkt_pattern(P_upper: sp.csc_matrix | None, A: sp.csc_matrix, cone: ProductCone) -> KKTPattern:
    """J's pattern for problems shaped like (P, A) — built once per compiled problem."""
    A_cols = np.repeat(np.arange(A.shape[1]), np.diff(A.indptr))
    P_rows = P_cols = None
    if P_upper is not None:
        P_rows = P_upper.indices.astype(np.intp)
        P_cols = np.repeat(np.arange(P_upper.shape[1]), np.diff(P_upper.indptr))
    A_rows = A.indices.astype(np.intp)
    plain = KKTPattern.build(A.shape[1], A.shape[0], A_rows, A_cols, P_rows, P_cols, cone)
    lift = LiftLayout.of(A.shape[1], A.shape[0], A_rows, A_cols, cone)
    if lift is None:
        return plain
    lifted, first = (KKTPattern.build(A.shape[1], A.shape[0], A_rows, A_cols, P_rows, P_cols,
                                      cone, lift, lifted_first) for lifted_first in (False, True))
    # the batched solve takes J̃ where that leaves it the smaller LU (SOC projection's x's
    # are diagonal pivots of J's S, which the lifted rows, first, would displace)
    lu_order = lambda p: p.plan.pairs.reduced_order - p.plan.pairs.diagonal
    batch = first if lu_order(first) < lu_order(plain) else None
    return dataclasses.replace(plain, lifted=lifted, batch_lifted=batch)


def kkt_operator(P_upper: sp.csc_matrix | None, A: sp.csc_matrix, y: FloatArray,
                 s: FloatArray, cones: ConeDims, pattern: KKTPattern | None = None,
                 cone: ProductCone | None = None,
                 D: ProjectionDerivative | None = None) -> KKTOperator:
    """Build J at a solution from the solver's y and s (P given as its upper triangle).

    Pass the program's cached ``pattern`` and dual ``cone`` to skip rebuilding them, and
    ``D`` if DΠ_K*(y − s) is already known."""
    cone = cone if cone is not None else ProductCone.from_dims(cones, dual=True)
    pattern = pattern if pattern is not None else kkt_pattern(P_upper, A, cone)
    P_data = P_upper.data if P_upper is not None else None
    if D is None:  # y = Π_K*(y − s) up to solver accuracy: a root seed
        D = cone.dproject(y - s, near=y)
    return KKTOperator(pattern.full_P(P_data) if P_data is not None else None, A, D, pattern, P_data)


def data_rhs(x: FloatArray, y: FloatArray, dP: FloatArray | None, P_rows, P_cols,
             dA: FloatArray, A_rows, A_cols, db: FloatArray, dc: FloatArray,
             P_off: npt.NDArray[np.intp] | None = None) -> FloatArray:
    """dF = [dP x + dAᵀ y + dc ; dA x − db] for pattern-valued dP (upper) and dA, (n+m, r).

    x (n,) and y (m,) are one solution; or (n, r) and (m, r), one per column (the columns
    of several elements at once). ``P_off``: P's off-diagonal entries, where the caller
    keeps them (else found here)."""
    x, y = (x[:, None], y[:, None]) if x.ndim == 1 else (x, y)
    n, m = x.shape[0], y.shape[0]
    top = dc + _scatter(A_cols, dA * y.take(A_rows, 0), n)
    if dP is not None:
        off = np.flatnonzero(P_rows != P_cols) if P_off is None else P_off
        top = top + _scatter(P_rows, dP * x.take(P_cols, 0), n)
        if off.size:
            top = top + _scatter(P_cols.take(off), dP[off] * x.take(P_rows.take(off), 0), n)
    bottom = _scatter(A_rows, dA * x.take(A_cols, 0), m) - db
    return np.concatenate([top, bottom])


def data_adjoint(x: FloatArray, y: FloatArray, r: FloatArray, P_rows, P_cols, A_rows,
                 A_cols, has_P: bool, P_off: npt.NDArray[np.intp] | None = None,
                 ) -> tuple[FloatArray | None, FloatArray, FloatArray, FloatArray]:
    """Adjoint of :func:`data_rhs`: r (n+m, q) ↦ cotangents (dP, dA, db, dc) on the patterns.

    x (n,) and y (m,) are one solution; or (n, q) and (m, q), one per column of r (the
    columns of several elements at once). ``P_off``: P's off-diagonal entries, where the
    caller keeps them (else found here). The four are consecutive rows of one array (as
    the stacked data maps take them: :meth:`StackedMaps.transpose` then needs no copy)."""
    x, y = (x[:, None], y[:, None]) if x.ndim == 1 else (x, y)
    n, m = x.shape[0], y.shape[0]
    r1, r2 = r[:n], r[n:]
    nP = P_rows.size if has_P else 0
    nA = A_rows.size
    out = np.empty((nP + nA + m + n, r.shape[1]))
    gP, gA = (out[:nP] if has_P else None), out[nP : nP + nA]
    gb, gc = out[nP + nA : nP + nA + m], out[nP + nA + m :]
    _products_on(A_rows, A_cols, (y, r1), (r2, x), out=gA)
    if has_P:
        _products_on(P_rows, P_cols, (r1, x), out=gP)
        off = np.flatnonzero(P_rows != P_cols) if P_off is None else P_off
        if off.size:  # none where P is diagonal (sum_squares' auxiliaries)
            gP[off] += _products_on(P_cols.take(off), P_rows.take(off), (r1, x))
    np.negative(r2, out=gb)
    gc[...] = r1
    return gP, gA, gb, gc


def _products_on(rows: npt.NDArray, cols: npt.NDArray,
                 *pairs: tuple[FloatArray, FloatArray], out: FloatArray | None = None
                 ) -> FloatArray:
    """Σ over ``pairs`` (u, v) of u[rows] ∘ v[cols] (each (k, q): one row per entry and
    column), in runs of entries whose gathered rows stay in cache: gathered whole, each
    product's four (nnz, q) temporaries were fresh memory on every call (an OptNet QP's
    30,000 entries of A at batch 128: 31 MB each). ``take`` along axis 0, not fancy
    indexing: about half the cost on these 2-D arrays. Measured (2026-12-07, A's entries at
    qp200, batch 32): 4.5 ms whole against 3.1 ms in runs of 1,024 entries."""
    q = pairs[0][0].shape[1]
    step = max(1, CACHE_BYTES // (16 * q))
    if out is None:
        out = np.empty((rows.size, q))
    if rows.size <= step:  # one run: whole (fewer calls)
        (u, v), *rest = pairs
        np.multiply(u.take(rows, 0), v.take(cols, 0), out=out)
        for u, v in rest:
            out += u.take(rows, 0) * v.take(cols, 0)
        return out
    a, b = np.empty((min(step, rows.size), q)), np.empty((min(step, rows.size), q))
    for start in range(0, rows.size, step):
        at, to = rows[start : start + step], cols[start : start + step]
        k = at.size
        block = out[start : start + k]
        for i, (u, v) in enumerate(pairs):
            u.take(at, 0, out=a[:k], mode="clip")  # (clip: unbuffered; indices are valid)
            v.take(to, 0, out=b[:k], mode="clip")
            if i == 0:
                np.multiply(a[:k], b[:k], out=block)
            else:
                a[:k] *= b[:k]
                block += a[:k]
    return out


def _scatter(index, values: FloatArray, size: int) -> FloatArray:
    """Sum rows of ``values`` (k, r) into ``size`` rows by ``index`` (one sparse product;
    ``np.add.at`` is an unbuffered Python-speed loop)."""
    k = index.size
    S = sp.csr_matrix((np.ones(k), (index, np.arange(k))), shape=(size, k))
    return np.asarray(S @ values)
