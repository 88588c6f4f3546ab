"""Exact elimination of J's independent 2×2 pivots, for the batched dense solve.

cvxpy writes ``sum_squares(F x − g)`` as an auxiliary u = F x − g with ‖u‖² in P, so u_j
has one diagonal entry in P and one entry in A, in an equality row i. In J the pair
(p, q) = (u_j, n + i) then meets the rest R of J only through row q and column q:

    rows/cols (R, q, p):   [[J_RR, J_Rq, 0], [J_qR, c, a'], [0, a, P]]

Eliminating the 2×2 pivot [[P, a], [a', c]] is exact and changes J_RR by a rank-one term,
S = J_RR − J_Rq (P / det) J_qR with det = P c − a a'. With every such pair removed, the
dense LU is of order n + m − 2·pairs (SOC projection 183 → 83, nearest correlation
matrix 320 → 120), which is what the batched solve costs.

Some of R's unknowns are then pivots of S by themselves: cvxpy's x in ‖x − y‖² meets the
other x's nowhere (its diagonal in S comes from its u pair alone). The dense solve divides
S's leading run of such indices out before the LU (``diagonal``; SOC projection 83 → 33,
nearest correlation matrix 120 → 65).

The pairs are read off J's pattern once per program: p's row and column hold nothing
outside {p, q}, and the rows and columns of the q's chosen do not meet each other. Nothing
numerical is assumed: a pivot that is singular for some element gives a non-finite or
inaccurate solution there, which the caller's residual check hands to ``Direct``; so does
an S whose probe condition estimate is large (:func:`_solve_each`): J is near-singular
exactly when S is, the pivots [[P, a], [a, 0]] holding data only (det = −a², a the
auxiliary's coefficient).

Rows of R that an element does not need (its inactive inequalities, eliminated around
this solve by :mod:`dpplayers._derivative.inactive_rows`) can be left out per element (``keep``): each
element's blocks are compacted to its own rows, padded with an identity to the batch's
largest order.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.linalg import blas, lapack

from .._sparse import concatenated_ranges, gather, set_columns, sorted_runs
from .conditioning import PROBE_SUSPECT, probe
from .scratch import scratch

if TYPE_CHECKING:
    from .tiles import TileFill

Index = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]


@dataclass(eq=False)  # not frozen: built on every solve, and a frozen __init__ costs 4× as much
class ReducedBlocks:
    """J_RR, J_RQ, J_QR and the pivot entries of one matrix or a batch (leading axis b)."""

    RR: FloatArray  # (b, r, r)
    RQ: FloatArray  # (b, |rq_rows|, e): J_RQ's rows that hold anything; or its entries
    QR: FloatArray  # (b, e, |qr_cols|): J_QR's columns that hold anything; or its entries
    P: FloatArray  # (b, e, 1): the (p, p) entries (a trailing axis for right-hand sides)
    a: FloatArray  # (b, e, 1): (p, q)
    a2: FloatArray  # (b, e, 1): (q, p)
    c: FloatArray  # (b, e, 1): (q, q)
    rq_rows: Index | slice  # where those rows and columns are in R: the only part of S
    qr_cols: Index | slice  # the pivots change (a slice when contiguous)
    terms: SchurTerms | None = None  # S's update product by product, where cheaper
    diagonal: int = 0  # S's leading diagonal pivots (see ``PairPivots.diagonal``)
    reach: int | None = None  # ... meet only S's next ``reach`` indices (None: any)
    lines: PivotLines | None = None  # ... their update line by line, where cheaper
    #: where RQ and QR hold entries (b, nnz), not dense blocks: their layouts
    by_entries: tuple[BlockEntries, BlockEntries] | None = None
    second: tuple[Index, Index] | None = None  # S's complement's own diagonal pivots, the rest
    limit: float | None = None  # a suspect LU's gecon estimate accepted up to this (see there)

    def rq_times(self, X: FloatArray) -> FloatArray:
        """J_RQ's stored rows times X (b, e, k)."""
        return self.RQ @ X if self.by_entries is None else self.by_entries[0].times(self.RQ, X)

    def qr_times(self, X: FloatArray) -> FloatArray:
        """J_QR's stored columns times X (b, |qr_cols|, k)."""
        return self.QR @ X if self.by_entries is None else self.by_entries[1].times(self.QR, X)

    def schur(self, w: FloatArray, out: FloatArray) -> FloatArray:
        """S = J_RR − J_RQ diag(w) J_QR with w = P / det per pair (b, e), written into
        ``out`` (shaped as J_RR, C-contiguous)."""
        b = out.shape[0]
        out[...] = self.RR
        if not self.P.shape[-2]:
            return out
        if self.terms is not None:  # few products (J_RQ and J_QR nearly diagonal): each alone
            t = self.terms
            # S's order is r less each element's dropped rows (``keep``): flattened per call
            out.reshape(b, -1)[:, t.target_i * out.shape[2] + t.target_k] -= self._products(w)
            return out
        rows, cols = self.rq_rows, self.qr_cols
        # basic slicing where the extents are contiguous (cvxpy's auxiliaries meet the first
        # variables): fancy indexing costs more than the product here
        at = (rows, cols) if isinstance(rows, slice) and isinstance(cols, slice) else (
            as_indices(rows)[:, None], as_indices(cols)[None, :])
        out[(..., *at)] -= (self.RQ * w[..., None, :]) @ self.QR
        return out

    def diagonal_update(self, w: FloatArray) -> FloatArray | None:
        """Where the update J_RQ diag(w) J_QR lands on S's leading diagonal pivots alone
        (cvxpy's u = x − y pairs: each meets its own x), its sums there (b, diagonal):
        S is then J_RR less these on the diagonal, and J_RR need not be copied. Else
        None."""
        t = self.terms
        if t is None or not t.on_diagonal or t.reach > self.diagonal or not self.P.shape[-2]:
            return None
        if t.target_i.size == self.diagonal:  # each pivot once, in order
            return self._products(w)
        out = np.zeros((w.shape[0], self.diagonal))
        set_columns(out, t.target_i, self._products(w))
        return out

    def _products(self, w: FloatArray) -> FloatArray:
        """The update's sums per target of ``terms`` (b, targets)."""
        t, b = self.terms, w.shape[0]
        # flat gathers: fancy indexing with two index arrays costs about twice as much
        # (views of the blocks buffer: ``gather``, not ``take``, which would copy them whole)
        products = (gather(self.RQ.reshape(b, -1), t.ij, 1) * w.take(t.j, 1)
                    * gather(self.QR.reshape(b, -1), t.jk, 1))
        return products if t.starts is None else np.add.reduceat(products, t.starts, axis=1)


