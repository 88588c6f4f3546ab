"""Compile stage: a DPP problem → affine maps θ̃ ↦ cone-program data, and a retrieval R.

The cone program (SCS's form, the canonical form of dpplayers)::

    minimise ½ xᵀPx + cᵀx   subject to   Ax + s = b,  s ∈ K

Canonicalisation is cvxpy's own chain for SCS (``Problem.get_problem_data``); this module
only re-expresses its parameter tensors in the user's parameter coordinates and fixes one
sparsity pattern for A and P, so that a whole batch of data is one sparse × dense product
per map. P is stored as its upper triangle (what both solvers read).

Quadratic forms ``quad_form(x, Q)`` with a parameter-affine ``Q`` in the objective are
lifted out first (:mod:`.quad_forms`): cvxpy compiles the rest, and this module adds Q's
entries to P on the lifted variable's columns. Large products ``P @ x`` with a parameter
matrix are split out the same way (:mod:`.products`): this module puts them back (u
substituted by P w and its columns dropped, or, where u must stay, its rows u − P w = 0
after cvxpy's zero-cone rows) and renumbers R's columns to match.

cvxpy's tensors have one row per position of a matrix (rows × (columns + 1) for A), so they
are read as lists of entries (:func:`_tensor_entries`), never as CSR arrays indexed by
position, whose index arrays alone would outgrow the data at a few thousand variables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import cvxpy as cp
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from cvxpy.reductions.cvx_attr2constr import CvxAttr2Constr, lower_value
from cvxpy.reductions.dgp2dcp.dgp2dcp import Dgp2Dcp

from .._sparse import CSCPattern
from ..cones import ConeDims
from ..errors import DPPError, ParameterError, VariableError, quoted_name
from .affine_maps import AffineMap
from .dpp import check_dpp
from .parameters import ParameterLayout, ParameterSpec
from .products import Entries, Placed, put_back, split_parameter_products
from .quad_forms import (
    ParametricQuadForm,
    explain_frozen_parameters,
    lift_parametric_quad_forms,
    matrix_coefficients,
)
from .retrieval import Retrieval, build_retrieval, resolve_requests

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class CanonicalProgram:
    """What the compile stage hands on: θ's layout, the cone program's sizes and cones, the
    maps C_A, C_b, C_c (and C_P) on fixed CSC patterns, and R."""

    layout: ParameterLayout
    n: int
    m: int
    cones: ConeDims
    A: CSCPattern
    C_A: AffineMap
    C_b: AffineMap
    C_c: AffineMap
    P: CSCPattern | None
    C_P: AffineMap | None
    retrieval: Retrieval
    #: The objective's constant d(θ) (one row): the canonical optimal value is
    #: cᵀx + ½xᵀPx + d, and the problem's is ``sense`` times it (exp of that with gp=True).
    C_d: AffineMap
    sense: float  # −1 for Maximize (cvxpy minimises the negative), else 1


def canonicalize(problem: cp.Problem, parameters: Sequence[cp.Parameter] | None,
                 variables: Sequence[object] | None, gp: bool, quad_obj: bool,
                 canon_backend: str | None) -> CanonicalProgram:
    """Check ``problem`` (DPP, the parameter and variable lists) and compile it to a
    :class:`CanonicalProgram` (see :func:`dpplayers.compile` for the arguments)."""
    _require_ordered(parameters, "parameters")
    _require_ordered(variables, "variables")
    params = tuple(problem.parameters() if parameters is None else parameters)
    wanted = tuple(problem.variables() if variables is None else variables)
    _refuse_repeated_parameters(params)
    report = check_dpp(problem, params, wanted, gp=gp)
    if not report.ok:
        raise DPPError(report)
    _refuse_complex_parameters(params)
    requests = resolve_requests(problem, wanted)

    # DGP keeps its quad forms: they are log-log convex atoms there, not P(θ) terms
    lifted, quad_forms = (problem, ()) if gp else lift_parametric_quad_forms(problem)
    if quad_forms and not quad_obj:
        raise ValueError(
            "quad_form(x, Q) with a parameter Q needs quad_obj=True (the solver takes P(θ) "
            "directly); with quad_obj=False write it as sum_squares(L @ x) with a factor L."
        )
    # P @ x with a large parameter P: cvxpy's tensor for it is the bottleneck; P is put
    # back below (DGP's log-space chain is left alone)
    lifted, products = (lifted, ()) if gp else split_parameter_products(lifted, params)
    # a fresh Problem: cvxpy caches its chain on the object, and a cached DGP chain
    # re-reads parameter values (log of None) on the second compile
    lifted = cp.Problem(lifted.objective, lifted.constraints)
    data, chain, inverse_data = _canonicalize(lifted, gp, quad_obj, canon_backend)
    pp = data[cp.settings.PARAM_PROB]
    n = int(pp.x.size)
    m = int(pp.A.shape[0] // (n + 1))
    entries = [_entries(chain, pp, param) for param in params]
    layout = ParameterLayout(tuple(_specs(params, entries)))
    elsewhere = {p.id for term in quad_forms for p in term.matrix.parameters()}
    elsewhere |= {split.matrix.id for split in products}
    lowering = _lowering_matrix(pp, params, entries, layout, elsewhere)

    p = layout.theta_size
    zero = int(pp.cone_dims.zero)
    rows, cols, vals = _tensor_entries(pp.A, lowering)
    in_A = rows < m * n
    A = Entries(rows[in_A] % m, rows[in_A] // m, cols[in_A], -vals[in_A])
    b = Entries(rows[~in_A] - m * n, np.zeros(int((~in_A).sum()), np.int64), cols[~in_A],
                vals[~in_A])
    c = _entries_of(sp.csr_array(pp.q)[:n] @ lowering)
    C_d = AffineMap(sp.csr_array(sp.csr_array(pp.q)[n : n + 1] @ lowering))  # the constant
    P = None
    if quad_obj and (pp.P is not None or quad_forms):
        P_parts = [_tensor_entries(pp.P, lowering)] if pp.P is not None else []
        P_parts += [_quad_form_entries(term, pp, params, layout, n) for term in quad_forms]
        positions, theta, coef = (np.concatenate(a) for a in zip(*P_parts))
        P = Entries(positions % n, positions // n, theta, coef)
    placed = [Placed(split, int(pp.var_id_to_col[split.aux.id]),
                     int(pp.var_id_to_col[split.argument.id]),
                     _spec_for(params, layout, split.matrix).offset) for split in products]
    A, c, kept, removed = put_back(placed, A, c, P, p)
    # rows u − P w = 0 of the products that stay go after cvxpy's zero-cone rows
    added = sum(item.split.rows for item, _ in kept)
    A = replace(A, row=np.where(A.row >= zero, A.row + added, A.row))
    b = replace(b, row=np.where(b.row >= zero, b.row + added, b.row))
    first = zero
    for item, own in kept:
        A = Entries.join([A, replace(own, row=own.row + first)])
        first += item.split.rows
    # columns of substituted u's leave the program
    renumber = np.cumsum(np.isin(np.arange(n), removed, invert=True)) - 1
    A, c = replace(A, col=renumber[A.col]), replace(c, row=renumber[c.row])
    P = None if P is None else replace(P, row=renumber[P.row], col=renumber[P.col])
    retrieval = _renumber(build_retrieval(chain, inverse_data, n, m, requests, gp), renumber,
                          removed.size, zero, added)
    n, m = n - removed.size, m + added
    A_pattern, C_A = _pattern_map(A.col * m + A.row, A.theta, A.val, (m, n), p, upper=False)
    C_b = AffineMap(sp.csr_array((b.val, (b.row, b.theta)), shape=(m, p + 1)))
    C_c = AffineMap(sp.csr_array((c.val, (c.row, c.theta)), shape=(n, p + 1)))
    P_pattern, C_P = None, None
    if P is not None:
        P_pattern, C_P = _pattern_map(P.col * n + P.row, P.theta, P.val, (n, n), p, upper=True)
    cones = ConeDims(
        zero=zero + added, nonneg=int(pp.cone_dims.nonneg),
        soc=tuple(int(d) for d in pp.cone_dims.soc), psd=tuple(int(d) for d in pp.cone_dims.psd),
        exp=int(pp.cone_dims.exp), exp_dual=0, power=tuple(float(a) for a in pp.cone_dims.p3d),
    )
    if m == 0:
        A_pattern, C_A, C_b, cones, retrieval, m = _never_binding_row(n, layout.theta_size,
                                                                     cones, retrieval)
    return CanonicalProgram(layout=layout, n=n, m=m, cones=cones, A=A_pattern, C_A=C_A,
                            C_b=C_b, C_c=C_c, P=P_pattern, C_P=C_P, retrieval=retrieval,
                            C_d=C_d, sense=-1.0 if isinstance(problem.objective, cp.Maximize)
                            else 1.0)


def _require_ordered(items: object, what: str) -> None:
    """Values bind to ``parameters`` and outputs to ``variables`` by position, so both must
    be ordered: a set would bind values to the wrong parameter without a word."""
    if items is not None and not isinstance(items, (list, tuple)):
        error = ParameterError if what == "parameters" else VariableError
        raise error(
            f"The layer's {what} must be provided as a list or tuple (values and outputs are "
            f"matched to them by position), got a {type(items).__name__}."
        )


def _refuse_repeated_parameters(params: Sequence[object]) -> None:
    """A parameter listed twice would take two values whose effects add up (a silently
    wrong answer). (A variable requested twice is fine: each output is returned.)"""
    seen: dict[int, int] = {}
    for k, param in enumerate(params):
        if not isinstance(param, cp.Parameter):  # refused later, by type
            continue
        first = seen.setdefault(param.id, k)
        if first != k:
            raise ParameterError(
                f"{quoted_name(param, k)} is listed twice in `parameters` (positions {first} "
                f"and {k}); list each once (values are matched to parameters by position)."
            )


def _refuse_complex_parameters(params: Sequence[cp.Parameter]) -> None:
    """Parameters are real arrays here: a complex one's imaginary part would be dropped."""
    for k, p in enumerate(params):
        if p.is_complex():
            raise ParameterError(
                f"parameter {quoted_name(p, k)} is complex: dpplayers does not support "
                "complex parameters; write it as two real parameters, "
                "p_re + 1j * p_im, and pass their values."
            )


