"""Exact leave-one-out refits from the full fit's factorisation (chord iterations).

Refit i differs from the full fit only in the objective (wᵢ = 0). Its own J is singular:
point i's "local" variables (its epigraph and cvxpy's auxiliaries for its loss) lose their
cost and are free. So point i is removed instead: its local columns and cone rows (L, found
on A's pattern, below) are dropped, and with yᴸ = 0 the remaining KKT residual F_R is the
refit's own. Its Jacobian at the full fit is J₀ restricted to the other rows and columns,
J₀[R, R], solved with J₀'s factorisation through the deletion identity

    J₀[R, R] δ = r   ⇔   δ = X + G q,  X = J₀⁻¹ [r; 0],  G = J₀⁻¹ E_L,  q = −(G_L)⁻¹ X_L,

and the chord iteration z ← z − J₀[R, R]⁻¹ F_R(z) starts at the full fit (its first step is
an exact Newton step of the refit). Alongside, point i's local block keeps solving the full
fit's local problem with the new coefficients (rows L, J₀[L, L]): that gives a feasible
slack sᴸ ∈ K, so that vᴸ = −sᴸ (yᴸ = Π(vᴸ) = 0) completes an exact solution of refit i.

All refits of a chunk iterate together: one multi-column solve with J₀ and one vectorised
residual (cone projections of every column at once) per iteration. A refit is returned as
exact only when its full KKT residual F_i (the refit's own data, point i included with
yᴸ = 0) is below ``tol`` relative; the caller re-solves the rest with the conic solver.

Local blocks: a column is a *hub* when it meets the cone rows of two or more points' weighted
columns (the coefficients); point i's block is everything reachable from its weighted
columns through cones without crossing a hub. Blocks must be disjoint, hold all the
columns whose cost wᵢ scales, and lose all their cost at wᵢ = 0; otherwise (or where the
weights enter A or b) this route does not apply and the caller solves every refit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import scipy.linalg as sla
import scipy.sparse as sp

from .._derivative.bordered import BorderedFactor
from .._derivative.embedding import full_symmetric

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._program import CompiledProblem
    from .._solution import Solution
    from ..cones import ProductCone

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

#: A refit is exact when its KKT residual is below TOL · (1 + max(‖b‖∞, ‖c‖∞)).
TOL = 1e-9
MAX_ITERATIONS = 30
#: Refits iterated together, at most (fewer where G, |L| columns of order n + m per refit,
#: would pass CHUNK_BYTES).
CHUNK = 200
CHUNK_BYTES = 200 * 2**20


@dataclass(frozen=True)
class ChordRefits:
    """Refits by chord iterations: canonical (x, y, s) per point (columns), whether each is
    certified exact, and the iterations each took."""

    x: FloatArray
    y: FloatArray
    s: FloatArray
    exact: npt.NDArray[np.bool_]
    iterations: npt.NDArray[np.int64]
    residual: FloatArray


@dataclass(frozen=True)
class LeaveOneOutFits:
    """The N refits as the influence result keeps them: ``values`` per requested output
    ((N, *shape), like a batched Solution's), ``info`` per point ({"method": "chord" or
    "solve", "iterations", "residual"} or the conic solver's info), ``batch`` = N."""

    values: tuple[FloatArray, ...]
    info: tuple[dict, ...]
    batch: int
    chord: ChordRefits | None
    solved: Solution | None  # the conic batch of the points chord did not certify


@dataclass(frozen=True)
class _Blocks:
    """Point i's local columns and rows, as positions in z = [x; v] (columns, then n + rows)."""

    local: list[IntArray]  # per point, sorted positions in z
    rows: list[IntArray]  # per point, its cone rows (positions in v)