@dataclass(frozen=True, eq=False)
class BlockEntries:
    """J_RQ or J_QR held as its entries where they are few (the pairs' one entry each, as
    ``SchurTerms`` takes them): the spectraplex projection's J_RQ is 210 × 400 with 400
    entries, and the dense blocks were half of each element's buffer (2.8 MB) to zero,
    fill and multiply. A product sums each entry times X's row into the entry's row."""

    rows: Index  # each entry's row and column in the block
    cols: Index
    n_rows: int

    @functools.cached_property
    def _runs(self) -> tuple[Index, Index, Index] | bool:
        """(entries by row, where each row's run starts, the rows); False where every
        entry has a row of its own (then a product is one scatter), True where moreover
        entry i is in row i (then it is the product itself)."""
        if np.unique(self.rows).size == self.rows.size:
            return self.rows.size == self.n_rows and bool((np.diff(self.rows) > 0).all())
        order, first = sorted_runs(self.rows)
        return order, first, self.rows[order[first]]

    def times(self, values: FloatArray, X: FloatArray) -> FloatArray:
        """The block (entries ``values`` (b, nnz)) times X (b, columns, k), (b, n_rows, k)."""
        terms = values[..., None] * gather(X, self.cols, 1)  # (b, nnz, k)
        if self._runs is True:
            return terms
        out = np.zeros((X.shape[0], self.n_rows, X.shape[2]))
        if self._runs is False:
            out[:, self.rows] = terms
        else:
            order, first, rows = self._runs
            out[:, rows] = np.add.reduceat(terms.take(order, 1), first, axis=1)
        return out


@dataclass(frozen=True, eq=False)
class SchurTerms:
    """S's update as single products RQ[i, j] QR[j, k] (indices into the stored blocks),
    sorted by where they land in S, (target_i, target_k); ``starts`` marks each target's
    first product when targets repeat (a symmetric variable: u_ij and u_ji both meet X_ij),
    for one ``np.add.reduceat``."""

    j: Index
    ij: Index  # where RQ[i, j] and QR[j, k] are in their blocks, flattened
    jk: Index
    target_i: Index  # where each sum lands in S
    target_k: Index
    starts: Index | None
    on_diagonal: bool = False  # every target is on S's diagonal, ...
    reach: int = 0  # ... the last at reach − 1

    @classmethod
    def of(cls, i: Index, j: Index, k: Index, ij: Index, jk: Index, rows: Index,
           cols: Index) -> SchurTerms:
        """Products (i, j, k) of RQ (|rows| × e) and QR (e × |cols|) whose targets in S are
        (rows[i], cols[k]), their factors at ij in RQ's stored values and jk in QR's."""
        order, first = sorted_runs(i * cols.size + k)
        i, j, k, ij, jk = i[order], j[order], k[order], ij[order], jk[order]
        starts = None if first.size == i.size else first
        target_i, target_k = rows[i[first]], cols[k[first]]
        return cls(j, ij, jk, target_i, target_k, starts,
                   bool(np.array_equal(target_i, target_k)), int(target_i.max(initial=-1)) + 1)


