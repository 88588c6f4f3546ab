"""Stage 1, compile: a DPP problem → θ's layout, affine maps θ̃ ↦ (P, A, b, c), cones K, R.

Read in data-flow order: ``dpp`` (the verdict, explained), ``quad_forms`` (lifting
``quad_form(x, Q(θ))`` out of the objective), ``products`` (splitting large ``P @ x`` out
for cvxpy and putting ``P`` back into its program), ``canonical`` (cvxpy's chain, re-expressed in
the user's parameters), ``parameters`` (θ's layout, value checks, GP logs), ``affine_maps``
(the maps C on fixed sparsity patterns), ``retrieval`` (R: the cone program's (x, y) → the
requested variables and duals). Imports only the toolkit (``errors``, ``_sparse``, ``cones``).
"""
