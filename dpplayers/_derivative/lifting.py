"""Large second-order cone blocks of J lifted to O(d) entries with two extra unknowns each.

DΠ of a second-order cone of dimension d is a dense d × d block, so J = [[P, Aᵀ D],
[A, D − I]] holds d² entries for it and Aᵀ D a dense product with every column of A that
meets it: J of ``lsq_norm`` (SOC 201) is 38% full and its LU is dense. But each block is
diagonal plus rank two (:meth:`~dpplayers.cones.SOCBlocks.diagonal_plus_rank_two`):
D = diag(g) + U C Uᵀ, U = [e₀, (0, x̄)], C = [[0, q], [q, e]]. With w = C Uᵀ dv as two new
unknowns per block, D dv = diag(g) dv + U w and

    J̃ = [[P, Aᵀ diag(g), Aᵀ U], [A, diag(g) − I, U], [0, −C Uᵀ, I]],

whose Schur complement on its (identity) w block is J exactly: J̃ [z; w] = [r; 0] gives
J z = r, and J̃ᵀ [z; w] = [r; 0] gives Jᵀ z = r (the Schur complement of J̃ᵀ is Jᵀ). The
extra unknowns are dropped from the answer. J̃ keeps about 2d entries per block plus one
per entry of A in its rows, entries products of at most two values (from A's data and g,
x̄, q, e), so the lifted KKTPattern is fixed per program like J's.

In J̃ a lifted block's rows meet each other only on the diagonal g − 1 (nonzero outside the
cone: g < 1 there), so the batched dense solve takes them first and divides them out as
S's leading diagonal pivots (:mod:`.pair_pivots`, ``KKTPattern.build(lifted_first=True)``);
``Direct`` factorises J̃ (:class:`~dpplayers._derivative.lifted_direct.LiftedDirect`). Where
J is singular the minimum-norm answer of J̃ is not J's, so an element whose lifted solve is
degenerate is solved by J itself, as before; a zero or tiny g − 1 (a point inside the cone)
leaves the batched solve a non-finite or inaccurate answer, which its residual check hands
to Direct.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .._sparse import sorted_runs
from ..cones import (
    BatchedProjectionDerivative,
    ProductCone,
    ProjectionDerivative,
    SecondOrderCone,
    SOCBlocks,
)

Index = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]

#: Second-order cones of at least this dimension are lifted. Measured on ‖F x − g‖₂ +
#: ½‖x‖² (x ∈ R²⁰, one SOC of dimension d), backward lifted over unlifted, interleaved in
#: one process (load ~7 on 2 cores): d = 12: 1.00 / 1.02 / 0.97 at batch 1 / 8 / 32;
#: d = 16: 1.20 / 0.92 / 0.87; d = 20: 1.06 / 0.92 / 0.81; d = 24: 1.04 / 0.86 / 0.68;
#: d = 32: 1.01 / 0.76 / 0.62 (d = 64: 0.90 / 0.56 / 0.21). Below 24 the batch-1 cost of the
#: larger pattern (extra entries, padded right-hand sides) is not won back.
LIFT_MIN_DIM = 24


@dataclass(frozen=True, eq=False)
class LiftLayout:
    """Which cone groups of the dual cone are lifted, where D's values sit in the lifted
    pattern's value vector, and the extra entries of J̃ as sums of products of two values.

    The value vector (:meth:`values`) holds D's matrix entries first, in group order (a
    dense block row-major, a lifted block its diagonal g), then per lifted group x̄ (k,
    d − 1), q (k) and e (k). A term multiplies two entries of V = [A's data; the value
    vector; 1] and a coefficient; terms on one position of J̃ are summed."""

    lifted: tuple[bool, ...]  # per cone group
    matrix_rows: Index  # D's matrix entries (the value vector's first part): row, column
    matrix_cols: Index
    extra: int  # unknowns added: two per lifted block
    term_a: Index  # V indices of each term's two factors, its coefficient, sorted by
    term_b: Index  # position in J̃; runs on one position start at ``starts``
    coef: FloatArray
    starts: Index
    rows: Index  # J̃ row and column of each summed entry
    cols: Index

    @classmethod
    def of(cls, n: int, m: int, A_rows: Index, A_cols: Index,
           cone: ProductCone, min_dim: int | None = None) -> LiftLayout | None:
        """The layout for J's data pattern, or None where no block is ``min_dim`` (default
        LIFT_MIN_DIM) or larger."""
        min_dim = LIFT_MIN_DIM if min_dim is None else min_dim
        lifted = tuple(isinstance(c, SecondOrderCone) and idx.shape[1] >= min_dim
                       for c, idx in cone.groups)
        if not any(lifted):
            return None
        n_A = A_rows.size
        by_row = np.argsort(A_rows, kind="stable")
        row_starts = np.searchsorted(A_rows[by_row], np.arange(m + 1))
        m_rows, m_cols, terms = [], [], []
        n_matrix = sum(idx.size if lift else idx.shape[0] * idx.shape[1] ** 2
                       for (_, idx), lift in zip(cone.groups, lifted))
        one = n_A + n_matrix + sum(idx.shape[0] * (idx.shape[1] + 1)
                                   for (_, idx), lift in zip(cone.groups, lifted) if lift)
        x_at = n_A + n_matrix  # V index of the next lifted group's x̄
        w = n + m  # the next lifted block's first extra unknown
        for (_, idx), lift in zip(cone.groups, lifted):
            k, d = idx.shape
            if not lift:
                m_rows.append(np.repeat(idx, d, axis=1).ravel())
                m_cols.append(np.tile(idx, (1, d)).ravel())
                continue
            m_rows.append(idx.ravel())
            m_cols.append(idx.ravel())
            for b in range(k):
                xbar = x_at + b * (d - 1) + np.arange(d - 1)
                q, e = x_at + k * (d - 1) + b, x_at + k * d + b
                terms += _block_terms(n, idx[b], w, xbar, q, e, one, by_row, row_starts,
                                      A_cols)
                w += 2
            x_at += k * (d + 1)
        rows, cols, a, b, coef = (np.concatenate(t) for t in zip(*terms))
        size = w
        order, first = sorted_runs(cols.astype(np.int64) * size + rows)
        return cls(lifted, np.concatenate(m_rows).astype(np.intp),
                   np.concatenate(m_cols).astype(np.intp), w - n - m,
                   a[order], b[order], coef[order], first, rows[order][first],
                   cols[order][first])

    @property
    def n_matrix(self) -> int:
        """How many of the value vector's entries are D's matrix entries."""
        return int(self.matrix_rows.size)

    def values(self, D: ProjectionDerivative | BatchedProjectionDerivative) -> FloatArray:
        """D's value vector: dense blocks' entries, lifted diagonals, then each lifted
        group's x̄, q and e; (values,) for one element, (values, b) for a batch (each
        group's blocks point-major, as ``BatchedProjectionDerivative`` holds them)."""
        b = getattr(D, "count", None)
        rows = 1 if b is None else b
        matrix, rest = [], []
        for (op, _), lift in zip(D.blocks, self.lifted):
            if not lift:
                matrix.append(op.as_matrices().reshape(rows, -1))
                continue
            assert isinstance(op, SOCBlocks)
            g, xbar, q, e = op.diagonal_plus_rank_two()
            matrix.append(g.reshape(rows, -1))
            rest += [xbar.reshape(rows, -1), q.reshape(rows, -1), e.reshape(rows, -1)]
        out = np.concatenate(matrix + rest, axis=1)
        return out[0] if b is None else out.T

    def entries(self, A_data: FloatArray, D_values: FloatArray) -> FloatArray:
        """J̃'s extra entries (at ``rows``, ``cols``), (entries, b) for columns (nA, b) and
        (values, b)."""
        V = np.concatenate([A_data, D_values, np.ones((1, A_data.shape[1]))])
        terms = self.coef[:, None] * V.take(self.term_a, 0) * V.take(self.term_b, 0)
        return np.add.reduceat(terms, self.starts, axis=0)