@dataclass(frozen=True, eq=False)
class PairPivots:
    """The pairs (p, q) of one pattern, the rest R, and where each J entry goes."""

    size: int
    p: Index
    q: Index
    rest: Index
    slot: Index  # where each J entry goes in one flat buffer holding the blocks, in turn
    tail: Index  # ... the same less r·r for entries outside J_RR (they follow it)
    tail_size: int  # the buffer's length less r·r: J_RQ, J_QR and the pivots
    rq_rows: Index | slice  # see ReducedBlocks
    qr_cols: Index | slice
    kind: npt.NDArray[np.int8]  # each J entry's block (RR, RQ, QR or a pivot's), ...
    local_row: Index  # ... and its row and column within that block
    local_col: Index
    by_entries: bool  # J_RQ and J_QR held as their entries (:func:`_few_products`)
    diagonal: int = 0  # S's first ``diagonal`` rows and columns meet each other only on
    # the diagonal: the dense solve eliminates them by division (:func:`_solve_reduced`)
    reach: int | None = None  # ... and the rest of S only within its next ``reach``
    lines: PivotLines | None = None  # ... their update of S line by line (see there)
    #: indices of that complement (of order r − diagonal) that meet each other only on its
    #: diagonal, and the others: a second round of division before the LU (None: none)
    second: tuple[Index, Index] | None = None
    #: the entries of the dense LU's matrix (S less its diagonal pivots) in its pattern
    #: (None where S's pattern was not built: no ``may_be_diagonal``)
    lu_entries: int | None = None
    transposed: PairPivots | None = None  # the same pairs laid out for Jᵀ (J's entries)
    #: where the probe calls an element's LU suspect, the cond₁ its gecon estimate may
    #: reach and the element still be solved here (None: it goes to ``Direct``); the
    #: plan's, for J whose D has 1×1 blocks only (:mod:`.conditioning`)
    limit: float | None = None

    @property
    def reduced_order(self) -> int:
        """The order of S, what the dense LU factorises."""
        return int(self.rest.size)

    @classmethod
    def of(cls, size: int, rows: npt.ArrayLike, cols: npt.ArrayLike,
           may_be_p: npt.NDArray[np.bool_], may_be_q: npt.NDArray[np.bool_],
           may_be_diagonal: npt.NDArray[np.bool_] | None = None) -> PairPivots:
        """Find the pairs of a pattern of order ``size`` whose entries are at (rows, cols),
        each position once and in the order values will come in, with p and q among the
        indices allowed by the masks; and S's leading diagonal pivots among the indices
        ``may_be_diagonal`` allows (none without it)."""
        rows, cols = np.asarray(rows, dtype=np.intp), np.asarray(cols, dtype=np.intp)
        p, q = _independent_pairs(size, rows, cols, may_be_p, may_be_q)
        rest = np.setdiff1d(np.arange(size), np.concatenate([p, q]), assume_unique=True)
        allowed = None if may_be_diagonal is None else may_be_diagonal[rest]
        # Jᵀ's entries are J's with rows and columns swapped: the same pairs (the choice is
        # symmetric), its blocks written straight from J's values
        transposed = cls._laid_out(size, cols, rows, p, q, rest, allowed)
        return dataclasses.replace(cls._laid_out(size, rows, cols, p, q, rest, allowed),
                                   transposed=transposed)

    @classmethod
    def _laid_out(cls, size: int, rows: Index, cols: Index, p: Index, q: Index, rest: Index,
                  allowed: npt.NDArray[np.bool_] | None) -> PairPivots:
        """Where the entries (rows, cols) go in the blocks buffer, for the given pairs."""
        kind, lr, lc = _classify(size, rows, cols, p, q, rest)
        rq_rows, qr_cols = np.unique(lr[kind == RQ]), np.unique(lc[kind == QR])
        by_entries = _few_products(kind, lr, lc, q.size)
        tail, tail_size = _tail_slots(kind, lr, lc, rq_rows, qr_cols, q.size, by_entries)
        r = rest.size
        slot = np.where(kind == RR, lr * r + lc, r * r + tail)
        diagonal, reach, lines, second, lu_entries = 0, None, None, None, None
        if allowed is not None:
            S = _schur_pattern(r, q.size, kind, lr, lc)
            diagonal = _leading_diagonal(S, allowed)
            reach = _diagonal_reach(S, diagonal) if diagonal else None
            lines = PivotLines.of(S, diagonal) if diagonal else None
            complement, update = _complement_pattern(S, diagonal)
            second = _independent_diagonal(complement, update) if diagonal else None
            lu_entries = int(complement.nnz)
        return cls(size, p, q, rest, slot, tail, tail_size, as_span(rq_rows),
                   as_span(qr_cols),
                   kind, lr, lc, by_entries, diagonal, reach, lines, second, lu_entries)

    def buffer_size(self, r: int | None = None) -> int:
        """The length of one element's blocks buffer for S of order r (default: all of R)."""
        r = self.rest.size if r is None else r
        return r * r + self.tail_size

    def blocks(self, values: FloatArray, transpose: bool,
               keep: npt.NDArray[np.bool_] | None = None,
               reuse: bool = False, fill: TileFill | None = None) -> ReducedBlocks:
        """The reduced blocks of J (or Jᵀ) for values (b, nnz) in the entries' order: one
        buffer filled by one gather, then viewed as the blocks. With ``keep`` (b, r), only
        each element's kept rest indices, in order, padded to the largest such count with
        an identity (see :meth:`solve`). With ``reuse``, the buffer is this thread's
        :func:`~dpplayers._derivative.scratch.scratch` array: the blocks last until the next such call.
        With ``fill`` (not with ``keep``), ``values`` are J's entries outside D's tiles,
        which ``fill`` writes into J_RR (:mod:`.tiles`)."""
        if transpose:
            return self.transposed.blocks(values, False, keep, reuse,
                                          None if fill is None else fill.T)
        b, r, e = values.shape[0], self.rest.size, self.q.size
        zeros = _zeroed_scratch if reuse else np.zeros
        if keep is None:
            buffer = zeros((b, self.buffer_size()))
            if fill is None:
                set_columns(buffer, self.slot, values)
            else:
                set_columns(buffer, fill.slot, values)
                fill.write(buffer[:, : r * r].reshape(b, r, r))
        else:
            r = int(keep.sum(axis=1).max(initial=0))
            slot = self._compact_slots(keep, r)
            buffer = zeros((b, self.buffer_size(r) + 1))  # + 1: where dropped go
            buffer.ravel()[slot + buffer.shape[1] * np.arange(b)[:, None]] = values
            buffer = buffer[:, :-1]
        n_rows, n_cols = self._block_sizes
        entries = self._entries
        rq = r * r  # where each block starts
        if entries is None:
            qr, pairs = rq + n_rows * e, rq + n_rows * e + e * n_cols
            RQ = buffer[:, rq:qr].reshape(b, n_rows, e)
            QR = buffer[:, qr:pairs].reshape(b, e, n_cols)
        else:
            qr = rq + entries[0].rows.size
            pairs = qr + entries[1].rows.size
            RQ, QR = buffer[:, rq:qr], buffer[:, qr:pairs]
        P, a, a2, c = buffer[:, pairs:].reshape(b, 4, e, 1).transpose(1, 0, 2, 3)
        RR = buffer[:, :rq].reshape(b, r, r)
        if keep is not None:  # the padding: identity rows and columns
            pad = np.arange(r)[None, :] >= keep.sum(axis=1)[:, None]
            RR[:, np.arange(r), np.arange(r)] += pad
        blocks = ReducedBlocks(RR, RQ, QR, P, a, a2, c, self.rq_rows, self.qr_cols,
                               self.schur_terms, self.diagonal, reach := self._reach(keep),
                               None if reach is None else self.lines, entries,
                               self.second if keep is None else None, self.limit)
        return blocks

    @functools.cached_property
    def _entries(self) -> tuple[BlockEntries, BlockEntries] | None:
        """J_RQ's and J_QR's layouts by entries (in J's entry order), where they are held
        so (``by_entries``), else None."""
        if not self.by_entries:
            return None
        rq, qr = self.kind == RQ, self.kind == QR
        rows, cols = as_indices(self.rq_rows), as_indices(self.qr_cols)
        return (BlockEntries(np.searchsorted(rows, self.local_row[rq]), self.local_col[rq],
                             rows.size),
                BlockEntries(self.local_row[qr], np.searchsorted(cols, self.local_col[qr]),
                             self.q.size))

    def after_blocks(self, index: Index) -> npt.NDArray[np.bool_]:
        """Whether each J index comes after every row of J_RQ and column of J_QR in R's
        order: what the batched executor may drop per element without moving them
        (:meth:`_compact_slots`)."""
        last = max(int(as_indices(self.rq_rows).max(initial=-1)),
                   int(as_indices(self.qr_cols).max(initial=-1)))
        return np.searchsorted(self.rest, index) > last

    def _reach(self, keep: npt.NDArray[np.bool_] | None) -> int | None:
        """``reach`` where every element keeps the indices it spans (compaction moves no
        index within it), else None."""
        if self.reach is None or keep is None:
            return self.reach
        return self.reach if keep[:, : self.diagonal + self.reach].all() else None

    @functools.cached_property
    def _block_sizes(self) -> tuple[int, int]:
        """How many rows of J_RQ and columns of J_QR are stored."""
        return as_indices(self.rq_rows).size, as_indices(self.qr_cols).size

    @functools.cached_property
    def schur_terms(self) -> SchurTerms | None:
        """The products J_RQ[i, j] J_QR[j, k] of S's update when there are few: cvxpy's
        u = x − y pairs have one entry each (SOC projection: 50 products against 125,000
        multiply-adds of the dense update). None when the dense product is cheaper, as
        where u = F x − g with a dense F."""
        entries = self._entries
        if entries is None:
            return None
        rows, cols = as_indices(self.rq_rows), as_indices(self.qr_cols)
        (i, j), (j2, k) = ((x.rows, x.cols) for x in entries)
        # every (RQ entry, QR entry) of the same pair, each factor by its entry's position
        by_j = np.argsort(j2, kind="stable")
        starts = np.searchsorted(j2[by_j], np.arange(self.q.size + 1))
        reps = starts[j + 1] - starts[j]
        first = concatenated_ranges(starts[j], reps)
        return SchurTerms.of(np.repeat(i, reps), np.repeat(j, reps), k[by_j[first]],
                             np.repeat(np.arange(i.size), reps), by_j[first], rows, cols)

    def _compact_slots(self, keep: npt.NDArray[np.bool_], r: int) -> Index:
        """Each element's slot for each J entry (b, nnz) in the compacted buffer (blocks of
        order r); entries in a dropped row or column go to the last slot. The rows of J_RQ
        and columns of J_QR must be kept and keep their places (the caller checks), so only
        J_RR's entries move per element."""
        lr, lc = self.local_row, self.local_col
        slot = np.broadcast_to(r * r + self.tail, (keep.shape[0], lr.size)).copy()
        rr = self._rr_entries
        loc = np.cumsum(keep, axis=1) - 1
        rows, cols = lr[rr], lc[rr]
        # np.take: numpy's fancy indexing along axis 1 costs several times as much
        ok = np.take(keep, rows, axis=1) & np.take(keep, cols, axis=1)
        slot[:, rr] = np.where(ok, np.take(loc, rows, axis=1) * r + np.take(loc, cols, axis=1),
                               self.buffer_size(r))
        return slot

    @functools.cached_property
    def _rr_entries(self) -> Index:
        return np.flatnonzero(self.kind == RR)

    def solve(self, values: FloatArray, rhs: FloatArray, transpose: bool,
              keep: npt.NDArray[np.bool_] | None = None,
              fill: TileFill | None = None) -> tuple[FloatArray, FloatArray]:
        """J z = rhs (or Jᵀ z = rhs) for every element: values (b, nnz), rhs (b, size, k).
        Returns z and the squared norm of the residual J z − rhs per element and column
        (b, k), computed from the same blocks (they hold every entry of J). An element
        whose S or pivot is singular comes back NaN.

        With ``keep`` (b, r), each element solves only its kept rest indices and the
        pairs, as if the dropped rows and columns were not in J (zero in z and in the
        residual): the caller has eliminated them (:mod:`dpplayers._derivative.inactive_rows`).
        With ``fill``, D's tiles are written apart from ``values`` (see :meth:`blocks`)."""
        r, e = self.rest.size, self.p.size
        with np.errstate(all="ignore"):
            B = self.blocks(values, transpose, keep, reuse=True, fill=fill)
            ordered = rhs.take(self._order, 1) if e else rhs  # (rest, p, q): one gather
            r_R = ordered[:, :r]
            if keep is not None:
                at = _compaction(keep, B.RR.shape[1])
                r_R = np.take_along_axis(np.concatenate([r_R, np.zeros_like(r_R[:, :1])], 1),
                                         at[..., None], axis=1)
            z_R, z_p, z_q, res_sq = _solve_blocks(B, r_R, ordered[:, r : r + e],
                                                  ordered[:, r + e :])
        if keep is not None:
            z_R = _expand(z_R, at, r)
        if not e:
            return z_R, res_sq
        return np.concatenate([z_R, z_p, z_q], 1).take(self._unpermute, 1), res_sq

    @functools.cached_property
    def _order(self) -> Index:
        """J's indices in (rest, p, q) order."""
        return np.concatenate([self.rest, self.p, self.q])

    @functools.cached_property
    def _unpermute(self) -> Index:
        """Where each index of J is in (rest, p, q) order: one gather puts the blocks'
        unknowns back."""
        back = np.empty(self.size, np.intp)
        back[self._order] = np.arange(self.size)
        return back


