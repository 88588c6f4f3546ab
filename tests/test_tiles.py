"""D's large blocks written into the batched executor's blocks as tiles (dpplayers._derivative.tiles):
the blocks are bit for bit those of J's entries scattered one by one, for J and Jᵀ, at more
than one parameter point; programs whose blocks cannot be tiles keep the scatter. (The
answers on the tiled route are judged against CVXPY and finite differences by the zoo:
tests/test_zoo_routes.py, "D's blocks written as tiles".)"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

import dpplayers
from dpplayers._derivative import batch, tiles


def _symmetric(rng, b, k, shift=0.0, scale=0.5):
    """b random symmetric k × k matrices: shift·I + scale·(N + Nᵀ)."""
    N = rng.standard_normal((b, k, k))
    return [shift * np.eye(k) + scale * (N + N.transpose(0, 2, 1))]


def _spectraplex(k=20):
    X = cp.Variable((k, k), symmetric=True)
    C = cp.Parameter((k, k), name="C")
    prob = cp.Problem(cp.Minimize(cp.sum_squares(X - C)), [X >> 0, cp.trace(X) == 1])
    sample = lambda rng, b: _symmetric(rng, b, k)
    return prob, [C], X, sample


def _correlation(k=12):
    X = cp.Variable((k, k), symmetric=True)
    C = cp.Parameter((k, k), name="C")
    prob = cp.Problem(cp.Minimize(cp.sum_squares(X - C)), [X >> 0, cp.diag(X) == 1])
    sample = lambda rng, b: _symmetric(rng, b, k, shift=1.0, scale=0.3)
    return prob, [C], X, sample


def _bordered(k=13):
    """A PSD block whose border is constant: some of its rows hold no entry of A."""
    X = cp.Variable((k, k), symmetric=True)
    C = cp.Parameter((k, k), name="C")
    M = cp.bmat([[X, np.zeros((k, 1))], [np.zeros((1, k)), np.ones((1, 1))]])
    prob = cp.Problem(cp.Minimize(cp.sum_squares(X - C)), [M >> 0, cp.trace(X) == 1])
    sample = lambda rng, b: _symmetric(rng, b, k)
    return prob, [C], X, sample


def _permuted(k=12):
    """The block's variables in another order than its rows (the Aᵀ D tile's rows are
    scattered over R, not one run)."""
    X = cp.Variable((k, k), symmetric=True)
    C = cp.Parameter((k, k), name="C")
    perm = np.random.default_rng(7).permutation(k)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(X - C)),
                      [X[perm][:, perm] >> 0, cp.trace(X) == 1])
    sample = lambda rng, b: _symmetric(rng, b, k)
    return prob, [C], X, sample


def _second_order(n=20):
    x = cp.Variable(n)
    y = cp.Parameter(n, name="y")
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [cp.norm(x) <= 1.0])
    sample = lambda rng, b: [2.0 * rng.standard_normal((b, n))]
    return prob, [y], x, sample


def _capture(monkeypatch) -> list:
    """Each DenseBatch built, with J's entries as the scatter takes them."""
    seen = []
    build = batch.BatchDerivative._dense_batch

    def spy(self, keys, D_values, drop):
        made = build(self, keys, D_values, drop)
        seen.append((made, self._entries(self.batch_pattern, keys, D_values).T))
        return made

    monkeypatch.setattr(batch.BatchDerivative, "_dense_batch", spy)
    return seen


#: (program, batch): each block's tiles hold at least TILE_MIN_ENTRIES entries over the
#: batch (2 d² b), so the shipped constants take them
TILED = [(_spectraplex, 3), (_correlation, 4), (_bordered, 3), (_permuted, 4),
         (_second_order, 48)]