def _block_terms(n: int, rows: Index, w: int, xbar: Index, q: int, e: int, one: int,
                 by_row: Index, row_starts: Index, A_cols: Index) -> list[tuple]:
    """The terms (J̃ row, column, factor, factor, coefficient) of one lifted block with
    rows ``rows`` of A (t first) and extra unknowns w (C Uᵀ dv's first entry) and w + 1."""
    t, xs = rows[0], rows[1:]
    d1 = xs.size
    ones = np.full(d1, one)
    at_t = by_row[row_starts[t]:row_starts[t + 1]]
    at_x = [by_row[row_starts[i]:row_starts[i + 1]] for i in xs]
    x_of = np.repeat(xbar, [a.size for a in at_x])
    at_x = np.concatenate(at_x) if at_x else np.zeros(0, np.intp)
    scalar = lambda r, c, a, b, s: (np.array([r]), np.array([c]), np.array([a]),
                                    np.array([b]), np.array([s], float))
    return [
        # Aᵀ U (top right): A_tj on column w, Σ_i A_ij x̄_i on column w + 1
        (A_cols[at_t], np.full(at_t.size, w), at_t, np.full(at_t.size, one), np.ones(at_t.size)),
        (A_cols[at_x], np.full(at_x.size, w + 1), at_x, x_of, np.ones(at_x.size)),
        # U (middle right): e₀ and (0, x̄)
        scalar(n + t, w, one, one, 1.0),
        (n + xs, np.full(d1, w + 1), xbar, ones, np.ones(d1)),
        # −C Uᵀ (bottom): row w is −q x̄ᵀ dv_x, row w + 1 is −q dv_t − e x̄ᵀ dv_x
        (np.full(d1, w), n + xs, np.full(d1, q), xbar, -np.ones(d1)),
        scalar(w + 1, n + t, q, one, -1.0),
        (np.full(d1, w + 1), n + xs, np.full(d1, e), xbar, -np.ones(d1)),
        # I (bottom right)
        scalar(w, w, one, one, 1.0),
        scalar(w + 1, w + 1, one, one, 1.0),
    ]