def _zeroed_scratch(shape: tuple[int, int]) -> FloatArray:
    """The blocks buffer in this thread's scratch array, zeroed."""
    buffer = scratch("pair blocks", shape)
    buffer.fill(0.0)
    return buffer


def _compaction(keep: npt.NDArray[np.bool_], r: int) -> Index:
    """(b, r): each element's kept indices in order, padded with the index one past the end."""
    at = np.argsort(~keep, axis=1, kind="stable")[:, :r]
    at[np.arange(r)[None, :] >= keep.sum(axis=1)[:, None]] = keep.shape[1]
    return at


def _expand(compact: FloatArray, at: Index, r: int) -> FloatArray:
    """The inverse of the compaction: (b, r', k) back to (b, r, k), zero where dropped."""
    out = np.zeros((compact.shape[0], r + 1, compact.shape[2]))
    np.put_along_axis(out, at[..., None], compact, axis=1)
    return out[:, :r]


def _classify(size: int, rows: Index, cols: Index, p: Index, q: Index,
              rest: Index) -> tuple[npt.NDArray[np.int8], Index, Index]:
    """Each entry's (rows, cols) block kind (RR, RQ, QR or one of the pivots' P, a, a', c)
    and its row and column within that block."""
    role = np.zeros(size, np.int8)  # 0: R, 1: q, 2: p
    role[q], role[p] = 1, 2
    local = np.empty(size, np.intp)
    local[rest] = np.arange(rest.size)
    local[q] = local[p] = np.arange(q.size)
    kind = _KINDS[role[rows], role[cols]]
    if (kind < 0).any():  # cannot happen for pairs chosen by _independent_pairs
        raise AssertionError("a pair pivot meets the rest of J outside its q row/column")
    return kind, local[rows], local[cols]