@pytest.mark.parametrize("build,size", TILED, ids=[f.__name__[1:] for f, _ in TILED])
def test_tiles_give_the_blocks_of_the_scatter_bit_for_bit(build, size, monkeypatch):
    prob, params, out, sample = build()
    prog = dpplayers.compile(prob, params, [out])  # values unset: nothing frozen
    assert prog.kkt_pattern.tile_placement is not None
    seen = _capture(monkeypatch)
    rng = np.random.default_rng(0)
    for _ in range(2):  # two parameter points
        sol = prog.solve(*sample(rng, size), solver_args={"eps": 1e-9})
        sol.vjp(rng.standard_normal(sol.values[0].shape))
    pairs = prog.kkt_pattern.plan.pairs
    tiled = [(made, full) for made, full in seen if made.fill is not None]
    assert tiled, "no batch took the tiles"
    for made, full in tiled:
        assert made.values.shape[1] == prog.kkt_pattern.tiled.kept.size < full.shape[1]
        for transpose in (False, True):
            fast = pairs.blocks(made.values, transpose, fill=made.fill)
            slow = pairs.blocks(full, transpose)
            for name in ("RR", "RQ", "QR", "P", "a", "a2", "c"):
                np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name),
                                              err_msg=f"{name}, transpose={transpose}")


def test_a_small_batch_of_a_small_block_keeps_the_scatter(monkeypatch):
    """Tiles below TILE_MIN_ENTRIES entries over the chunk cost more numpy calls than they
    save: nearest correlation of order 12 (d = 78) at batch 1."""
    prob, params, out, sample = _correlation()
    prog = dpplayers.compile(prob, params, [out])
    seen = _capture(monkeypatch)
    sol = prog.solve(*sample(np.random.default_rng(1), 1), solver_args={"eps": 1e-9})
    sol.vjp(np.ones(sol.values[0].shape))
    assert seen and all(made.fill is None for made, _ in seen)
    assert all(made.values.shape[1] == full.shape[1] for made, full in seen)


def test_a_block_whose_rows_hold_several_entries_is_no_tile():
    """An LMI in a vector (each row of A several entries): Aᵀ D is a dense product there,
    and J's entries go through the scatter as before."""
    n = 6
    x = cp.Variable(n)
    c = cp.Parameter(n, name="c")
    F = [np.eye(n)] + [np.diag(np.roll(np.arange(1.0, n + 1), i)) / n for i in range(n)]
    lmi = F[0] + sum(x[i] * (F[i + 1] + F[i + 1].T) for i in range(n))
    prob = cp.Problem(cp.Minimize(c @ x + cp.sum_squares(x)), [lmi >> 0])
    prog = dpplayers.compile(prob, [c], [x])
    assert max(idx.shape[1] for _, idx in prog.dual_cone.groups) >= tiles.TILE_MIN_ORDER
    assert prog.kkt_pattern.tiled is None


def test_two_rows_on_one_variable_are_no_tile():
    """A variable in two rows of one block: their Aᵀ D products sum onto one place of J,
    which a tile would overwrite."""
    t = cp.Variable()
    y = cp.Parameter(16, name="y")
    x = cp.Variable(16)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - y) + t),
                      [cp.SOC(t, cp.hstack([x[:8], x[:8]]))])
    prog = dpplayers.compile(prob, [y], [x])
    assert max(idx.shape[1] for _, idx in prog.dual_cone.groups) >= tiles.TILE_MIN_ORDER
    assert prog.kkt_pattern.tiled is None
    # one row of each variable: the same cone is a tile
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - y) + t), [cp.SOC(t, x)])
    assert dpplayers.compile(prob, [y], [x]).kkt_pattern.tiled is not None


def test_variables_out_of_order_are_written_by_their_rows():
    """Where the block's variables are not one run of R, the Aᵀ D tile is written row by
    row (by index) rather than by a slice; the blocks test above checks its values."""
    prob, params, out, _ = _permuted()
    places = dpplayers.compile(prob, params, [out]).kkt_pattern.tile_placement.places
    assert isinstance(places[0][0], slice) and isinstance(places[0][1], np.ndarray)
