"""The derivative as the homogeneous self-dual embedding's operator M, solved by LSQR.

The reference form of the derivative (Agrawal et al. 2019, "Differentiating through a cone
program"), one more strategy beside the KKT route of :mod:`.kkt`; ``mode="embedding"``.

The embedding. For ``min ½xᵀPx + cᵀx s.t. Ax + s = b, s ∈ K`` (dual y ∈ K*) encode a
solution as z = (u, v, w) = (x, y − s, 1), let Π be the projection onto ℝⁿ × K* × ℝ₊
(so Π(z) = (x, y, 1) by Moreau) and, at a point (x̃, ỹ, τ) = Π(z), the map SCS 3 solves

    Q̃(x̃, ỹ, τ) = [ P x̃ + Aᵀ ỹ + c τ ;  −A x̃ + b τ ;  −cᵀ x̃ − bᵀ ỹ − x̃ᵀ P x̃/τ ],

positively homogeneous of degree one (O'Donoghue 2021, SCS 3); for P = 0 it is the
skew-symmetric Q = [[0, Aᵀ, c], [−A, 0, b], [−cᵀ, −bᵀ, 0]] applied to Π(z). The residual
N(z) = (Q̃(Π(z)) − Π(z) + z) / w (blocks: dual residual, primal residual, duality gap) is
zero at z = (x, y − s, 1), and along its ray, exactly when (x, y, s) solves the program.
Differentiating N(z, data) = 0 at a solution (N = 0 there, so the derivative of the 1/w
factor drops out):

    M dz = −dQ̃,   M = ((DQ̃ − I) DΠ(z) + I) / w,   DΠ(z) = diag(I, DΠ_K*(v), 1),

    DQ̃ = [[ P,                Aᵀ,   c          ],
          [ −A,               0,    b          ],
          [ −(c + 2P x̃/τ)ᵀ,   −bᵀ,  x̃ᵀP x̃/τ²  ]],

    dQ̃ = [ dP x + dAᵀ y + dc ;  −dA x + db ;  −dcᵀx − dbᵀy − xᵀ dP x ]   (at w = τ = 1),

then dx = du − x dw, dy = DΠ_K*(v) dv − y dw, ds = DΠ_K*(v) dv − dv − s dw. For P = 0, DQ̃
is Q. The adjoint (vjp) runs the chain backwards: (gx, gy) ↦ (gx, DΠ_K*(v) gy,
−xᵀgx − yᵀgy) ↦ Mᵀ h = that ↦ the cotangent −h on dQ̃ ↦ (gP, gA, gb, gc), on the same
patterns and in the same layout as :func:`.kkt.data_adjoint` (which does most of it).

Why it equals the KKT route. N is positively homogeneous of degree one in z (Π and Q̃ are),
so M z = 0: M is singular by construction, its solutions differ by multiples of z, and
the chain above maps z to (dx, dy, ds) = 0. Wherever the solution map is differentiable
M has rank N − 1 with −dQ̃ in its range and LSQR (started at zero) returns the
minimum-norm dz. Written in dx, dy, ds (Px + Aᵀy = −c and Ax + s = b remove dw), the
first two blocks of M dz = −dQ̃ are the differentiated KKT conditions
P dx + Aᵀdy = −(dP x + dAᵀy + dc) and A dx + ds = db − dA x, with dy = D dv − y dw and
ds = D dv − dv − s dw: the KKT route's J [du; dv] = −dF. The third block (the duality
gap's derivative) is implied by them at a solution. The same linear map therefore comes
out, to LSQR's and the solver's accuracy.

Cost. Matrix-free: each LSQR iteration is one product with M and one with Mᵀ (two with A,
two with P, two with DΠ), and iterations grow with M's condition number (its nonzero
singular values), one LSQR run per right-hand side column; nothing is factorised or
reused between vjps. This is a reference mode, for checking the default ``"direct"``
route against the published form: slower, not for production.

Decision table (what happens when a solve is not clean):

    LSQR stops with        | answer
    -----------------------+-----------------------------------------------------------
    istop 1, 2 (converged, | LSQR's; 2 is the least-squares answer, expected here as the
     or least squares)     | right-hand side is in M's range only to the solver's accuracy
    istop 3, 6, 7 (stall:  | the minimum-norm least-squares solve of the dense M (SVD,
     condition or          | what LSQR converges to), ``fell_back`` set; beyond
     iteration limit)      | DENSE_MAX_ORDER     LSQR's last iterate, ``converged`` False

M is singular at every point, so singularity says nothing about degeneracy here and
``degenerate`` is never set by this mode.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..cones import ProductCone, ProjectionDerivative
from .kkt import KKTOperator, data_adjoint, data_rhs
from .linear_solvers import SolveStats, relative_residual
from .plan import DENSE_MAX_ORDER

FloatArray = npt.NDArray[np.float64]
Index = npt.NDArray[np.intp]
#: (P rows, P cols, A rows, A cols) of the data patterns (``CompiledProblem.data_patterns``).
Patterns = tuple[Index, Index, Index, Index]


@dataclass(frozen=True)
class EmbeddingOperator:
    """M = ((DQ̃ − I) DΠ(z) + I) / w at z = (u, v, w), w > 0 (or Mᵀ), matrix-free.

    ``y`` is Π_K*(v) and ``D`` is DΠ_K*(v); P is the full symmetric matrix (None for a
    linear objective)."""

    P: sp.csc_matrix | None
    A: sp.csc_matrix
    b: FloatArray
    c: FloatArray
    u: FloatArray
    y: FloatArray
    w: float
    D: ProjectionDerivative
    transposed: bool = False

    def __post_init__(self) -> None:
        if not self.w > 0:
            raise ValueError(f"the embedding's operator needs w > 0, got w = {self.w}.")

    @classmethod
    def at(cls, z: FloatArray, P_upper: sp.csc_matrix | None, A: sp.csc_matrix,
           b: FloatArray, c: FloatArray, cone: ProductCone) -> EmbeddingOperator:
        """M at any z = (u, v, w) with w > 0; ``cone`` is K* (ProductCone, dual=True)."""
        n, m = A.shape[1], A.shape[0]
        u, v, w = z[:n], z[n:n + m], float(z[n + m])
        return cls(full_symmetric(P_upper), A, b, c, u, cone.project(v), w, cone.dproject(v))

    n = KKTOperator.n
    m = KKTOperator.m

    @property
    def in_size(self) -> int:
        return self.n + self.m + 1

    @property
    def x(self) -> FloatArray:
        """The primal point u / w."""
        return self.u / self.w

    @property
    def T(self) -> EmbeddingOperator:
        return dataclasses.replace(self, transposed=not self.transposed)

    def _P(self, a: FloatArray) -> FloatArray:
        return self.P @ a if self.P is not None else np.zeros_like(a)

    def mv(self, dz: FloatArray) -> FloatArray:
        """M dz (or Mᵀ dz); dz may be (n+m+1,) or (n+m+1, r)."""
        dz = np.asarray(dz, dtype=float)
        Z = dz.reshape(self.in_size, -1)
        n, m, w = self.n, self.m, self.w
        Pu = self._P(self.u)
        uPu = float(self.u @ Pu)
        last_u = self.c + 2 * Pu / w  # minus DQ̃'s bottom-left row
        if not self.transposed:  # (DQ̃ − I) DΠ dz + dz
            a, e, f = Z[:n], self.D.mv(Z[n:n + m]), Z[n + m:]
            q1 = self._P(a) + self.A.T @ e + self.c[:, None] * f
            q2 = -(self.A @ a) + self.b[:, None] * f
            q3 = -(last_u @ a) - self.b @ e + uPu / w**2 * f[0]
            out = np.concatenate([q1 - a, q2 - e, q3[None] - f]) + Z
        else:  # DΠ (DQ̃ᵀ − I) dz + dz
            p, q, r = Z[:n], Z[n:n + m], Z[n + m:]
            t1 = self._P(p) - self.A.T @ q - last_u[:, None] * r
            t2 = self.A @ p - self.b[:, None] * r
            t3 = self.c @ p + self.b @ q + uPu / w**2 * r[0]
            out = np.concatenate([t1 - p, self.D.mv(t2 - q), t3[None] - r]) + Z
        return (out / w).reshape(dz.shape)

    def rmv(self, dz: FloatArray) -> FloatArray:
        """Mᵀ dz (or M dz for the transposed operator)."""
        return self.T.mv(dz)

    def as_matrix(self) -> FloatArray:
        """M (or Mᵀ) as a dense array, column by column (for tests and the fallback)."""
        return self.mv(np.eye(self.in_size))

    def linear_operator(self) -> spla.LinearOperator:
        return spla.LinearOperator((self.in_size, self.in_size), matvec=self.mv,
                                   rmatvec=self.rmv, dtype=np.float64)


def full_symmetric(P_upper: sp.csc_matrix | None) -> sp.csc_matrix | None:
    """The symmetric P from its upper triangle."""
    if P_upper is None:
        return None
    return sp.csc_matrix(P_upper + sp.triu(P_upper, k=1).T)


def residual(z: FloatArray, P_upper: sp.csc_matrix | None, A: sp.csc_matrix, b: FloatArray,
             c: FloatArray, cone: ProductCone) -> FloatArray:
    """N(z) = (Q̃(Π(z)) − Π(z) + z) / w, zero at a solution z = (x, y − s, 1); ``cone`` is K*.

    Written out once here, independently of :class:`EmbeddingOperator`, so that tests can
    check M against finite differences of N."""
    n, m = A.shape[1], A.shape[0]
    u, v, w = z[:n], z[n:n + m], float(z[n + m])
    P = full_symmetric(P_upper)
    x, y, tau = u, cone.project(v), max(w, 0.0)
    Px = P @ x if P is not None else np.zeros(n)
    Q = np.concatenate([Px + A.T @ y + c * tau, -(A @ x) + b * tau,
                        [-(c @ x) - b @ y - (x @ Px) / tau]])
    return (Q - np.concatenate([x, y, [tau]]) + z) / abs(w)


def embedding_operator(P_upper: sp.csc_matrix | None, A: sp.csc_matrix, b: FloatArray,
                       c: FloatArray, x: FloatArray, y: FloatArray,
                       D: ProjectionDerivative) -> EmbeddingOperator:
    """M at a solution (x, y, s): z = (x, y − s, 1), with D = DΠ_K*(y − s) given."""
    return EmbeddingOperator(full_symmetric(P_upper), A, b, c, x, y, 1.0, D)


def _quadratic_weights(x: FloatArray, P_rows: Index, P_cols: Index) -> FloatArray:
    """xᵀ dP x = weightsᵀ dP for dP on P's upper-triangle pattern (an off-diagonal entry
    stands for two entries of the symmetric matrix)."""
    return x[P_rows] * x[P_cols] * np.where(P_rows == P_cols, 1.0, 2.0)


def data_tangent(op: EmbeddingOperator, patterns: Patterns, dP: FloatArray | None,
                 dA: FloatArray, db: FloatArray, dc: FloatArray) -> FloatArray:
    """dQ̃ = [dP x + dAᵀy + dc ; −dA x + db ; −dcᵀx − dbᵀy − xᵀdP x] (n+m+1, r): N's
    derivative in the data at a solution (w = 1), for pattern-valued dP (upper) and dA."""
    P_rows, P_cols, A_rows, A_cols = patterns
    x, y, n = op.x, op.y, op.n
    F = data_rhs(x, y, dP, P_rows, P_cols, dA, A_rows, A_cols, db, dc)
    gap = -(x @ dc) - y @ db
    if dP is not None:
        gap = gap - _quadratic_weights(x, P_rows, P_cols) @ dP
    return np.concatenate([F[:n], -F[n:], gap[None]])


def data_cotangent(op: EmbeddingOperator, patterns: Patterns, t: FloatArray,
                   ) -> tuple[FloatArray | None, FloatArray, FloatArray, FloatArray]:
    """Adjoint of :func:`data_tangent`: t (n+m+1, q) ↦ (gP upper, gA, gb, gc), the layout of
    :func:`.kkt.data_adjoint` (whose map is the first two blocks with the second negated)."""
    P_rows, P_cols, A_rows, A_cols = patterns
    x, y, n = op.x, op.y, op.n
    t1, t2, t3 = t[:n], t[n:-1], t[-1]
    gP, gA, gb, gc = data_adjoint(x, y, np.concatenate([t1, -t2]), P_rows, P_cols, A_rows,
                                  A_cols, has_P=op.P is not None)
    gb, gc = gb - y[:, None] * t3, gc - x[:, None] * t3
    if gP is not None:
        gP = gP - _quadratic_weights(x, P_rows, P_cols)[:, None] * t3
    return gP, gA, gb, gc


@dataclass(frozen=True)
class EmbeddingLSQR:
    """``mode="embedding"``: the chain through M, each column solved by LSQR.

    ``atol``, ``btol`` and ``iter_lim`` are LSQR's, taken from the derivative options as the
    ``"lsqr"`` mode takes them (default iteration limit: 20 × (n + m + 1))."""

    name: ClassVar[str] = "embedding"
    atol: float = 1e-12
    btol: float = 1e-12
    iter_lim: int | None = None

    def __post_init__(self) -> None:
        if not (self.atol > 0 and self.btol > 0):
            raise ValueError(f"{self.name}: atol and btol must be positive, got {self.atol}, "
                             f"{self.btol}.")
        if self.iter_lim is not None and self.iter_lim < 1:
            raise ValueError(f"{self.name}: iter_lim must be >= 1, got {self.iter_lim}.")

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> EmbeddingLSQR:
        return cls(**{k: options[k] for k in ("atol", "btol", "iter_lim") if k in options})

    def tangent(self, op: EmbeddingOperator, patterns: Patterns, dP: FloatArray | None,
                dA: FloatArray, db: FloatArray, dc: FloatArray,
                ) -> tuple[FloatArray, SolveStats]:
        """Data tangents (pattern-valued dP upper, dA; db, dc), r columns ↦ [dx; dy] (n+m, r)."""
        x, y, n = op.x, op.y, op.n
        dz, stats = self._solve(op, -data_tangent(op, patterns, dP, dA, db, dc))
        du, dv, dw = dz[:n], dz[n:-1], dz[-1]
        return np.concatenate([du - x[:, None] * dw, op.D.mv(dv) - y[:, None] * dw]), stats

    def cotangent(self, op: EmbeddingOperator, patterns: Patterns, g: FloatArray,
                  ) -> tuple[tuple[FloatArray | None, FloatArray, FloatArray, FloatArray],
                             SolveStats]:
        """Cotangents on [x; y] (n+m, q) ↦ on the data (gP upper, gA, gb, gc), each (rows, q)."""
        x, y, n = op.x, op.y, op.n
        gx, gy = g[:n], g[n:]
        gz = np.concatenate([gx, op.D.mv(gy), (-(x @ gx) - y @ gy)[None]])
        h, stats = self._solve(op.T, gz)
        return data_cotangent(op, patterns, -h), stats  # −h: the cotangent on dQ̃

    def _solve(self, op: EmbeddingOperator, rhs: FloatArray) -> tuple[FloatArray, SolveStats]:
        """LSQR on every column of rhs (N, r); the dense minimum-norm solve where it stalls."""
        lin = op.linear_operator()
        limit = self.iter_lim or 20 * op.in_size
        cols, iters, stalled = [], 0, False
        for k in range(rhs.shape[1]):
            out = spla.lsqr(lin, rhs[:, k], atol=self.atol, btol=self.btol, iter_lim=limit)
            cols.append(out[0])
            iters += int(out[2])
            stalled |= int(out[1]) in (3, 6, 7)
        z = np.stack(cols, axis=1) if cols else np.zeros_like(rhs)
        converged = not stalled
        if stalled and op.in_size <= DENSE_MAX_ORDER:
            z = sla.lstsq(op.as_matrix(), rhs, check_finite=False)[0]
            converged = True
        return z, SolveStats(relative_residual(op.mv(z) - rhs, rhs), iters, converged,
                             fell_back=stalled)
