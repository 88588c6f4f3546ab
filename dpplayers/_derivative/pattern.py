"""The fixed sparsity pattern of J = [[P, Aᵀ D], [A, D − I]] for one compiled problem.

P and A keep one pattern for every θ (the compiler fixes them) and D = DΠ_K*(v) is block
diagonal with one dense block per cone, so J's pattern is fixed too. Built once per
program, it turns each element's J into a few gathers and one concatenation, its entries
in the order of their sources (what the batched dense solve reads), and one gather more
into the CSC data array: no sparse products, no sorting and no format conversions per
element.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from .._sparse import CSCPattern, concatenated_ranges, gather, set_columns, sorted_runs
from ..cones import BatchedProjectionDerivative, ProductCone, ProjectionDerivative
from .banded import BandLayout
from .lifting import LiftLayout
from .pair_pivots import RR
from .plan import EliminationPlan
from .tiles import TiledEntries, TileFill, TilePlacement, dense_tiles

Index = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]


def _scalar_blocks(d_rows: Index, coupled: npt.NDArray[np.bool_]) -> tuple[Index, Index]:
    """(row, position in D's values) of D's 1×1 blocks: the rows whose run of block entries
    is one long (a d × d block gives its rows runs of d), less the ``coupled`` rows (a
    lifted block's diagonal: one entry per row, coupled through its extra unknowns)."""
    starts = np.flatnonzero(np.diff(d_rows, prepend=-1) != 0)
    length = np.diff(starts, append=d_rows.size)
    pos = starts[length == 1]
    pos = pos[~coupled[d_rows[pos]]]
    return d_rows[pos], pos


#: D blocks of at least this order get Aᵀ D as a dense product: pairing each A entry with
#: the d entries of its row of D costs d gathers per entry (a 31-row SOC with dense rows
#: of A: 46,000 pairs and 0.17 ms), the product d² flops per distinct column. Not where
#: each of the block's rows of A holds at most one entry (``X >> 0`` on a variable: Aᵀ D
#: is D's rows scaled), the product of order u = d then being d³ multiply-adds for d²
#: pairs: the spectraplex projection's PSD block of 210 rows, backward at batch 8 19.3
#: against 23.1 ms, at batch 1 1.90 against 2.35 ms.
DENSE_BLOCK = 6


@dataclass(frozen=True, eq=False)
class _DenseProduct:
    """Aᵀ D restricted to one D block of order d: W (d × u, the block's rows of A on their
    u distinct columns) is filled from A's data, and Wᵀ D lands on u × d positions of J."""

    d: int
    u: int
    d_start: int  # the block's first value in ``block_values`` order (d × d, row-major)
    w_pos: Index  # flat position in W of ...
    w_src: Index  # ... this A datum
    out_rows: Index  # J rows (the columns of A), row-major over (u, d)
    out_cols: Index  # J columns (n + the block's rows)

    def values(self, A_data: FloatArray, D_values: FloatArray) -> FloatArray:
        """(u·d, b) for data columns A_data (nnz, b) and D_values (entries, b)."""
        b = A_data.shape[1]
        W = np.zeros((b, self.d * self.u))
        set_columns(W, self.w_pos, A_data.take(self.w_src, 0).T)
        block = D_values[self.d_start : self.d_start + self.d * self.d].T.reshape(b, self.d, self.d)
        return (W.reshape(b, self.d, self.u).transpose(0, 2, 1) @ block).reshape(b, -1).T


def _dense_products(n: int, m: int, A_rows: Index, A_cols: Index, cone: ProductCone,
                    lift: LiftLayout | None) -> tuple[list[_DenseProduct], npt.NDArray[np.bool_]]:
    """One :class:`_DenseProduct` per D block of order ≥ DENSE_BLOCK (not lifted: a lifted
    block's D entries are its diagonal) whose rows of A hold more than one entry somewhere,
    and a mask of the rows left to the pairing."""
    small = np.ones(m, bool)
    dense, start = [], 0
    by_row = np.argsort(A_rows, kind="stable")
    row_starts = np.searchsorted(A_rows[by_row], np.arange(m + 1))
    lifted = lift.lifted if lift is not None else (False,) * len(cone.groups)
    for (_, idx), is_lifted in zip(cone.groups, lifted):
        k, d = idx.shape
        if is_lifted:
            start += k * d
            continue
        if d >= DENSE_BLOCK:
            for b in range(k):
                rows = idx[b]
                if (row_starts[rows + 1] - row_starts[rows] <= 1).all():
                    continue  # one entry a row (X ⪰ 0 on a variable): d pairs each
                small[rows] = False
                ent = np.concatenate([by_row[row_starts[r]:row_starts[r + 1]] for r in rows])
                local = np.repeat(np.arange(d), row_starts[rows + 1] - row_starts[rows])
                cols, t = np.unique(A_cols[ent], return_inverse=True)
                u = cols.size
                dense.append(_DenseProduct(
                    d, u, start + b * d * d, (local * u + t).astype(np.intp), ent,
                    np.repeat(cols, d), np.tile(n + rows, u)))
        start += k * d * d
    return dense, small


@dataclass(frozen=True, eq=False)
class KKTPattern:
    """J's CSC pattern and where each source entry lands in its data array."""

    n: int
    m: int
    indices: npt.NDArray[np.int32]
    indptr: npt.NDArray[np.int32]
    p_src: Index  # which upper-triangle datum each full-P entry copies
    atd_a: Index  # the products A_ij D_ic of Aᵀ D (top right): which A datum ...
    atd_d: Index  # ... times which D block value
    dense: tuple[_DenseProduct, ...]  # Aᵀ D of large blocks, as dense products
    p_full: tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]] | None  # CSC of full P
    entry_rows: Index  # J's row and column of each entry in ``entries`` order: the sources'
    entry_cols: Index  # (Aᵀ D paired and dense, A, D, P), each J position once
    paired_starts: Index | None  # runs of Aᵀ D's paired products onto one J position (the
    # products are sorted so), summed; None where every product lands alone
    minus_one: Index  # the entries (D's diagonal) that −I takes one from
    to_csc: Index  # the entry at each position of J's CSC data
    a_entries: slice  # where A's entries are among them (in A's data order)
    zero_rows: int = 0  # the first rows of A, whose cone is {0} (equalities): there D = I
    scalar_rows: Index = field(default_factory=lambda: np.zeros(0, np.intp))  # the rows of A
    # whose block of D is 1×1, and where their D value is in ``block_values`` order:
    scalar_d: Index = field(default_factory=lambda: np.zeros(0, np.intp))
    lift: LiftLayout | None = None  # J̃'s layout, where this is the lifted pattern ...
    lifted: KKTPattern | None = None  # ... and J's lifted pattern, where J has one
    position: Index | None = None  # where each unknown of J (J̃) is in this pattern's
    # order, where that is not J's: the batched solve's J̃ puts the lifted rows first
    leading: int = 0  # ... the first ``leading`` of them
    batch_lifted: KKTPattern | None = None  # J̃ so, for the batched solve
    #: J's entries without D's blocks that the batched executor writes as tiles (None: no
    #: such block, or a lifted or permuted pattern): :mod:`.tiles`
    tiled: TiledEntries | None = None

    @classmethod
    def build(cls, n: int, m: int, A_rows: Index, A_cols: Index, P_rows: Index | None,
              P_cols: Index | None, cone: ProductCone, lift: LiftLayout | None = None,
              lifted_first: bool = False) -> KKTPattern:
        """J's pattern; with ``lift``, J̃'s (:mod:`dpplayers._derivative.lifting`), whose D
        values are ``lift.values(D)``; ``lifted_first``: with the lifted blocks' rows as
        J̃'s first unknowns (``position``), where the batched solve divides them out by
        their diagonal (S's leading diagonal pivots, :mod:`.pair_pivots`)."""
        if lift is None:
            d_rows, d_cols = cone.block_entries.rows, cone.block_entries.cols
        else:
            d_rows, d_cols = lift.matrix_rows, lift.matrix_cols
        coupled = np.zeros(m, bool)
        for (_, idx), is_lifted in zip(cone.groups, lift.lifted if lift is not None else ()):
            coupled[idx.ravel()] = is_lifted
        scalar_rows, scalar_d = _scalar_blocks(d_rows, coupled)
        # Aᵀ D of blocks of order ≥ DENSE_BLOCK with fuller rows of A as small dense
        # products (below); of the others by pairing every A entry (i, j) with every D
        # entry (i, c) in the same row i
        dense, small_rows = _dense_products(n, m, A_rows, A_cols, cone, lift)
        paired = np.flatnonzero(small_rows[A_rows])
        order = np.argsort(d_rows, kind="stable")
        counts = np.bincount(d_rows, minlength=m)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        reps = counts[A_rows[paired]]
        atd_a = np.repeat(paired, reps)
        atd_d = order[concatenated_ranges(starts[A_rows[paired]], reps)]
        # products onto the same J position (a column of A meeting several rows of one
        # small block) next to each other, to be summed into one entry
        size = n + m + (lift.extra if lift is not None else 0)
        atd_rows, atd_cols = A_cols[atd_a], n + d_cols[atd_d]
        by_place, first = sorted_runs(atd_cols.astype(np.int64) * size + atd_rows)
        atd_a, atd_d = atd_a[by_place], atd_d[by_place]
        sources = [
            (atd_rows[by_place][first], atd_cols[by_place][first]),  # Aᵀ D, paired
            *[(b.out_rows, b.out_cols) for b in dense],  # Aᵀ D, dense blocks
            (n + A_rows, A_cols),  # A
            (n + d_rows, n + d_cols),  # D (−I lands on its diagonal)
        ]
        p_src, p_full = np.zeros(0, np.intp), None
        if P_rows is not None and P_cols is not None:
            # full symmetric P in CSC order; p_src says which upper-triangle datum each copies
            off = P_rows != P_cols
            full_r = np.concatenate([P_rows, P_cols[off]])
            full_c = np.concatenate([P_cols, P_rows[off]])
            perm = np.argsort(full_c.astype(np.int64) * n + full_r, kind="stable")
            full_r, full_c = full_r[perm], full_c[perm]
            p_src = np.concatenate([np.arange(P_rows.size), np.flatnonzero(off)])[perm]
            p_full = (full_r.astype(np.int32),
                      np.searchsorted(full_c, np.arange(n + 1)).astype(np.int32))
            sources.append((full_r, full_c))
        if lift is not None:  # J̃'s entries on its extra rows and columns
            sources.append((lift.rows, lift.cols))
        rows = np.concatenate([r for r, _ in sources]).astype(np.intp)
        cols = np.concatenate([c for _, c in sources]).astype(np.intp)
        position, leading = None, 0
        if lifted_first:
            # the lifted rows; the variables they meet and the extra unknowns, the only
            # indices they meet (S's update by their elimination is a leading block of
            # that order); the other variables and rows
            lead = n + np.flatnonzero(coupled)
            met = np.zeros(n, bool)
            met[A_cols[coupled[A_rows]]] = True
            order = np.concatenate([lead, np.flatnonzero(met), np.arange(n + m, size),
                                    np.flatnonzero(~met), n + np.flatnonzero(~coupled)])
            position = np.empty(size, np.intp)
            position[order] = np.arange(size)
            leading = lead.size
            rows, cols = position[rows], position[cols]
        to_csc = np.argsort(cols.astype(np.int64) * size + rows, kind="stable")
        csc_rows, csc_cols = rows[to_csc], cols[to_csc]
        if np.any((np.diff(csc_cols) == 0) & (np.diff(csc_rows) == 0)):
            raise AssertionError("two sources of J land on one position")  # blocks are disjoint
        a_start = sum(r.size for r, _ in sources[: len(dense) + 1])
        d_start = a_start + A_rows.size
        minus_one = d_start + np.flatnonzero(d_rows == d_cols)
        if not np.array_equal(np.sort(d_rows[d_rows == d_cols]), np.arange(m)):
            raise AssertionError("D's blocks do not cover each row's diagonal once")
        tiled = None
        tiles = () if lift is not None or lifted_first else \
            dense_tiles(m, A_rows, A_cols, cone.groups)
        if tiles:
            keys = (atd_cols.astype(np.int64) * size + atd_rows)[by_place]
            tiled = TiledEntries.of(tiles, keys, atd_d, first, d_start - first.size,
                                    d_rows.size, d_start, p_src.size, minus_one)
        return cls(
            n=n, m=m, indices=csc_rows.astype(np.int32),
            indptr=np.searchsorted(csc_cols, np.arange(size + 1)).astype(np.int32),
            p_src=p_src, atd_a=atd_a, atd_d=atd_d, dense=tuple(dense), p_full=p_full,
            entry_rows=rows, entry_cols=cols,
            paired_starts=None if first.size == by_place.size else first,
            minus_one=minus_one, to_csc=to_csc, a_entries=slice(a_start, d_start),
            zero_rows=cone.dims.zero, scalar_rows=scalar_rows, scalar_d=scalar_d, lift=lift,
            position=position, leading=leading, tiled=tiled,
        )

    @property
    def extra(self) -> int:
        """J̃'s extra unknowns (0 for J itself)."""
        return self.lift.extra if self.lift is not None else 0

    @property
    def size(self) -> int:
        """The order of J (of J̃ for a lifted pattern)."""
        return self.n + self.m + self.extra

    def d_values(self, D: ProjectionDerivative | BatchedProjectionDerivative) -> FloatArray:
        """D's values as this pattern reads them (``entries``): its block values, or for a
        lifted pattern the lifted layout's (:meth:`LiftLayout.values`); (values, b) for a
        batch."""
        return D.block_values() if self.lift is None else self.lift.values(D)

    def full_P(self, P_upper_data: FloatArray) -> sp.csc_matrix | None:
        """The symmetric P from its upper-triangle data (same pattern every call)."""
        if self.p_full is None:
            return None
        return self._P_pattern.matrix(P_upper_data[self.p_src])

    def assemble(self, P_upper_data: FloatArray | None, A_data: FloatArray,
                 D_values: FloatArray) -> sp.csc_matrix:
        """J for one element from its data vectors and DΠ's block values."""
        return self._J_pattern.matrix(self.values(P_upper_data, A_data, D_values))

    @functools.cached_property
    def plan(self) -> EliminationPlan:
        """Which unknowns of J (J̃) are pivoted out before a factorisation, and by which
        executor (:mod:`.plan`): chosen once per program."""
        return EliminationPlan.of(self)

    @functools.cached_property
    def band(self) -> BandLayout | None:
        """J's band layout (:mod:`.banded`) where its band LU saves enough against the
        batched executor's dense one; None for a lifted or permuted pattern."""
        if self.lift is not None or self.lifted is not None or self.position is not None:
            return None
        return BandLayout.of(self.size, self.entry_rows, self.entry_cols,
                             self.plan.batched_work)

    @functools.cached_property
    def order(self) -> Index | None:
        """The unknowns of J (J̃) in this pattern's order (the inverse of ``position``)."""
        if self.position is None:
            return None
        return np.argsort(self.position)

    def at(self, index: Index) -> Index:
        """Where J's (J̃'s) unknowns ``index`` are in this pattern's order."""
        return index if self.position is None else self.position[index]

    def entries(self, P_upper_data: FloatArray | None, A_data: FloatArray,
                D_values: FloatArray, tiled: bool = False) -> FloatArray:
        """J's entries in ``entry_rows``/``entry_cols`` order for one element, or (nnz, b)
        for data and block values given as columns (nP, b), (nA, b), (nD, b): the sources
        side by side, with no sum but −I's and the paired products' (a scatter onto J's
        data cost more than the rest of the assembly). With ``tiled``, only those outside
        the tiles (``self.tiled.kept``; the tiles: :meth:`tile_fill`)."""
        one = A_data.ndim == 1
        if one:
            P_upper_data = None if P_upper_data is None else P_upper_data[:, None]
            A_data, D_values = A_data[:, None], D_values[:, None]
        atd_a, atd_d, starts, minus_one = self.atd_a, self.atd_d, self.paired_starts, \
            self.minus_one
        if tiled:
            t = self.tiled
            atd_a, atd_d, starts, minus_one = atd_a[t.products], atd_d[t.products], \
                t.paired_starts, t.minus_one
        # ``take`` (through ``gather``, which spares a strided view its whole copy), not
        # fancy indexing: about half the cost on these 2-D arrays
        products = gather(A_data, atd_a, 0) * gather(D_values, atd_d, 0)
        if starts is not None:
            products = np.add.reduceat(products, starts, axis=0)
        matrix = D_values if self.lift is None else D_values[: self.lift.n_matrix]
        if tiled:
            matrix = gather(matrix, self.tiled.d_kept, 0)
        parts = [products, *[b.values(A_data, D_values) for b in self.dense], A_data, matrix]
        if self.p_full is not None:
            parts.append(P_upper_data.take(self.p_src, 0) if P_upper_data is not None
                         else np.zeros((self.p_src.size, A_data.shape[1])))
        if self.lift is not None:
            parts.append(self.lift.entries(A_data, D_values))
        out = np.concatenate(parts)
        # one column: index it flat (a 1-D fancy update costs half as much)
        (out.reshape(-1) if out.shape[1] == 1 else out)[minus_one] -= 1.0
        return out[:, 0] if one else out

    @functools.cached_property
    def tile_placement(self) -> TilePlacement | None:
        """Where the tiles land in the batched executor's blocks (None: it cannot take
        them, a pair pivot having taken one of their indices)."""
        if self.tiled is None:
            return None
        pairs = self.plan.pairs
        return TilePlacement.of(self.tiled, self.n, pairs.rest, pairs.slot,
                                pairs.transposed.slot, pairs.kind == RR)

    def tile_fill(self, A_data: FloatArray, D_values: FloatArray) -> TileFill | None:
        """The tiles of a chunk's elements, data and block values given as columns (nA, b)
        and (nD, b); None where this pattern has none the batched executor takes, or where
        they do not pay at this chunk's size (then its ``entries`` are all of J's)."""
        placement = self.tile_placement
        if placement is None or not TileFill.pays(self.tiled, D_values.shape[1]):
            return None
        return TileFill(self.tiled, placement, D_values.T, A_data.T)

    def values(self, P_upper_data: FloatArray | None, A_data: FloatArray,
               D_values: FloatArray) -> FloatArray:
        """J's data array in the pattern's CSC order (see :meth:`entries`)."""
        return self.entries(P_upper_data, A_data, D_values).take(self.to_csc, 0)

    @functools.cached_property
    def _J_pattern(self) -> CSCPattern:
        return CSCPattern((self.size,) * 2, self.indices, self.indptr)

    @functools.cached_property
    def _P_pattern(self) -> CSCPattern:
        return CSCPattern((self.n, self.n), *self.p_full)
