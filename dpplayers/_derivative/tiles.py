"""D's large blocks written into the batched executor's J_RR as dense tiles, not entries.

A PSD (or large SOC) block of D whose rows of A each hold one entry, in distinct columns
(``X >> 0`` on a variable), puts two dense d × d tiles into J: D − I on the block's rows
and columns, and Aᵀ D, the block's rows scaled by their A entries, on the variables' rows.
Assembled as J's entries, each of the 2d² values is gathered, multiplied, concatenated
into an (entries, b) array and scattered into the blocks buffer by index: the spectraplex
projection (d = 210, 88,451 of J's 90,851 entries) spent 6.8 of its 20.7 ms backward at
batch 8 there. Where the block's rows and the variables are in R (what the pair pivots
leave), the tiles are written by slices straight from DΠ's block values, and only J's
other entries go through the scatter. Every value is the product or difference that
:meth:`~.pattern.KKTPattern.entries` forms, in the same order: the blocks are bit for bit
those of the scatter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .._sparse import gather
from .pair_pivots import as_span

Index = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]

#: A chunk of the batch writes its blocks as tiles where each tile holds at least this many
#: of J's entries over the chunk's elements (2 d² b); else every entry goes through the
#: scatter. A tile costs a few numpy calls of its own, the scatter one for all of J's
#: entries. Measured (backward, tiles on / off, interleaved, one thread): nearest
#: correlation with PSD blocks of order d = 6, 10, 21 at batches 1–32 (up to 28k entries
#: a tile) 0.99–1.11; d = 55: 1.04 at batch 1 (6k), 0.92 / 0.90 at batches 8 / 32 (48k,
#: 194k); the spectraplex projection, d = 210: 0.95 at batch 1 (88k), 0.79 at 8 and 32.
TILE_MIN_ENTRIES = 40_000
#: Blocks of lower order are never tiles (they could pay only in chunks of hundreds).
TILE_MIN_ORDER = 14


@dataclass(frozen=True, eq=False)
class DenseTile:
    """One block of D written as tiles: its values and rows, and its rows' A entries."""

    d: int
    start: int  # the block's first value in ``block_values`` order (d × d, row-major)
    rows: Index  # the block's rows of A (J's rows n + rows)
    with_a: Index | slice  # the block's rows (0..d−1) that hold an entry of A ...
    a_src: Index  # ... that entry's position in A's data ...
    a_col: Index  # ... and its column (the J row its Aᵀ D row lands on)


def dense_tiles(m: int, A_rows: Index, A_cols: Index, groups) -> tuple[DenseTile, ...]:
    """The blocks of D of order ≥ TILE_MIN_ORDER whose rows of A hold at most one entry
    each, in distinct columns: their Aᵀ D products then land alone, one per position, and
    make a tile. ``groups``: the dual cone's (cone, (k, d) rows) pairs (not lifted)."""
    by_row = np.argsort(A_rows, kind="stable")
    count = np.bincount(A_rows, minlength=m)
    first = np.concatenate([[0], np.cumsum(count)[:-1]])
    tiles, start = [], 0
    for _, idx in groups:
        k, d = idx.shape
        for b in range(k):
            rows = idx[b]
            if d < TILE_MIN_ORDER or (count[rows] > 1).any():
                continue
            with_a = np.flatnonzero(count[rows] == 1)
            src = by_row[first[rows[with_a]]]
            if np.unique(A_cols[src]).size < src.size:
                continue  # two rows on one column: their products sum
            full = with_a.size == d
            tiles.append(DenseTile(d, start + b * d * d, rows,
                                   slice(0, d) if full else with_a, src, A_cols[src]))
        start += k * d * d
    return tuple(tiles)


