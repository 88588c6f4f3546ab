"""A sparse LU for a matrix with a few dense rows and columns (a bordered, "arrowhead" J).

Fitting a model to N samples gives a J whose rows and columns for the k coefficients meet
every sample's rows: k dense rows and columns around a sparse, nearly block-diagonal rest.
SuperLU's orderings cope badly with them (logistic regression, N = 1,000, k = 20, order
10,020: COLAMD fills 2.4M entries and takes 0.17 s, and a 20-column solve 0.16 s). Putting
the border last, the rest factorises with little fill, and the border is one dense k × k
Schur complement:

    M = [[A, B], [C, D]] (after a symmetric permutation), W = A⁻¹B, S = D − C W,
    M z = r:   z_A⁰ = A⁻¹ r_A,  S z_B = r_B − C z_A⁰,  z_A = z_A⁰ − W z_B;
    Mᵀ z = r:  S ᵀ z_B = r_B − Wᵀ r_A,  z_A = A⁻ᵀ (r_A − Cᵀ z_B).

Partial pivoting then stays inside A and inside S; the caller's refinement against M and
its residual check (:class:`~.linear_solvers.Direct`) catch the cases where that loses
accuracy, and a singular A means no bordered factor (the caller factorises M whole).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

FloatArray = npt.NDArray[np.float64]

#: A row or column is dense when it holds more than this many times √order entries.
DENSE_FACTOR = 10.0
#: ... and a border is used when it has at most this many indices (and at most 1/20 of M).
MAX_BORDER = 400


def border(M: sp.csc_matrix, min_order: int) -> npt.NDArray[np.intp] | None:
    """The indices whose row or column is dense, if they form a small border; else None.
    Only matrices of at least ``min_order`` are considered: the caller's limit for a dense
    LU (:data:`~.plan.DENSE_MAX_ORDER`, 1,500), below which a J whose SuperLU fills is
    factorised densely. Measured on arrow matrices (factorise and two 5-column solves,
    bordered against SuperLU): order 610 1.65 / 1.00 ms, 1,220 3.4 / 5.6, 1,830 6.7 / 19.0;
    a crossover near 1,000."""
    N = M.shape[0]
    if N < min_order:
        return None
    threshold = DENSE_FACTOR * np.sqrt(N)
    cols = np.diff(M.indptr)
    rows = np.bincount(M.indices, minlength=N)
    dense = np.flatnonzero((cols > threshold) | (rows > threshold))
    if dense.size == 0 or dense.size > min(MAX_BORDER, N // 20):
        return None
    return dense


class BorderedFactor:
    """The bordered LU of M (see the module), with SuperLU's ``solve(rhs, trans)`` and
    ``nnz``; build it with :meth:`of`, which returns None where it does not apply."""

    def __init__(self, M: sp.csc_matrix, dense: npt.NDArray[np.intp]) -> None:
        N = M.shape[0]
        keep = np.ones(N, bool)
        keep[dense] = False
        self.rest, self.dense = np.flatnonzero(keep), dense
        Mr = M[:, self.rest]
        Md = M[:, dense]
        A = sp.csc_matrix(Mr[self.rest])
        A.eliminate_zeros()
        if np.any(np.diff(A.indptr) == 0) or np.unique(A.indices).size < A.shape[0]:
            raise RuntimeError("Factor is exactly singular")  # an empty row or column
        self.A = spla.splu(A, permc_spec="COLAMD")  # RuntimeError where A is singular
        self.C = sp.csr_matrix(Mr[dense])
        B = Md[self.rest].toarray()
        self.W = self.A.solve(np.asfortranarray(B))
        S = Md[dense].toarray() - self.C @ self.W
        self.S = sla.lu_factor(S, check_finite=False)
        if not np.all(np.isfinite(self.S[0])) or np.min(np.abs(np.diag(self.S[0]))) == 0.0:
            raise RuntimeError("Factor is exactly singular")
        self.nnz = int(self.A.L.nnz + self.A.U.nnz + self.W.size + S.size)

    @classmethod
    def of(cls, M: sp.csc_matrix, min_order: int) -> BorderedFactor | None:
        """M's bordered factor where M (of order ≥ ``min_order``, see :func:`border`) has
        a small dense border and A is nonsingular."""
        dense = border(M, min_order)
        if dense is None:
            return None
        try:
            return cls(M, dense)
        except RuntimeError:
            return None

    def solve(self, rhs: FloatArray, trans: str = "N") -> FloatArray:
        rest, dense = self.rest, self.dense
        r_A, r_B = rhs[rest], rhs[dense]
        z = np.empty_like(rhs, dtype=np.float64)
        if trans == "N":
            z_A = self.A.solve(np.asfortranarray(r_A))
            z_B = sla.lu_solve(self.S, r_B - self.C @ z_A, check_finite=False)
            z[rest], z[dense] = z_A - self.W @ z_B, z_B
        else:
            z_B = sla.lu_solve(self.S, r_B - self.W.T @ r_A, trans=1, check_finite=False)
            z[rest] = self.A.solve(np.asfortranarray(r_A - self.C.T @ z_B), trans="T")
            z[dense] = z_B
        return z