def _canonicalize(lifted: cp.Problem, gp: bool, quad_obj: bool, canon_backend: str | None):
    """cvxpy's SCS chain on ``lifted``, never evaluating parameters: where cvxpy would fall
    back to ``EvalParams`` (its QP-scoped DPP test fails) the parameters are named."""
    if not gp and not lifted.is_dpp("dcp", quad_form_dpp="qp"):
        raise DPPError(explain_frozen_parameters(lifted.objective.args[0]))
    try:
        return lifted.get_problem_data(
            solver=cp.SCS, gp=gp, canon_backend=canon_backend, enforce_dpp=True,
            solver_opts={"use_quad_obj": quad_obj},
        )
    except cp.error.DPPError as err:
        raise DPPError(explain_frozen_parameters(lifted.objective.args[0])) from err


@dataclass(frozen=True)
class _Entry:
    """Where one use of a user parameter lands in cvxpy's parameter vector: the first column
    of the parameter cvxpy reads, and the linear map E from the user's entries (or their
    logs) to that parameter's entries."""

    col: int
    E: sp.csr_array


def _entries(chain: cp.reductions.Chain, pp, param: cp.Parameter) -> tuple[_Entry | None,
                                                                           _Entry | None]:
    """(as itself, through its log): how ``param`` enters cvxpy's cone program; None for a
    use that does not occur.

    Dgp2Dcp swaps a parameter used as a coefficient or as positive data for a log-space twin
    (its log enters), but leaves an exponent (``x ** c`` ↦ c·log x) as the parameter
    itself; a parameter may be used both ways. Outside gp only the first occurs.
    """
    twin = None
    for reduction in chain.reductions:
        if isinstance(reduction, Dgp2Dcp) and reduction.canon_methods is not None:
            swapped = _replacement(reduction.canon_methods._parameters, param)
            twin = swapped if swapped is not param else None
    return _follow(chain, pp, param), (_follow(chain, pp, twin) if twin is not None else None)