def _few_products(kind: npt.NDArray[np.int8], lr: Index, lc: Index, e: int) -> bool:
    """Whether S's update J_RQ W J_QR has at most SCHUR_TERMS_MAX products per pair (each
    pair's entries in J_RQ times its entries in J_QR): then it is summed product by
    product (``PairPivots.schur_terms``) and J_RQ, J_QR are held as their entries."""
    per_pair = np.bincount(lc[kind == RQ], minlength=e) * np.bincount(lr[kind == QR], minlength=e)
    return bool(per_pair.sum() <= SCHUR_TERMS_MAX * e)


def _tail_slots(kind: npt.NDArray[np.int8], lr: Index, lc: Index, rq_rows: Index,
                qr_cols: Index, e: int, by_entries: bool) -> tuple[Index, int]:
    """Where each entry outside J_RR goes in the flat buffer after J_RR (r × r, first):
    J_RQ on its rows that hold anything (|rq_rows| × e), J_QR on its such columns
    (e × |qr_cols|), or with ``by_entries`` each block's entries in J's entry order; then
    the pivots' P, a, a', c (e each); and that part's length. Only J_RR depends on r (the
    rows dropped per element are never among these)."""
    if by_entries:
        rq, qr = kind == RQ, kind == QR
        rq_at, qr_at = np.cumsum(rq) - 1, rq.sum() + np.cumsum(qr) - 1
        pivots = int(rq.sum() + qr.sum())
    else:
        i = np.searchsorted(rq_rows, lr)  # an RQ entry's row among rq_rows
        k = np.searchsorted(qr_cols, lc)  # a QR entry's column among qr_cols
        rq_at, qr_at = i * e + lc, rq_rows.size * e + lr * qr_cols.size + k
        pivots = rq_rows.size * e + e * qr_cols.size  # the pivots' vectors follow the blocks
    tail = np.select(
        [kind == RQ, kind == QR, kind == PP, kind == PQ, kind == QP, kind == QQ],
        [rq_at, qr_at, pivots + lr, pivots + e + lr, pivots + 2 * e + lr, pivots + 3 * e + lr],
        default=-1)
    return tail, pivots + 4 * e


def as_span(idx: Index) -> Index | slice:
    """Consecutive indices in increasing order as a slice (basic indexing), else the
    indices (in any order)."""
    if idx.size and idx[-1] - idx[0] + 1 == idx.size and (np.diff(idx) == 1).all():
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def as_indices(idx: Index | slice) -> Index:
    return np.arange(idx.start, idx.stop) if isinstance(idx, slice) else idx


def _solve_blocks(B: ReducedBlocks, r_R: FloatArray, r_p: FloatArray,
                  r_q: FloatArray) -> tuple[FloatArray, ...]:
    """(z_R, z_p, z_q) with M z = r for M given by its blocks (each r_* (b, ·, k)), by a
    batched LU of the Schur complement S; and ‖M z − r‖² per element and column (b, k),
    from the same blocks."""
    if not r_p.shape[1]:  # nothing to eliminate: M = J_RR
        z_R = _solve_reduced(B.RR, r_R, B.diagonal, None, B.reach, B.lines, B.second,
                             B.limit)
        res = B.RR @ z_R - r_R
        return z_R, r_p, r_q, np.vecdot(res, res, axis=1)
    P, a, a2, c = B.P, B.a, B.a2, B.c
    det = P * c - a * a2
    rows, cols = B.rq_rows, B.qr_cols  # where J_RQ's rows and J_QR's columns are in R
    rhs_S = r_R.copy()
    rhs_S[:, rows] -= B.rq_times((P * r_q - a2 * r_p) / det)
    w = (P / det)[..., 0]
    shift = B.diagonal_update(w)
    if shift is not None:
        z_R = _solve_reduced(B.RR, rhs_S, B.diagonal, shift, B.reach, B.lines, B.second,
                             B.limit)
    else:
        z_R = _solve_reduced(B.schur(w, out=scratch("schur", B.RR.shape)), rhs_S, B.diagonal,
                             None, B.reach, B.lines, B.second, B.limit)
    QR_z = B.qr_times(z_R[:, cols])
    u = r_q - QR_z
    z_p, z_q = (c * r_p - a * u) / det, (P * u - a2 * r_p) / det
    # the residual's rows (R, q, p) in one array, for one sum of squares
    b, r, k = r_R.shape
    e = r_p.shape[1]
    res = np.empty((b, r + 2 * e, k))
    res_R = res[:, :r]
    res_R[...] = B.RR @ z_R - r_R
    res_R[:, rows] += B.rq_times(z_q)
    res[:, r : r + e] = c * z_q + a2 * z_p - u  # row q: J_qR z_R + c z_q + a' z_p − r_q
    res[:, r + e :] = P * z_p + a * z_q - r_p
    return z_R, z_p, z_q, np.vecdot(res, res, axis=1)