@dataclass(frozen=True, eq=False)
class TiledEntries:
    """What J's entries are without the tiles: which of the pattern's paired Aᵀ D products
    and D values are kept, the runs the kept products sum in, where −I lands among them, and
    where each kept entry is in the full ``entries`` order (to take its buffer slot)."""

    tiles: tuple[DenseTile, ...]
    products: Index  # kept paired products (in the pattern's sorted product order)
    paired_starts: Index | None
    d_kept: Index  # kept D values (``block_values`` order)
    minus_one: Index  # in the kept entries
    kept: Index  # each kept entry's place among J's entries

    @classmethod
    def of(cls, tiles: tuple[DenseTile, ...], product_keys: Index, product_d: Index,
           first: Index, n_other: int, n_values: int, d_offset: int, n_after: int,
           minus_one: Index) -> TiledEntries:
        """From the pattern's paired products (their J positions as sort keys, their D
        values, where each position's run starts), the count of entries between them and
        D's (the dense products and A), D's value count and offset among the entries, the
        count after them (P, J̃'s), and the full entries' −I."""
        in_tile = np.zeros(n_values, bool)
        for t in tiles:
            in_tile[t.start : t.start + t.d * t.d] = True
        products = np.flatnonzero(~in_tile[product_d])
        keys = product_keys[products]
        starts = np.flatnonzero(np.diff(keys, prepend=-1) != 0)
        # the full entries' paired runs that are kept (a tile's products are runs of one)
        run_kept = ~in_tile[product_d[first]]
        d_kept = np.flatnonzero(~in_tile)
        kept = np.concatenate([np.flatnonzero(run_kept),
                               first.size + np.arange(n_other),
                               d_offset + d_kept,
                               d_offset + n_values + np.arange(n_after)])
        where = np.searchsorted(kept, minus_one)
        hit = (where < kept.size) & (kept[np.minimum(where, kept.size - 1)] == minus_one)
        return cls(tiles, products, None if starts.size == keys.size else starts, d_kept,
                   where[hit], kept)


@dataclass(frozen=True, eq=False)
class TilePlacement:
    """Where each tile lands in J_RR (R's local indices) for J and for Jᵀ, and the kept
    entries' buffer slots in either layout."""

    slot: Index  # J's kept entries' slots (``PairPivots.slot[kept]``)
    slot_T: Index  # Jᵀ's
    places: tuple[tuple[slice, Index | slice], ...]  # per tile: the block's rows, the A columns'

    @classmethod
    def of(cls, tiled: TiledEntries, n: int, rest: Index, slot: Index,
           slot_T: Index, kind_rr: npt.NDArray[np.bool_]) -> TilePlacement | None:
        """None where a tile entry is not in J_RR (a pair pivot took one of its indices)
        or a block's rows are not one run of R."""
        in_tile = np.ones(kind_rr.size, bool)
        in_tile[tiled.kept] = False
        if not kind_rr[in_tile].all():
            return None
        places = []
        for t in tiled.tiles:
            rows = n + t.rows
            local = np.searchsorted(rest, rows)
            cols = np.searchsorted(rest, t.a_col)
            if not (np.array_equal(rest[np.minimum(local, rest.size - 1)], rows)
                    and np.array_equal(rest[np.minimum(cols, rest.size - 1)], t.a_col)):
                return None
            at = as_span(local)
            if not isinstance(at, slice):
                return None
            places.append((at, as_span(cols)))
        return cls(slot[tiled.kept], slot_T[tiled.kept], tuple(places))


@dataclass(frozen=True, eq=False)
class TileFill:
    """One chunk's tiles, for :meth:`~.pair_pivots.PairPivots.blocks`: the kept entries'
    slots and the tiles' writes, for J or (``transposed``) Jᵀ."""

    tiled: TiledEntries
    placement: TilePlacement
    D: FloatArray  # (b, values): DΠ's block values, element-major
    A: FloatArray  # (b, nnz of A)
    transposed: bool = False

    @staticmethod
    def pays(tiled: TiledEntries, b: int) -> bool:
        """Whether a chunk of b elements writes its tiles (TILE_MIN_ENTRIES)."""
        return 2 * min(t.d for t in tiled.tiles) ** 2 * b >= TILE_MIN_ENTRIES

    @property
    def slot(self) -> Index:
        return self.placement.slot_T if self.transposed else self.placement.slot

    @property
    def T(self) -> TileFill:
        return TileFill(self.tiled, self.placement, self.D, self.A, not self.transposed)

    def write(self, RR: FloatArray) -> None:
        """The tiles into RR (b, r, r), a view of the zeroed blocks buffer."""
        b = RR.shape[0]
        for t, (at, cols) in zip(self.tiled.tiles, self.placement.places):
            block = self.D[:, t.start : t.start + t.d * t.d].reshape(b, t.d, t.d)
            a = gather(self.A, t.a_src, 1)[:, :, None]  # a_i D_i· (as ``entries``: A · D)
            rows = block[:, t.with_a]
            if self.transposed:
                block, rows, a = (x.transpose(0, 2, 1) for x in (block, rows, a))
                target = (slice(None), at, cols)
            else:
                target = (slice(None), cols, at)
            RR[:, at, at] = block
            if isinstance(cols, slice):  # straight into the buffer, no temporary
                np.multiply(a, rows, out=RR[target])
            else:
                RR[target] = a * rows
            np.einsum("bii->bi", RR[:, at, at])[...] -= 1.0  # −I (a writable view)