def _follow(chain: cp.reductions.Chain, pp, param: cp.Parameter) -> _Entry | None:
    """Follow ``param`` through CvxAttr2Constr, which swaps a symmetric/diagonal/sparse
    parameter for its reduced vector (linear, read off ``lower_value``; a symmetric
    parameter's reduced entries are (Q_ij + Q_ji) / 2, so gradients come out symmetric), to
    its column in cvxpy's θ. None where cvxpy eliminated it or it is only in lifted
    quad_forms."""
    size = int(np.prod(param.shape, dtype=np.int64))
    current, E = param, sp.identity(size, format="csr")
    for reduction in chain.reductions:
        if isinstance(reduction, CvxAttr2Constr):
            reduced = _replacement(reduction._parameters, current)
            if reduced is not current:
                E = _attribute_lowering(current) @ E
                current = reduced
    col = pp.param_id_to_col.get(current.id)
    return None if col is None else _Entry(int(col), sp.csr_array(E))


def _specs(params: Sequence[cp.Parameter],
           entries: Sequence[tuple[_Entry | None, _Entry | None]]) -> list[ParameterSpec]:
    """Each parameter's rows in θ: its entries in order, logged where it enters only
    through its log; a parameter that enters both ways gets log copies after them all."""
    specs, offset = [], 0
    for param, (linear, log) in zip(params, entries):
        specs.append(ParameterSpec.of(param, offset, log=log is not None and linear is None))
        offset += specs[-1].size
    for k, (linear, log) in enumerate(entries):
        if linear is not None and log is not None:
            specs[k] = replace(specs[k], log_copy=offset)
            offset += specs[k].size
    return specs


