"""J's solves for the elements the dense QP route solved, through the factors its forward kept.

At a solution of the route (zero and non-negative cones) D = DΠ_K*(y − s) is 1 on every
equality row and every inequality row with y ≥ s (active), 0 on the others (inactive), so
J = [[P, AᵀD], [A, D − I]] splits: an inactive row's unknown is read off its own equation
and the rest is the saddle-point system of the active rows (``act``; ``in`` the others)::

    Jᵀ [u; w] = [f; g]  (vjp):  [[P, A_actᵀ], [A_act, 0]] [u; w_act] = [f + A_inᵀ g_in; g_act],
                                w_in = −g_in,
    J  [u; w] = [f; g]  (jvp):  the same matrix, right-hand side [f; g_act],
                                w_in = A_in u − g_in.

P is positive definite on these elements (the forward's Schur elimination factorised it),
so S w_act = A_act P⁻¹ f' − g_act with S = A_act P⁻¹ A_actᵀ and u = P⁻¹(f' − A_actᵀ w_act),
a principal submatrix of the M = A P⁻¹ Aᵀ the forward formed: one solve with P's kept
factors and a k × k system (k active rows, padded with identity rows to the largest k of
the group, one batched LAPACK call) per element, where the generic path
(:mod:`.batch`) assembles J and factorises it at order n + k (qp200, batch 32: k ≈ 60–75
against n + k ≈ 270; ~60× fewer flops).

The answer is the generic path's own solve of the same J wherever this module takes an
element; it declines (the generic path then solves the element as before, with its
singular-J handling and ``degenerate`` flag) where the element is not clean:

- a weakly active inequality row (y and s both within WEAK of 0): the solution map has
  only one-sided derivatives there, and the generic path's choice of side stands;
- the reduced J nearly singular: the probe estimate ‖J_act‖_F ‖z‖ / ‖g‖ of a fixed
  Gaussian column g solved with the others (:func:`.conditioning.probe_estimate`'s rule)
  above ``PROBE_SUSPECT``, the threshold at which the generic batched solve, too, hands an
  element to its sharper estimator. Duplicated active rows make S singular; a ±1 probe
  (the generic path's) is consistent with two copies of a row half the time and then
  shows nothing, a Gaussian one almost never;
- a residual on the reduced J above ``BATCH_RESIDUAL_TOL`` (as the generic batched solve),
  or anything not finite.

A declined element is remembered and never retried.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from .._threads import CPU_COUNT, blas_single_threaded, parallel_map
from .conditioning import PROBE_SUSPECT
from .linear_solvers import SolveStats

if TYPE_CHECKING:  # the forward's kept factors (stage 2): read here, never built
    from .._solve.qp_systems import KeptFactors

FloatArray = npt.NDArray[np.float64]

#: An inequality row whose y and s are both at most WEAK × (1 + the element's largest |y|,
#: resp. |s|) is weakly active. The route's polish leaves y = 0 or s = 0 exactly on each
#: row and clips sign violations up to its POLISH_SLACK (1e-9, relative) to 0, so a weakly
#: active row comes out with its other member at that level or below.
WEAK = 1e-9
#: The largest relative residual on the reduced J accepted (the generic batched solve's
#: BATCH_RESIDUAL_TOL).
RESIDUAL_TOL = 1e-10


class RouteElements:
    """The route-solved elements of a batch whose forward kept its factors, and their solves.

    ``handles[k]``: element k's (KeptFactors, place in them), or None; ``y``, ``s`` the
    batch's (m, B) duals and slacks (the active set is read off them as DΠ reads it)."""

    def __init__(self, handles: dict[int, tuple[KeptFactors, int]], y: FloatArray,
                 s: FloatArray) -> None:
        self.handles, self.y, self.s = handles, y, s
        self.declined: set[int] = set()

    @staticmethod
    def of(handles: Sequence | None, y: FloatArray, s: FloatArray,
           mode: str) -> RouteElements | None:
        """The batch's route elements with kept factors (in ``direct`` mode, the default:
        the other modes are asked for by name), or None where there are none."""
        if mode != "direct" or handles is None:
            return None
        kept = {k: h for k, h in enumerate(handles) if h is not None and h[0] is not None}
        return RouteElements(kept, y, s) if kept else None

    def solve(self, keys: Sequence[int], rhs: FloatArray, transpose: bool,
              places: Sequence[int], out: FloatArray,
              record: Callable[[int, SolveStats], None]) -> list[int]:
        """Solve J (Jᵀ with ``transpose``) of element keys[i] for rhs[i] (rhs: (len(keys),
        n + m, q)), for the places i in ``places`` that this module takes: the answer into
        out[i], its statistics to ``record``; returns those places (the caller solves the
        others)."""
        groups: dict[int, tuple[KeptFactors, list[int], list[int]]] = {}
        for i in places:
            k = keys[i]
            h = self.handles.get(k)
            if h is not None and k not in self.declined:
                groups.setdefault(id(h[0]), (h[0], [], []))
                groups[id(h[0])][1].append(i)
                groups[id(h[0])][2].append(h[1])

        def run(item: tuple[KeptFactors, list[int], list[int]]) -> tuple:
            factors, group, where = item
            ks = [keys[i] for i in group]
            return solve_group(factors, np.array(where), self.y[:, ks].T, self.s[:, ks].T,
                               rhs[group], transpose)

        items = list(groups.values())  # the forward's chunks: side by side, as batch's
        pooled = len(items) > 1 and blas_single_threaded()
        done: list[int] = []
        for (_, group, _), (z, residual) in zip(items, parallel_map(
                run, items, CPU_COUNT if pooled else 1)):
            for j, i in enumerate(group):
                if residual[j] <= RESIDUAL_TOL:
                    out[i] = z[j]
                    record(keys[i], SolveStats(float(residual[j]), 0, True))
                    done.append(i)
                else:
                    self.declined.add(keys[i])
        return done