def _solve_reduced(S: FloatArray, rhs: FloatArray, k: int, shift: FloatArray | None = None,
                   reach: int | None = None, lines: PivotLines | None = None,
                   second: tuple[Index, Index] | None = None,
                   limit: float | None = None) -> FloatArray:
    """S z = rhs (batched) where S's first k rows and columns meet each other only on the
    diagonal d: z_C from the Schur complement S_CC − S_CI d⁻¹ S_IC of order r − k, then
    z_I = d⁻¹ (rhs_I − S_IC z_C). A zero in d gives a non-finite z, as a singular S does.
    With ``shift`` (b, k), S is the given matrix less ``shift`` on that diagonal. With
    ``reach``, S_CI and S_IC are zero beyond C's first ``reach`` rows and columns: the
    update is a product of that order (a lifted SOC block's rows meet only the variables
    and the block's two extra unknowns, :mod:`dpplayers._derivative.lifting`). With
    ``lines``, the update is summed line by line where S_CI's rows (or S_IC's columns)
    hold one entry. The complement is formed in scratch arrays: fresh ones of a few MB
    page-fault on every call (:mod:`.scratch`; half the product's time at order 101). With
    ``second``, the complement is solved by :func:`_solve_split`. ``limit``: see
    :func:`_solve_one`."""
    if not k:
        return _solve_each(S, rhs, limit=limit)
    b, r = S.shape[:2]
    h = r - k if reach is None else min(reach, r - k)
    d = np.diagonal(S[:, :k, :k], axis1=1, axis2=2)
    d = (d if shift is None else d - shift)[..., None]
    r_I = rhs[:, :k] / d
    S_CI = S[:, k : k + h, :k]
    if lines is None and second is None and h == r - k:  # a dense update of all of S_CC
        S_IC = S[:, :k, k:] / d  # (the fewest numpy calls: SOC projection, batch 1)
        z_C = _solve_each(S[:, k:, k:] - S_CI @ S_IC, rhs[:, k:] - S_CI @ r_I, overwrite=True,
                          limit=limit)
        return np.concatenate([r_I - S_IC @ z_C, z_C], axis=1)
    S_IC = S[:, :k, k : k + h]
    S_CC = scratch("reduced", (b, r - k, r - k))
    S_CC[...] = S[:, k:, k:]
    if lines is not None:
        lines.subtract(S_CC[:, :h, :h], S_CI, S_IC, d)
    else:
        scaled = np.divide(S_IC, d, out=scratch("scaled", S_IC.shape))
        S_CC[:, :h, :h] -= np.matmul(S_CI, scaled, out=scratch("update", (b, h, h)))
    rhs_C = rhs[:, k:].copy()
    rhs_C[:, :h] -= S_CI @ r_I
    z_C = (_solve_each(S_CC, rhs_C, overwrite=True, limit=limit) if second is None
           else _solve_split(S_CC, rhs_C, *second, limit=limit))
    return np.concatenate([r_I - (S_IC @ z_C[:, :h]) / d, z_C], axis=1)


@dataclass(frozen=True, eq=False)
class PivotLines:
    """S_CI d⁻¹ S_IC, S's update by its leading diagonal pivots I, line by line: where most
    rows of S_CI (``rows``; else most columns of S_IC) that hold anything hold one entry,
    each such row of the update is that entry over its pivot times a row of S_IC (a
    gather and a product), and only the other lines go through a dense product. A
    spectraplex projection's rows of A each meet one variable (210 of 211 rows; the
    dense product of order 211 × 210 × 211 took 4.9 ms at batch 16, the gather 1.0 ms);
    sparsemax's 100 bounds of 101 rows likewise. The lines are C's (the first ``reach``)."""

    rows: bool
    single: Index | slice  # the lines with one entry ...
    pivots: Index  # ... and that entry's pivot in I
    dense: Index  # the lines with more

    @classmethod
    def of(cls, S: sp.coo_array, k: int) -> PivotLines | None:
        """From S's pattern and its k leading diagonal pivots; None where most lines hold
        more than one entry (the dense product is then the cheaper)."""
        choices = []
        for rows in (True, False):
            line, pivot = (S.row, S.col) if rows else (S.col, S.row)
            at = (line >= k) & (pivot < k)
            line, pivot = line[at] - k, pivot[at]
            count = np.bincount(line)
            single = np.flatnonzero(count == 1)
            if 2 * single.size > np.count_nonzero(count):
                order = np.argsort(line, kind="stable")
                one = order[count[line[order]] == 1]
                choices.append((single.size, cls(rows, as_span(line[one]), pivot[one],
                                                 np.flatnonzero(count > 1))))
        return max(choices, key=lambda c: c[0])[1] if choices else None

    def subtract(self, S_CC: FloatArray, S_CI: FloatArray, S_IC: FloatArray,
                 d: FloatArray) -> None:
        """S_CC −= S_CI d⁻¹ S_IC, in place (S_CC: C's first lines, as S_CI and S_IC)."""
        single, t, dense = self.single, self.pivots, self.dense
        lines = as_indices(single)
        if self.rows:
            coef = S_CI[:, lines, t] / d[:, t, 0]
            S_CC[:, single] -= gather(S_IC, t, 1) * coef[..., None]
            if dense.size:
                S_CC[:, dense] -= (S_CI[:, dense] / d.transpose(0, 2, 1)) @ S_IC
        else:
            coef = S_IC[:, t, lines] / d[:, t, 0]
            S_CC[:, :, single] -= gather(S_CI, t, 2) * coef[:, None, :]
            if dense.size:
                S_CC[:, :, dense] -= S_CI @ (S_IC[:, :, dense] / d)


def _schur_pattern(r: int, e: int, kind: npt.NDArray[np.int8], lr: Index,
                   lc: Index) -> sp.coo_array:
    """The pattern of S = J_RR − J_RQ W J_QR (r × r), from the entries' blocks."""
    ones = lambda rows, cols, shape: sp.csr_array((np.ones(rows.size), (rows, cols)), shape=shape)
    rr, rq, qr = kind == RR, kind == RQ, kind == QR
    S = ones(lr[rr], lc[rr], (r, r)) + ones(lr[rq], lc[rq], (r, e)) @ ones(lr[qr], lc[qr], (e, r))
    return S.tocoo()