def _lowering_matrix(pp, params: Sequence[cp.Parameter],
                     entries: Sequence[tuple[_Entry | None, _Entry | None]],
                     layout: ParameterLayout, elsewhere: set[int]) -> sp.csr_array:
    """L with θ̃_cvxpy = L θ̃: each use of each parameter, from its rows of θ (the value, or
    its log: the log itself is applied in ParameterLayout.stack) to cvxpy's columns.

    A parameter cvxpy's data lacks must be one that enters only where the compiler adds it
    itself (``elsewhere``, ids: lifted quad forms, split products); any other is refused
    rather than silently given a zero derivative.
    """
    p_red = int(pp.A.shape[1]) - 1
    rows, cols, vals = [p_red], [layout.theta_size], [1.0]  # the constant
    for param, spec, (linear, log) in zip(params, layout.specs, entries):
        if linear is None and log is None and param.id not in elsewhere:
            raise DPPError(
                f"{spec.label} is not in cvxpy's compiled program (its value would be "
                "ignored); rewrite the expression that uses it so the problem is DPP.")
        for entry, first_row in ((linear, spec.offset), (log, spec.log_offset)):
            if entry is None:
                continue
            coo = sp.coo_array(entry.E)
            rows.extend(coo.row + entry.col)
            cols.extend(coo.col + first_row)
            vals.extend(coo.data)
    return sp.csr_array((vals, (rows, cols)), shape=(p_red + 1, layout.theta_size + 1))


def _replacement(mapping: dict, param: cp.Parameter) -> cp.Parameter:
    """The parameter a reduction substituted for ``param`` (compared by id: cvxpy
    expressions overload ``==``)."""
    for orig, new in mapping.items():
        if orig.id == param.id:
            return new
    return param