def solve_group(f: KeptFactors, where: npt.NDArray[np.intp], y: FloatArray, s: FloatArray,
                rhs: FloatArray, transpose: bool) -> tuple[FloatArray, FloatArray]:
    """The elements ``where`` of one chunk's factors, at duals y and slacks s (E, m), for
    rhs (E, n + m, q) ↦ (z (E, n + m, q), a relative residual per element: inf where the
    element is declined, see the module text)."""
    E, N, q = rhs.shape
    m, n = f.M.shape[1], f.A.shape[2]
    z0 = f.zero
    A = f.A if f.A.shape[0] == 1 else _take(f.A, where)
    active = np.ones((E, m), bool)
    active[:, z0:] = y[:, z0:] - s[:, z0:] >= 0  # DΠ's rule: D = 1 where v = y − s ≥ 0
    y_in, s_in = y[:, z0:], s[:, z0:]
    weak = ((y_in <= WEAK * (1.0 + np.abs(y).max(axis=1, initial=0.0))[:, None])
            & (s_in <= WEAK * (1.0 + np.abs(s).max(axis=1, initial=0.0))[:, None])).any(axis=1)
    # the right-hand sides and, last, the probe column (0 on inactive rows)
    g_probe = _probe(N)
    R = np.empty((E, N, q + 1))
    R[:, :, :q] = rhs
    R[:, :n, q] = g_probe[:n]
    R[:, n:, q] = np.where(active, g_probe[n:], 0.0)
    F, G = R[:, :n], R[:, n:]
    inactive = ~active
    if transpose:
        F = F + A.transpose(0, 2, 1) @ (G * inactive[:, :, None])
    Pf = f.P_solver.solve(F, where)
    H = A @ Pf - G  # (E, m, q + 1): rows act are S w_act's right-hand side
    # active rows first, padded with identity rows to the group's largest count
    count = active.sum(axis=1)
    k = int(count.max(initial=0))
    order = np.argsort(~active, axis=1, kind="stable")[:, :k]
    pad = np.arange(k)[None, :] >= count[:, None]
    e = np.arange(E)[:, None]
    S = f.M[where[:, None, None], order[:, :, None], order[:, None, :]]
    S[pad[:, :, None] | pad[:, None, :]] = 0.0
    S[:, np.arange(k), np.arange(k)] += pad
    Hk = H[e, order]
    Hk[pad] = 0.0
    with np.errstate(all="ignore"):
        try:
            Wk = np.linalg.solve(S, Hk)
        except np.linalg.LinAlgError:  # some S exactly singular: NaN for those alone
            Wk = np.stack([_solve_or_nan(Sk, hk) for Sk, hk in zip(S, Hk)])
        W = np.zeros((E, m, q + 1))
        W[e, order] = np.where(pad[:, :, None], 0.0, Wk)
        T = F - A.transpose(0, 2, 1) @ W  # W is 0 on inactive rows: F − A_actᵀ w_act
        U = f.P_solver.solve(T, where)
        AU = A @ U
        # residual of the reduced system [[P, A_actᵀ], [A_act, 0]] [u; w_act] = [F; G_act]
        r_top = f.P_solver.times(U, where) - T
        r_act = np.where(active[:, :, None], AU - G, 0.0)
        res_sq = np.vecdot(r_top, r_top, axis=1) + np.vecdot(r_act, r_act, axis=1)
        rhs_sq = np.vecdot(R, R, axis=1)
        residual = np.sqrt((res_sq[:, :q] / np.maximum(rhs_sq[:, :q], 1e-300))
                           .max(axis=1, initial=0.0))
        # the probe: cond estimate of the reduced J, ‖J_act‖_F ‖z‖ / ‖g‖
        A_act_sq = np.vecdot(A, A, axis=2) * active if A.shape[0] == E else \
            np.vecdot(A[0], A[0], axis=1)[None, :] * active
        J_sq = f.P_solver.norm_sq[where] + 2.0 * A_act_sq.sum(axis=1)
        z_sq = np.vecdot(U[:, :, q], U[:, :, q]) + np.vecdot(W[:, :, q], W[:, :, q])
        cond = np.sqrt(J_sq * z_sq / np.maximum(rhs_sq[:, q], 1e-300))
    W = W[:, :, :q]
    U = U[:, :, :q]
    G = G[:, :, :q]
    W = np.where(active[:, :, None], W, -G if transpose else AU[:, :, :q] - G)
    z = np.concatenate([U, W], axis=1)
    clean = ~weak & (cond <= PROBE_SUSPECT) & np.isfinite(z).all(axis=(1, 2))
    return z, np.where(clean & (residual <= np.inf), residual, np.inf)


@functools.cache
def _probe(order: int) -> FloatArray:
    """A fixed Gaussian column of this order (read-only)."""
    g = np.random.default_rng(order).standard_normal(order)
    g.flags.writeable = False
    return g


def _solve_or_nan(S: FloatArray, h: FloatArray) -> FloatArray:
    try:
        return np.linalg.solve(S, h)
    except np.linalg.LinAlgError:
        return np.full_like(h, np.nan)


def _take(a: FloatArray, which: npt.NDArray[np.intp]) -> FloatArray:
    """a[which], without a copy where ``which`` is every element in order."""
    whole = which.size == a.shape[0] and bool((which == np.arange(which.size)).all())
    return a if whole else a[which]