def chord_refits(prog: CompiledProblem, sol: Solution, w_offset: int, weights: FloatArray,
                 tol: float | None = None, max_iterations: int | None = None,
                 chunk: int | None = None) -> ChordRefits | None:
    """All N leave-one-out refits of an unbatched solution ``sol`` whose weight vector sits
    at θ rows ``w_offset`` … ``w_offset + N``; None where the route does not apply (the
    weights enter A or b, blocks overlap, J₀ is singular)."""
    tol = TOL if tol is None else tol
    max_iterations = MAX_ITERATIONS if max_iterations is None else max_iterations
    chunk = CHUNK if chunk is None else chunk
    N = weights.size
    n, m = prog.n, prog.m
    P_upper, A, b, c = prog.element_data(sol._data, 0)
    w_rows = slice(w_offset, w_offset + N)
    if prog.C_A.matrix[:, w_rows].nnz or prog.C_b.matrix[:, w_rows].nnz:
        return None  # the weights enter the constraints
    # refit i's data minus the full fit's: −wᵢ times wᵢ's column of each map (sparse)
    dc = np.asarray((prog.C_c.matrix[:, w_rows] @ sp.diags(-weights)).toarray())
    dP = (None if prog.C_P is None
          else np.asarray((prog.C_P.matrix[:, w_rows] @ sp.diags(-weights)).toarray()))
    cone = prog.dual_cone
    blocks = _local_blocks(prog, A, P_upper, dP, c, dc, N)
    if blocks is None:
        return None
    solver, state, op = sol._derivative.element(0)
    if getattr(state, "singular", False) or getattr(state, "truncated", None) is not None:
        return None
    J0 = op.as_matrix().tocsr()
    P_rows, P_cols = prog.data_patterns[0], prog.data_patterns[1]
    Pf = full_symmetric(P_upper)
    scale = 1.0 + max(np.abs(b).max(initial=0.0), np.abs(c).max(initial=0.0))
    z0 = np.concatenate([sol.x[:, 0], sol.y[:, 0] - sol.s[:, 0]])

    factor = _whole_bordered(state, J0.shape[0])

    def solve(rhs: FloatArray) -> FloatArray:
        """J₀⁻¹ rhs: the bordered factor itself where it factorises J₀ whole (a chord step
        needs no refinement: its residual is measured exactly), else Direct's solve."""
        if factor is not None:
            return factor.solve(rhs, "N")
        return solver.compute(state, rhs, False)[0]

    widest = max(L.size for L in blocks.local)
    chunk = max(1, min(chunk, CHUNK_BYTES // (8 * (n + m) * max(widest, 1))))
    X, V, Ys = np.empty((n, N)), np.empty((m, N)), np.empty((m, N))
    exact, its, res = np.zeros(N, bool), np.zeros(N, np.int64), np.full(N, np.inf)
    for start in range(0, N, chunk):
        pts = np.arange(start, min(start + chunk, N))
        data = _ChunkData(pts, blocks, c[:, None] + dc[:, pts],
                          None if dP is None else dP[:, pts], P_rows, P_cols, Pf, A, b, c, n)
        Z, Y, done, k = _iterate(data, z0, J0, solve, factor, cone, tol * scale,
                                 max_iterations)
        ok, r_final, Z, Y = _certify(data, Z, Y, cone, tol * scale)
        X[:, pts], V[:, pts], Ys[:, pts], its[pts] = Z[:n], Z[n:], Y, k
        exact[pts], res[pts] = done & ok, r_final
    return ChordRefits(X, Ys, Ys - V, exact, its, res / scale)


@dataclass(frozen=True)
class _ChunkData:
    """One chunk's refit data: points, their blocks, c and dP per column."""

    points: IntArray
    blocks: _Blocks
    C: FloatArray  # (n, B)
    dP: FloatArray | None  # (nnz P, B)
    P_rows: IntArray
    P_cols: IntArray
    Pf: sp.csc_matrix | None
    A: sp.csc_matrix
    b: FloatArray
    c: FloatArray  # the full fit's
    n: int

    def residuals(self, Z: FloatArray, Y: FloatArray, active: IntArray,
                  rows: list[IntArray]) -> tuple[FloatArray, FloatArray]:
        """(the refits' residuals with each point's own yᴸ set to 0, the full fit's
        residual) for columns ``active`` of the chunk; rows: each point's cone rows."""
        n, Xs = self.n, Z[: self.n]
        Ym = Y.copy()
        for a, j in enumerate(active):
            Ym[rows[j], a] = 0.0
        shared = self.A @ Xs + Y - Z[n:] - self.b[:, None]
        PX = self.Pf @ Xs if self.Pf is not None else 0.0
        refit = PX + self.A.T @ Ym + self.C[:, active]
        if self.dP is not None and self.dP.size:
            refit = refit + _apply_upper(self.P_rows, self.P_cols, self.dP[:, active], Xs, n)
        full = PX + self.A.T @ Y + self.c[:, None]
        return np.vstack([refit, shared]), np.vstack([full, shared])

    def residual(self, Z: FloatArray, Y: FloatArray) -> FloatArray:
        """Each refit's KKT residual F_i(z) = [P_i x + Aᵀy + c_i; A x + y − v − b] with the
        given y (n+m, B)."""
        n, Xs = self.n, Z[: self.n]
        top = self.A.T @ Y + self.C
        if self.Pf is not None:
            top = top + self.Pf @ Xs
        if self.dP is not None and self.dP.size:
            top = top + _apply_upper(self.P_rows, self.P_cols, self.dP, Xs, n)
        return np.vstack([top, self.A @ Xs + Y - Z[n:] - self.b[:, None]])


def _iterate(data: _ChunkData, z0: FloatArray, J0: sp.csr_matrix, solve: Callable,
             factor: BorderedFactor | None, cone: ProductCone, tol: float, max_iterations: int
             ) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """The chord iterations of one chunk (see the module); returns (Z, Π(v) at Z,
    converged, iterations). Rows R: the refit's residual with yᴸ = 0; rows L: the full fit's local
    problem (its own cost) with the current coefficients."""
    n, B = data.n, data.points.size
    local = [data.blocks.local[i] for i in data.points]
    rows = [data.blocks.rows[i] for i in data.points]
    layout = _Layout.of(local, z0.size)
    J0_coo = J0.tocoo()
    J_LL_inv = layout.unpad(_inverses(layout.diagonal_blocks(J0_coo)))
    columns = (_BlockColumns.build(layout, J0_coo, J_LL_inv, factor)
               if factor is not None else None)
    if columns is None:
        columns = _BlockColumns.solved(local, solve, z0.size)
    Z = np.repeat(z0[:, None], B, axis=1)
    Y_final = np.repeat(cone.project_batch(z0[n:, None]), B, axis=1)  # Π(v) at each final z
    converged, iterations = np.zeros(B, bool), np.zeros(B, np.int64)
    # a refit whose blocks are singular (J₀[R, R] or the local problem's) is left to the solver
    active = np.array([j for j in range(B) if J_LL_inv[j] is not None
                       and columns.H_inv[j] is not None], np.intp)
    for k in range(max_iterations + 1):
        if active.size == 0:
            break
        Zk = Z[:, active]
        # every refit starts at the full fit: one projection serves them all
        Y = Y_final[:, active] if k == 0 else cone.project_batch(Zk[n:])
        Y_final[:, active] = Y
        R, R_full = data.residuals(Zk, Y, active, rows)
        R_L = [R_full[local[j], a] for a, j in enumerate(active)]
        for a, j in enumerate(active):
            R[local[j], a] = 0.0
        size = np.maximum(np.abs(R).max(axis=0),
                          np.array([np.abs(r).max(initial=0.0) for r in R_L]))
        done = size <= tol
        converged[active[done]] = True
        iterations[active] = k
        if k == max_iterations or done.all():
            break
        keep = np.flatnonzero(~done)
        active, R, Zk = active[keep], R[:, keep], Zk[:, keep]
        R_L = [R_L[a] for a in keep]
        step = solve(R)
        columns.delete(step, active)  # J₀[R, R]⁻¹ applied: step[L] = 0
        coupling = J0 @ step  # rows L: J₀[L, R] δ_R
        for a, j in enumerate(active):
            L = local[j]
            step[L, a] = J_LL_inv[j] @ (R_L[a] - coupling[L, a])
        Z[:, active] = Zk - step
    return Z, Y_final, converged, iterations


def _whole_bordered(state: object, order: int) -> BorderedFactor | None:
    """Direct's factor of J₀ where it is a bordered LU of J₀ itself (no peeled rows, no
    pair pivots), else None."""
    lu = getattr(state, "lu", None)
    factor = getattr(lu, "factor", None)
    if (not isinstance(factor, BorderedFactor) or getattr(state, "pairs", None) is not None
            or state.peel.core.size != order):
        return None
    return factor


@dataclass
class _BlockColumns:
    """G_i = J₀⁻¹ E_{L_i} for each refit of a chunk and H_i⁻¹ = ((G_i)_L)⁻¹: enough to apply
    J₀[R, R]⁻¹ through the deletion identity (the module docstring).

    Where each L_i is a diagonal block of the rest of J₀'s bordered factor (its rows and
    columns meet only L_i and the border), G_i = E_L Q_i + Ŵ T_i with Q_i = J₀[L, L]⁻¹,
    Ŵ = [W; −I] and T_i = S⁻¹ J₀[border, L] Q_i: no solve at all; else G is solved for."""

    local: list[IntArray]
    H_inv: list[FloatArray]
    G: FloatArray | None = None  # (n+m, Σ|L|) where solved
    offsets: IntArray | None = None
    Q: list[FloatArray] | None = None
    T: list[FloatArray] | None = None
    W_hat: FloatArray | None = None

    @classmethod
    def solved(cls, local: list[IntArray], solve: Callable, order: int) -> _BlockColumns:
        offsets = np.cumsum([0] + [L.size for L in local])
        E = np.zeros((order, offsets[-1]))
        for j, L in enumerate(local):
            E[L, offsets[j] + np.arange(L.size)] = 1.0
        G = solve(E)
        H_inv = [_inverse(G[L, offsets[j]:offsets[j + 1]]) for j, L in enumerate(local)]
        return cls(local, H_inv, G=G, offsets=offsets)

    @classmethod
    def build(cls, layout: _Layout, J0: sp.coo_matrix, Q: list[FloatArray | None],
              factor: BorderedFactor) -> _BlockColumns | None:
        """From the bordered factor, where every L_i meets only itself and the border (Q:
        the blocks' inverses J₀[L, L]⁻¹); else None."""
        border = factor.dense
        is_border = np.zeros(J0.shape[0], bool)
        is_border[border] = True
        owner, r, c = layout.owner, J0.row, J0.col
        inside = (owner[c] == owner[r]) | (is_border[c] & (owner[r] >= 0)) | (
            is_border[r] & (owner[c] >= 0))
        if np.any(((owner[r] >= 0) | (owner[c] >= 0)) & ~inside) or any(q is None for q in Q):
            return None
        W_hat = np.zeros((J0.shape[0], border.size))
        W_hat[factor.rest] = factor.W
        W_hat[border] = -np.eye(border.size)
        B, size, k = len(layout.local), layout.width, border.size
        Q_pad = layout.pad(Q)
        C = layout.border_blocks(J0, border)  # (B, k, s): J₀[border, L]
        CQ = (C @ Q_pad).transpose(1, 0, 2).reshape(k, B * size)
        T = sla.lu_solve(factor.S, CQ, check_finite=False).reshape(k, B, size).transpose(1, 0, 2)
        H = Q_pad + layout.gather_rows(W_hat) @ T
        return cls(layout.local, layout.unpad(_inverses(H)), Q=[q for q in Q],
                   T=[T[j][:, :layout.local[j].size] for j in range(B)], W_hat=W_hat)

    def delete(self, step: FloatArray, active: IntArray) -> None:
        """step (columns ``active``) ← J₀[R, R]⁻¹ applied to the right-hand side whose J₀⁻¹
        it holds: step + G_i q_i with q_i = −H_i⁻¹ step[L_i]; then step[L_i] = 0."""
        if self.G is not None:
            for a, j in enumerate(active):
                L, cols = self.local[j], slice(self.offsets[j], self.offsets[j + 1])
                step[:, a] += self.G[:, cols] @ (-self.H_inv[j] @ step[L, a])
                step[L, a] = 0.0
            return
        U = np.empty((self.W_hat.shape[1], active.size))
        for a, j in enumerate(active):
            q = -self.H_inv[j] @ step[self.local[j], a]
            U[:, a] = self.T[j] @ q
            step[self.local[j], a] += self.Q[j] @ q
        step += self.W_hat @ U
        for a, j in enumerate(active):
            step[self.local[j], a] = 0.0


@dataclass(frozen=True)
class _Layout:
    """A chunk's blocks L_j (disjoint) padded to one width s: positions, owners, and the
    batched gathers of J₀'s blocks (padding: identity on the diagonal, zeros elsewhere)."""

    local: list[IntArray]
    owner: IntArray  # per z position: the chunk's refit whose block holds it, or −1
    position: IntArray  # per z position: its place in that block
    width: int

    @classmethod
    def of(cls, local: list[IntArray], order: int) -> _Layout:
        owner, position = np.full(order, -1), np.zeros(order, np.intp)
        for j, L in enumerate(local):
            owner[L], position[L] = j, np.arange(L.size)
        return cls(local, owner, position, max((L.size for L in local), default=0))

    def pad(self, blocks: list[FloatArray]) -> FloatArray:
        out = np.zeros((len(self.local), self.width, self.width))
        out[:, np.arange(self.width), np.arange(self.width)] = 1.0
        for j, blk in enumerate(blocks):
            out[j, : blk.shape[0], : blk.shape[1]] = blk
        return out

    def unpad(self, blocks: list[FloatArray | None]) -> list[FloatArray | None]:
        return [None if blk is None else blk[: L.size, : L.size]
                for blk, L in zip(blocks, self.local)]

    def diagonal_blocks(self, J: sp.coo_matrix) -> FloatArray:
        """(B, s, s): J[L_j, L_j]."""
        out = self.pad([np.zeros((L.size, L.size)) for L in self.local])  # identity padding
        o = self.owner
        keep = (o[J.row] >= 0) & (o[J.row] == o[J.col])
        out[o[J.row[keep]], self.position[J.row[keep]], self.position[J.col[keep]]] = J.data[keep]
        return out

    def border_blocks(self, J: sp.coo_matrix, border: IntArray) -> FloatArray:
        """(B, k, s): J[border, L_j]."""
        place = np.full(J.shape[0], -1)
        place[border] = np.arange(border.size)
        out = np.zeros((len(self.local), border.size, self.width))
        keep = (place[J.row] >= 0) & (self.owner[J.col] >= 0)
        out[self.owner[J.col[keep]], place[J.row[keep]], self.position[J.col[keep]]] = J.data[keep]
        return out

    def gather_rows(self, M: FloatArray) -> FloatArray:
        """(B, s, cols): M[L_j] (zero rows for padding)."""
        out = np.zeros((len(self.local), self.width, M.shape[1]))
        for j, L in enumerate(self.local):
            out[j, : L.size] = M[L]
        return out


def _inverses(blocks: FloatArray) -> list[FloatArray | None]:
    """Each (s, s) block's inverse, or None where it is singular or nearly (condition
    above 1e12), all at once."""
    if blocks.shape[0] == 0:
        return []
    with np.errstate(all="ignore"):
        finite = np.all(np.isfinite(blocks), axis=(1, 2))
        cond = np.full(blocks.shape[0], np.inf)
        cond[finite] = np.linalg.cond(blocks[finite])
    ok = cond <= 1e12
    safe = np.where(ok[:, None, None], blocks, np.eye(blocks.shape[1]))
    inv = np.linalg.inv(safe)
    return [inv[j] if ok[j] else None for j in range(blocks.shape[0])]


def _certify(data: _ChunkData, Z: FloatArray, Y: FloatArray, cone: ProductCone, tol: float
             ) -> tuple[npt.NDArray[np.bool_], FloatArray, FloatArray, FloatArray]:
    """Complete each refit with vᴸ = −sᴸ (so yᴸ = Π(vᴸ) = 0, sᴸ = Π(vᴸ) − vᴸ from the
    local problem) and measure its own KKT residual; returns (exact, residual, completed
    Z, its Π(v)). Y = Π(v) at Z: only each point's own cones are projected again."""
    n = data.n
    Z, Y = Z.copy(), Y.copy()
    V = Z[n:]
    for a, i in enumerate(data.points):
        r = data.blocks.rows[i]
        V[r, a] = -(Y[r, a] - V[r, a])
    _project_own_cones(cone, V, Y, [data.blocks.rows[i] for i in data.points])
    R = data.residual(Z, Y)
    size = np.abs(R).max(axis=0)
    return size <= tol, size, Z, Y


def _project_own_cones(cone: ProductCone, V: FloatArray, Y: FloatArray,
                       rows: list[IntArray]) -> None:
    """Y[rows[a], a] ← Π_K*(V[rows[a], a]) for each column a (rows: whole cones)."""
    for kind, idx in cone.groups:
        first = idx[:, 0]
        blocks, columns = [], []
        for a, r in enumerate(rows):
            hit = np.flatnonzero(np.isin(first, r))
            blocks.append(hit)
            columns.append(np.full(hit.size, a))
        block, column = np.concatenate(blocks), np.concatenate(columns)
        if block.size == 0:
            continue
        at = idx[block]  # (count, d) rows
        Y[at, column[:, None]] = kind.project(V[at, column[:, None]])


def _inverse(M: FloatArray) -> FloatArray | None:
    """M⁻¹, or None where M is singular or nearly (condition above 1e12)."""
    if M.size == 0:
        return M.copy()
    if not np.all(np.isfinite(M)) or np.linalg.cond(M) > 1e12:
        return None
    return np.linalg.inv(M)


def _apply_upper(rows: IntArray, cols: IntArray, data: FloatArray, X: FloatArray,
                 n: int) -> FloatArray:
    """Σ over upper-triangle entries of the symmetric matrix with ``data`` (nnz, B), applied
    to X (n, B) column by column."""
    out = np.zeros((n, X.shape[1]))
    np.add.at(out, rows, data * X[cols])
    off = rows != cols
    np.add.at(out, cols[off], data[off] * X[rows[off]])
    return out


def _local_blocks(prog: CompiledProblem, A: sp.csc_matrix, P_upper: sp.csc_matrix | None,
                  dP: FloatArray | None, c: FloatArray, dc: FloatArray,
                  N: int) -> _Blocks | None:
    """Each point's local columns and cone rows (see the module), or None where they are
    not disjoint or keep some cost at wᵢ = 0."""
    n, m = prog.n, prog.m
    cone_of = np.empty(m, np.intp)
    cone_rows: list[IntArray] = []
    for _, idx in prog.dual_cone.groups:
        for r in idx:
            cone_of[r] = len(cone_rows)
            cone_rows.append(np.asarray(r, np.intp))
    A = sp.csc_matrix(A)
    A_rows = sp.csr_matrix(A)
    P_rows, P_cols = prog.data_patterns[0], prog.data_patterns[1]
    weighted = []
    for i in range(N):
        cols = np.flatnonzero(dc[:, i])
        if dP is not None and dP.size:
            hit = np.flatnonzero(dP[:, i])
            cols = np.union1d(cols, np.concatenate([P_rows[hit], P_cols[hit]]))
        weighted.append(cols)
    owner = np.full(len(cone_rows), -1)
    for i, cols in enumerate(weighted):
        for j in cols:
            for k in np.unique(cone_of[A.indices[A.indptr[j]:A.indptr[j + 1]]]):
                if owner[k] not in (-1, i):
                    return None  # one cone meets two points' weighted columns
                owner[k] = i
    hub = np.zeros(n, bool)
    for j in range(n):
        owners = np.unique(owner[cone_of[A.indices[A.indptr[j]:A.indptr[j + 1]]]])
        hub[j] = np.count_nonzero(owners >= 0) >= 2
    taken_cols, taken_cones = np.full(n, -1), np.full(len(cone_rows), -1)
    local, rows = [], []
    for i, cols in enumerate(weighted):
        if cols.size == 0 or hub[cols].any():
            return None
        frontier, members, cones = list(cols), set(cols.tolist()), set()
        while frontier:
            j = frontier.pop()
            for k in np.unique(cone_of[A.indices[A.indptr[j]:A.indptr[j + 1]]]):
                if k in cones:
                    continue
                cones.add(int(k))
                for r in cone_rows[k]:
                    for jj in A_rows.indices[A_rows.indptr[r]:A_rows.indptr[r + 1]]:
                        if not hub[jj] and jj not in members:
                            members.add(int(jj))
                            frontier.append(int(jj))
        Lc = np.array(sorted(members), np.intp)
        Lk = np.array(sorted(cones), np.intp)
        if np.any(taken_cols[Lc] >= 0) or np.any(taken_cones[Lk] >= 0):
            return None  # blocks overlap
        taken_cols[Lc], taken_cones[Lk] = i, i
        Lr = np.sort(np.concatenate([cone_rows[k] for k in Lk])) if Lk.size else np.zeros(0, np.intp)
        if not _cost_vanishes(Lc, c + dc[:, i], P_upper, None if dP is None else dP[:, i],
                              P_rows, P_cols):
            return None
        local.append(np.concatenate([Lc, n + Lr]))
        rows.append(Lr)
    return _Blocks(local, rows)


def _cost_vanishes(Lc: IntArray, c_i: FloatArray, P_upper: sp.csc_matrix | None,
                   dP_i: FloatArray | None, P_rows: IntArray, P_cols: IntArray) -> bool:
    """Whether refit i's objective leaves its local columns without cost (c and P)."""
    if np.any(c_i[Lc] != 0.0):
        return False
    if P_upper is None:
        return True
    data = P_upper.data + (dP_i if dP_i is not None and dP_i.size else 0.0)
    touches = np.isin(P_rows, Lc) | np.isin(P_cols, Lc)
    return not np.any(data[touches] != 0.0)