def _attribute_lowering(param: cp.Parameter) -> sp.csr_array:
    """The linear map vec_F(value) ↦ lower_value(param, value), by probing."""
    size = int(np.prod(param.shape, dtype=np.int64))
    attrs = param.attributes
    if attrs.get("symmetric") or attrs.get("PSD") or attrs.get("NSD"):
        k = param.shape[-1]
        i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
        pair = np.minimum(i, j) * k + np.maximum(i, j)  # same id for (i, j) and (j, i)
        out = np.rint(lower_value(param, pair.astype(float))).astype(np.int64)
        flat = pair.reshape(-1, order="F")
        r, c = np.nonzero(out[:, None] == flat[None, :])
        weight = np.where(flat[c] % (k + 1) == 0, 1.0, 0.5)  # diagonal ids are multiples of k+1
        return sp.csr_array((weight, (r, c)), shape=(out.size, size))
    probe = np.arange(1, size + 1, dtype=float).reshape(param.shape, order="F")
    out = np.rint(np.asarray(lower_value(param, probe)).reshape(-1)).astype(np.int64) - 1
    return sp.csr_array((np.ones(out.size), (np.arange(out.size), out)), shape=(out.size, size))


def _quad_form_entries(term: ParametricQuadForm, pp, params: Sequence[cp.Parameter],
                       layout: ParameterLayout, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """vec_F(P)'s entries (position, θ̃ column, coefficient) of one lifted term:
    weight·(Q + Qᵀ) on its variable's block, Q(θ) affine."""
    start = pp.var_id_to_col[term.aux.id]
    k = term.aux.size
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    i, j = i.ravel(), j.ravel()
    # P[start + i, start + j] += w Q[i, j] + w Q[j, i]: a (n², k²) selection of vec_F(Q)
    rows = np.concatenate([(start + j) * n + start + i] * 2).astype(np.int64)
    entries = np.concatenate([j * k + i, i * k + j])
    select = sp.csr_array((np.full(rows.size, term.weight), (np.arange(rows.size), entries)),
                          shape=(rows.size, k * k))
    coo = sp.coo_array(select @ _matrix_map(term.matrix, params, layout))
    return rows[coo.row], coo.col.astype(np.int64), coo.data


def _matrix_map(matrix: cp.Expression, params: Sequence[cp.Parameter],
                layout: ParameterLayout) -> sp.csr_array:
    """vec_F(Q(θ)) as a (k², p + 1) map of θ̃ = [θ; 1] in the layout's coordinates."""
    base, coefficients = matrix_coefficients(matrix)
    nonzero = np.flatnonzero(base)
    rows, cols, vals = [nonzero], [np.full(nonzero.size, layout.theta_size)], [base[nonzero]]
    for param in matrix.parameters():
        spec = _spec_for(params, layout, param)
        coo = sp.coo_array(coefficients[param.id])
        rows.append(coo.row)
        cols.append(coo.col + spec.offset)
        vals.append(coo.data)
    return sp.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(base.size, layout.theta_size + 1))


def _spec_for(params: Sequence[cp.Parameter], layout: ParameterLayout,
              param: cp.Parameter) -> ParameterSpec:
    for spec, p in zip(layout.specs, params):
        if p.id == param.id:
            return spec
    raise ParameterError(f"parameter '{param.name()}' is in a quad_form but not in `parameters`.")


def _never_binding_row(n: int, p: int, cones: ConeDims, retrieval: Retrieval):
    """One constraint for a program without any, 0ᵀx ≤ 1 (a nonnegative-cone row): SCS
    refuses m = 0 ("m must be a positive integer") and Clarabel's answer could not be read
    back. The row never binds (s = 1, y = 0), so J gains one decoupled row and the solution
    and its derivatives are those of the unconstrained program.

    Returns (A pattern, C_A, C_b, cones, retrieval, m = 1)."""
    A = CSCPattern((1, n), np.zeros(0, np.int32), np.zeros(n + 1, np.int32))
    C_A = AffineMap(sp.csr_array((0, p + 1)))
    C_b = AffineMap(sp.csr_array(([1.0], ([0], [p])), shape=(1, p + 1)))
    R = retrieval.matrix
    R = sp.csr_array(sp.hstack([R, sp.csr_array((R.shape[0], 1))], format="csr"))
    return A, C_A, C_b, replace(cones, nonneg=1), Retrieval.of(R, retrieval.outputs), 1


