"""Stage 3, derivative: the KKT operator J at a solution and its solves.

Read in data-flow order: ``kkt`` (J = [[P, AᵀD], [A, D − I]], the right-hand side from
the data's tangents and its adjoint), ``pattern`` (J's fixed sparsity, built once per
program), ``plan`` (J's elimination plan, once per program: what is pivoted out and by
which executor), ``elimination``, ``pair_pivots`` and ``inactive_rows`` (exact elimination
of J's singleton rows, 2×2 pivots and inactive rows), ``linear_solvers`` (the sparse
executor and the derivative modes per element: direct LU, dense, LSQR, LSMR), ``batch`` (a
solved batch's J: the batched dense executor and each element's kept factorisation), ``conditioning`` (the one rule
for near-singular J), ``scratch`` (per-thread buffers) and ``refine`` (Newton polishing
with J); beside them ``embedding``, the reference mode: the self-dual embedding's
operator M by LSQR. Imports only the toolkit (``errors``, ``_sparse``, ``cones``).
"""