def _leading_diagonal(S: sp.coo_array, allowed: npt.NDArray[np.bool_]) -> int:
    """How many leading indices of R are diagonal pivots of S = J_RR − J_RQ W J_QR: each
    allowed with a diagonal entry in S's pattern, and no two of them meeting off the
    diagonal (cvxpy's x of ‖x − y‖², whose diagonal comes from its u pair alone: SOC
    projection 50 of 83). Fewer than DIAGONAL_MIN are not worth the extra products."""
    r = S.shape[0]
    on = S.row == S.col
    bad = ~allowed
    bad[np.setdiff1d(np.arange(r), S.row[on])] = True  # no diagonal entry
    k = int(np.argmax(bad)) if bad.any() else r
    off = ~on
    k = min(k, int(np.maximum(S.row[off], S.col[off]).min(initial=r)))
    return k if k >= DIAGONAL_MIN else 0


def _diagonal_reach(S: sp.coo_array, k: int) -> int:
    """How far past S's k leading diagonal pivots their rows and columns reach: one more
    than the last index of R they meet in S's pattern, less k (0: they meet nothing)."""
    row_side, col_side = (S.row < k) & (S.col >= k), (S.col < k) & (S.row >= k)
    last = max(S.col[row_side].max(initial=-1), S.row[col_side].max(initial=-1))
    return int(max(last + 1 - k, 0))


def _complement_pattern(S: sp.coo_array, k: int) -> tuple[sp.csr_array, sp.csr_array]:
    """The pattern of what the dense LU factorises, S_CC − S_CI d⁻¹ S_IC (S less its k
    leading diagonal pivots, :func:`_solve_reduced`): how full that LU's matrix is,
    whatever J's own fill (a spectraplex projection's: J 6% full, this 99.6%); and the
    update's own pattern, S_CI S_IC."""
    S = S.tocsr()
    update = S[k:, :k] @ S[:k, k:]
    C = S[k:, k:] + update
    C.sum_duplicates()
    return C, update


def _independent_diagonal(C: sp.csr_array, update: sp.csr_array) -> tuple[Index, Index] | None:
    """Indices of C (a pattern) that meet each other nowhere off the diagonal, chosen
    greedily, fewest neighbours first, and the other indices; None for fewer than
    DIAGONAL_MIN or than half of C. Only indices whose diagonal the update reaches: an active row's own
    entry there, D − I, is zero (an SOC fit's rows: every element's pivot was 0), while
    the update adds a² D_ii / d there. Sparsemax's bounds x_i ≥ 0 after its x are divided
    out: each meets only Σ x = 1, so its LU of order 101 is one of order 1."""
    C = C.tocoo()
    order = C.shape[0]
    off = C.row != C.col
    reached = np.zeros(order, bool)
    update = update.tocoo()
    reached[update.row[update.row == update.col]] = True
    near = sp.csr_array((np.ones(int(off.sum()), bool), (C.row[off], C.col[off])),
                        shape=(order, order))
    near = (near + near.T).tocsr()
    chosen = np.zeros(order, bool)
    for j in np.argsort(np.diff(near.indptr), kind="stable"):
        if reached[j] and not chosen[near.indices[near.indptr[j] : near.indptr[j + 1]]].any():
            chosen[j] = True
    if chosen.sum() < max(DIAGONAL_MIN, order / 2):  # the LU at least halved, or no gain:
        return None  # a nearest correlation matrix's 123 → 67 measured 1.04-1.11× slower
    return np.flatnonzero(chosen), np.flatnonzero(~chosen)


def _solve_split(S: FloatArray, rhs: FloatArray, J: Index, K: Index,
                 limit: float | None = None) -> FloatArray:
    """S z = rhs (batched) where S's indices J meet each other only on the diagonal d: the
    LU is of S_KK − S_KJ d⁻¹ S_JK alone, then z_J = d⁻¹ (rhs_J − S_JK z_K). A pivot of d
    below S's largest entry over PROBE_SUSPECT makes the element NaN, for ``Direct`` to
    judge (the LU's probe sees only what is left). Only where the first round's update
    reaches the pivot (:func:`_independent_diagonal`): a² D_ii / d, or −1 where D_ii = 0,
    so a small one means J is near-singular itself (an active row of A near zero)."""
    with np.errstate(all="ignore"):
        d = S[:, J, J][..., None]
        S_JK, S_KJ = S[:, J[:, None], K] / d, S[:, K[:, None], J]
        r_J = rhs[:, J] / d
        z = np.empty_like(rhs)
        z[:, K] = _solve_each(S[:, K[:, None], K] - S_KJ @ S_JK, rhs[:, K] - S_KJ @ r_J,
                              overwrite=True, limit=limit)
        z[:, J] = r_J - S_JK @ z[:, K]
        z[~(np.abs(d[..., 0]).min(axis=1) * PROBE_SUSPECT >= np.abs(S).max(axis=(1, 2)))] = np.nan
    return z


RR, RQ, QR, PP, PQ, QP, QQ = range(7)
#: Fewer leading diagonal pivots of S than this are left to the LU.
DIAGONAL_MIN = 16
#: S's update is summed product by product (``PairPivots.schur_terms``) when it has at most
#: this many products per pair, else by one dense product.
SCHUR_TERMS_MAX = 4
#: _KINDS[role of row, role of column] with roles 0: R, 1: q, 2: p (−1: not allowed).
_KINDS = np.array([[RR, RQ, -1], [QR, QQ, QP], [-1, PQ, PP]], dtype=np.int8)