def _tensor_entries(tensor, lowering: sp.csr_array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The entries of ``tensor @ lowering`` as (row, θ̃ column, value) arrays, duplicates
    summed and exact zeros dropped (what a sparse product keeps), computed entry by entry:
    cvxpy's tensors have a row per position of a matrix, rows × (columns + 1) of them, and a
    sparse product or CSR form would allocate arrays that long."""
    T = sp.coo_array(tensor)
    L = sp.csr_array(lowering)
    t_row, t_col = T.row.astype(np.int64), T.col.astype(np.int64)
    counts = np.diff(L.indptr)[t_col]
    each = np.repeat(np.arange(t_row.size), counts)
    # position within each lowering row: a running count restarted at every entry
    within = np.arange(each.size) - np.repeat(np.cumsum(counts) - counts, counts)
    source = L.indptr[t_col[each]] + within
    rows, cols = t_row[each], L.indices[source].astype(np.int64)
    vals = T.data[each] * L.data[source]
    width = L.shape[1]
    key, inverse = np.unique(rows * width + cols, return_inverse=True)
    sums = np.bincount(inverse.ravel(), weights=vals, minlength=key.size)
    keep = sums != 0
    return key[keep] // width, key[keep] % width, sums[keep]


def _pattern_map(positions: np.ndarray, cols: np.ndarray, vals: np.ndarray,
                 shape: tuple[int, int], p: int, upper: bool) -> tuple[CSCPattern, AffineMap]:
    """A matrix's fixed CSC pattern and its map θ̃ ↦ the nonzeros, from entries
    (vec_F position, θ̃ column, coefficient), position r = j·rows + i, so sorted positions
    are CSC order. Keeps positions with an entry (and i ≤ j when ``upper``)."""
    nrows, ncols = shape
    if upper:
        keep = positions % nrows <= positions // nrows
        positions, cols, vals = positions[keep], cols[keep], vals[keep]
    present, rank = np.unique(positions, return_inverse=True)
    i, j = present % nrows, present // nrows
    indptr = np.searchsorted(j, np.arange(ncols + 1)).astype(np.int32)
    block = sp.csr_array((vals, (rank.ravel(), cols)), shape=(present.size, p + 1))
    block.sum_duplicates()
    return CSCPattern(shape, i.astype(np.int32), indptr), AffineMap(block)


def _entries_of(matrix) -> Entries:
    """A (rows, p + 1) map's entries: row, θ̃ column, coefficient."""
    coo = sp.coo_array(matrix)
    coo.sum_duplicates()
    coo.eliminate_zeros()
    return Entries(coo.row.astype(np.int64), np.zeros(coo.nnz, np.int64),
                   coo.col.astype(np.int64), coo.data)


def _renumber(retrieval: Retrieval, renumber: np.ndarray, removed: int, zero: int,
              added: int) -> Retrieval:
    """R on z = [x; y] for the program after the products are put back: x's columns
    ``renumber``-ed (``removed`` of them gone: substituted u's, which no output reads),
    ``added`` zero-cone rows inserted into y after its first ``zero`` (the products' rows
    u − P w = 0, which no output reads either)."""
    if not removed and not added:
        return retrieval
    n = renumber.size
    R = sp.coo_array(retrieval.matrix)
    dual = R.col >= n
    y = R.col[dual] - n
    col = np.empty_like(R.col)
    col[~dual] = renumber[R.col[~dual]]
    col[dual] = n - removed + np.where(y >= zero, y + added, y)
    shape = (R.shape[0], R.shape[1] - removed + added)
    return Retrieval.of(sp.csr_array((R.data, (R.row, col)), shape=shape), retrieval.outputs)