def _independent_pairs(size: int, rows: Index, cols: Index, may_be_p: npt.NDArray[np.bool_],
                       may_be_q: npt.NDArray[np.bool_]) -> tuple[Index, Index]:
    """Pairs (p, q): p's column and row hold entries only at p and q, with (q, p) and
    (p, q) both stored; no q is another pair's p or q, and no chosen q's row or column
    meets another chosen q (so the 2×2 pivots decouple)."""
    off = rows != cols
    r_off, c_off = rows[off], cols[off]
    col_count = np.bincount(c_off, minlength=size)
    row_count = np.bincount(r_off, minlength=size)
    partner_in_col = np.full(size, -1)
    partner_in_col[c_off] = r_off  # the one off-diagonal row of column p (where count is 1)
    partner_in_row = np.full(size, -1)
    partner_in_row[r_off] = c_off
    candidates = np.flatnonzero((col_count == 1) & (row_count == 1)
                                & (partner_in_col == partner_in_row) & may_be_p)
    candidates = candidates[may_be_q[partner_in_col[candidates]]]
    if candidates.size == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    # the q's neighbours (row and column pattern), to keep the chosen q's apart
    neighbours = sp.csr_array((np.ones(r_off.size, bool), (r_off, c_off)), shape=(size, size))
    neighbours = (neighbours + neighbours.T).tocsr()
    taken = np.zeros(size, bool)  # a chosen p or q
    chosen_q = np.zeros(size, bool)
    ps, qs = [], []
    for p in candidates:
        q = int(partner_in_col[p])
        if taken[p] or taken[q]:
            continue
        near = neighbours.indices[neighbours.indptr[q] : neighbours.indptr[q + 1]]
        if chosen_q[near].any():
            continue
        taken[p] = taken[q] = chosen_q[q] = True
        ps.append(p)
        qs.append(q)
    return np.array(ps, np.intp), np.array(qs, np.intp)


def _solve_each(S: FloatArray, rhs: FloatArray, overwrite: bool = False,
                limit: float | None = None) -> FloatArray:
    """Batched LU solve, one LAPACK LU per element (:func:`_solve_one`); a singular or
    possibly near-singular element gives NaN instead of failing the batch or a wrong
    answer, for the caller to hand to ``Direct`` (which decides by gecon; with ``limit``,
    gecon decides here). An empty S
    (every unknown eliminated: equality-only problems) has the empty solution; LAPACK
    refuses order 0. With ``overwrite``, S (C-contiguous, the caller's scratch) is
    factorised in place.

    Possibly near-singular: ‖S‖_F ‖S⁻¹g‖₂ / ‖g‖₂ above PROBE_SUSPECT, for a fixed probe g
    (:mod:`dpplayers._derivative.conditioning`). gecon would cost as much as the solve at
    small orders, and the LU's pivots do not separate (smallest over largest 3e-4 at cond
    2e7, 2e-3 on well-posed problems). numpy's batched solve was used below order 64 until
    measured against this loop (``routes.py``, backward, interleaved, 2026-12-07): the loop
    was as fast or faster on every workload that took it (qp50 0.95–1.00, eq_lsq 0.97–1.00,
    lp_inactive 0.93–0.97; soc_proj 1.01–1.06), numpy's needing the probe as an extra
    right-hand side column."""
    b, r = rhs.shape[:2]
    if not r:
        return np.zeros(rhs.shape)
    if b == 1:
        z = _solve_one(S[0], rhs[0], overwrite, limit=limit)
        return np.full(rhs.shape, np.nan) if z is None else z[None]
    out = np.empty(rhs.shape)
    norms = np.einsum("bij,bij->b", S, S).tolist()  # ‖S‖_F² for all at once: a call each fewer
    for i in range(b):
        z = _solve_one(S[i], rhs[i], overwrite, norms[i], limit)
        out[i] = np.nan if z is None else z
    return out


def _solve_one(S: FloatArray, rhs: FloatArray, overwrite: bool = False,
               norm_sq: float | None = None, limit: float | None = None) -> FloatArray | None:
    """S z = rhs (r, k) by LAPACK's getrf and getrs, or None where S is singular or possibly
    near-singular (with ``limit``, where a possibly near-singular S's gecon estimate is above
    it: J whose D has 1×1 blocks only are well-posed far past the probe's threshold, e.g. an
    MPC's cond₁ to 9e6, and handing those to ``Direct``, whose gecon accepts them, cost 12% of
    mpc20's elements ~1.4 ms each): the estimate of :func:`_solve_each` with U⁻ᵀg for S⁻¹g, by one
    triangular solve with the LU's U (of Sᵀ = PLU, so S = Uᵀ Lᵀ Pᵀ, L unit lower
    triangular with |l_ij| ≤ 1: a near-null direction of S is one of Uᵀ, within ‖L‖ ≤ r;
    a second right-hand side costs twice as much: 11 against 6 µs at order 171) and BLAS
    dots (numpy's reductions cost µs each here).

    Sᵀ, not S: C-ordered S is a Fortran-ordered Sᵀ, so LAPACK takes it without scipy's
    transposing copy (in place with ``overwrite``). getrf and getrs, not gesv: scipy's
    gesv holds the GIL, so the batched derivative's chunks did not factorise side by side
    on the thread pool (64 LUs of order 211 on two threads: 20 ms as one, 13 ms so)."""
    if norm_sq is None:  # ‖S‖_F², before S is overwritten
        flat = S.ravel()
        norm_sq = blas.ddot(flat, flat)
    lu, piv, info = lapack.dgetrf(S.T, overwrite_a=overwrite)
    if info != 0:
        return None
    z, _ = lapack.dgetrs(lu, piv, rhs, trans=1)
    inverse = blas.dtrsv(lu, probe(S.shape[0]), trans=1)
    # NaN in the estimate compares False: suspect too
    suspect = not norm_sq * blas.ddot(inverse, inverse) <= PROBE_SUSPECT**2 * S.shape[0]
    if suspect and (limit is None or not _within(lu, S.shape[0], norm_sq, limit)):
        return None
    return z


def _within(lu: FloatArray, r: int, norm_sq: float, limit: float) -> bool:
    """Whether gecon's cond₁ estimate from the LU of Sᵀ (order r, ‖S‖_F² = norm_sq) is at
    most ``limit``; with √r ‖S‖_F ≥ ‖S‖_∞ = ‖Sᵀ‖₁ for the norm (S may be overwritten by
    now), so the estimate is at least gecon's own."""
    rcond, info = lapack.dgecon(lu, math.sqrt(r * norm_sq), norm="1")
    return bool(info == 0 and rcond > 0.0 and 1.0 / rcond <= limit)
