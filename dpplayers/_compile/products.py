"""Split large parameter-matrix products ``P @ v`` out of the problem before cvxpy sees it.

cvxpy builds the data of ``P @ x`` (``P`` a dense k × q parameter) through a parameter
tensor of shape (rows · (cols + 1), size(P) + 1) and, on the conic-QP path, densifies parts
of it: compiling ``sum_squares(A @ x - b)`` with a 3,000 × 3,000 ``A`` runs out of memory
inside ``get_problem_data``, although the finished map θ ↦ (A, b, c) holds one coefficient
per entry of ``A``. So each large product is replaced by a new variable ``u`` of its shape
(cvxpy then compiles a problem without ``P``), and :func:`put_back` restores it in the
compiled program, each entry of ``P`` entering as one coefficient per use: where ``u``
enters only with constant coefficients and not the quadratic objective (the usual case) it
is substituted, an entry a on ``u_i`` becoming a·P_ij on ``w_j``, and its columns are
dropped, which gives the very program cvxpy would have built; otherwise ``u`` stays with
the zero-cone rows ``u − P w = 0``, where cvxpy would have put its own auxiliary variable
(``sum_squares(P @ x)`` in P).

The rewrite is an equivalent problem: substituting ``u = P w`` back gives the user's
problem, with the same multipliers for every one of the user's constraints (the rewritten
constraints keep their ids, so duals are read back as before); ``u`` and ``w`` are never
outputs. ``w`` is the product's argument itself when that is a bare vector or matrix
variable without attributes that the rewritten problem still mentions; otherwise a new
variable with the equality ``w == v`` appended to the constraints.

What is split: ``P @ v`` (``MulExpression``) with ``P`` a real, attribute-free 2-D
parameter of at least :data:`SPLIT_MIN_ENTRIES` entries among the listed parameters, and
``v`` real, affine, with variables and no parameters, the product of unknown sign (with a
known sign, cvxpy's DCP analysis could rely on it; a variable has none). Everything else
stays for cvxpy: ``P.T @ x``, ``x @ P``, ``P @ q`` (a parameter), ``P @ (x + q)``,
``quad_form(x, P)``, products under ``perspective`` or ``partial_optimize`` (which
re-read their arguments' variables), complex data, and any problem with ``gp=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import numpy.typing as npt
from cvxpy.atoms.affine.binary_operators import MulExpression
from cvxpy.atoms.perspective import perspective
from cvxpy.expressions.expression import Expression
from cvxpy.expressions.leaf import Leaf
from cvxpy.transforms.indicator import indicator
from cvxpy.transforms.partial_optimize import PartialProblem

__all__ = ["SPLIT_MIN_ENTRIES", "Entries", "Placed", "SplitProduct", "product_rows", "put_back",
           "split_parameter_products"]

#: A product ``P @ v`` is split when ``P`` has at least this many entries (500 × 500).
#: The split changes only how the program is built (:func:`put_back` restores cvxpy's
#: form), so it is taken where it clearly pays. Measured (``benchmarks/README.md``,
#: "Compile scale"): from 500 × 500 on it compiles 3–130× faster (a 500-variable QP 345 →
#: 117 ms, ‖Fx − g‖ + λ‖x‖₁ with a 1,000 × 250 F 4.9 s → 37 ms, the 1,000 × 1,000 lasso
#: 1.9 s and 1 GB → 0.17 s and 0.34 GB, and 3,000 × 3,000, out of memory in cvxpy, in
#: seconds); at 10,000–40,000 entries cvxpy takes 0.1–0.3 s and the split was no faster
#: on every workload (``qp200``'s factor form compiled slower).
SPLIT_MIN_ENTRIES = 250_000

#: Atoms whose canonicalisation reads their arguments' variables (or owns a sub-problem):
#: nothing below them is rewritten.
OPAQUE = (perspective, PartialProblem, indicator)


@dataclass(frozen=True)
class SplitProduct:
    """One split product, ``aux = matrix @ argument`` (:func:`put_back` restores it).

    Attributes:
        aux: the variable ``u`` that replaced ``matrix @ argument``, shape (k,) or (k, r).
        matrix: the parameter ``P``, shape (k, q).
        argument: the variable ``w`` multiplied, shape (q,) or (q, r).
    """

    aux: cp.Variable
    matrix: cp.Parameter
    argument: cp.Variable

    @property
    def rows(self) -> int:
        return int(self.aux.size)


def split_parameter_products(
    problem: cp.Problem, parameters: Sequence[cp.Parameter],
) -> tuple[cp.Problem, tuple[SplitProduct, ...]]:
    """Replace each splittable ``P @ v`` (see the module docstring) by a new variable.

    Returns ``(rewritten, splits)``; without anything to split ``(problem, ())``, the same
    object. Constraints keep their order and ids; ``w == v`` equalities are appended.
    """
    listed = {p.id for p in parameters}
    splitter = _Splitter(listed, {}, [])
    objective = splitter.rewrite(problem.objective.args[0])
    constraints = [splitter.rewrite_constraint(con) for con in problem.constraints]
    if not splitter.found:
        return problem, ()
    rewritten = cp.Problem(type(problem.objective)(objective), constraints)
    mentioned = {v.id for v in rewritten.variables()}
    splits, equalities = [], []
    for aux, matrix, argument in splitter.found:
        if not (_bare(argument) and argument.id in mentioned):
            w = cp.Variable(argument.shape, name=f"{matrix.name()}_product_arg{len(equalities)}")
            equalities.append(w == argument)
            argument = w
        splits.append(SplitProduct(aux, matrix, argument))
    if equalities:
        rewritten = cp.Problem(rewritten.objective, constraints + equalities)
    return rewritten, tuple(splits)


@dataclass(frozen=True)
class _Splitter:
    """Walks expressions once, replacing products; the same product (the same ``P`` times
    the same variable, or the same expression object) gets one ``u``."""

    listed: set[int]
    memo: dict[object, cp.Variable]
    found: list[tuple[cp.Variable, cp.Parameter, Expression]]

    def rewrite_constraint(self, con: cp.Constraint) -> cp.Constraint:
        args = [self.rewrite(arg) for arg in con.args]
        if all(new is old for new, old in zip(args, con.args)):
            return con
        return con.copy(args)  # keeps the constraint's id: its dual is read back by id

    def rewrite(self, expr: Expression) -> Expression:
        """``expr`` with its splittable products replaced (unchanged sub-trees are the same
        objects)."""
        if isinstance(expr, (Leaf, *OPAQUE)):
            return expr
        if self._splittable(expr):
            return self._aux(expr)
        args = [self.rewrite(arg) for arg in expr.args]
        if all(new is old for new, old in zip(args, expr.args)):
            return expr
        return expr.copy(args)

    def _splittable(self, expr: Expression) -> bool:
        if not isinstance(expr, MulExpression) or len(expr.args) != 2:
            return False
        matrix, arg = expr.args
        return (isinstance(matrix, cp.Parameter) and matrix.ndim == 2
                and matrix.id in self.listed
                and matrix.size >= SPLIT_MIN_ENTRIES
                and not any(v for k, v in matrix.attributes.items() if k != "bounds")
                and matrix.attributes.get("bounds") is None
                and arg.ndim in (1, 2) and arg.is_real() and arg.is_affine()
                and bool(arg.variables()) and not arg.parameters()
                and not (expr.is_nonneg() or expr.is_nonpos()))

    def _aux(self, expr: MulExpression) -> cp.Variable:
        matrix, arg = expr.args
        key = (matrix.id, arg.id) if _bare(arg) else id(expr)
        if key not in self.memo:
            self.memo[key] = cp.Variable(expr.shape, name=f"{matrix.name()}_product{len(self.found)}")
            self.found.append((self.memo[key], matrix, arg))
        return self.memo[key]


def _bare(expr: Expression) -> bool:
    """A variable cvxpy keeps as its own columns of x: no attributes (those are reduced
    to other variables)."""
    return (isinstance(expr, cp.Variable)
            and not any(v for k, v in expr.attributes.items() if k != "bounds")
            and expr.attributes.get("bounds") is None)


@dataclass(frozen=True)
class Entries:
    """A sparse matrix's entries as parallel arrays: row, column, the θ̃ column whose value
    they take (θ̃'s last column, p, is the constant 1) and the coefficient."""

    row: npt.NDArray[np.int64]
    col: npt.NDArray[np.int64]
    theta: npt.NDArray[np.int64]
    val: npt.NDArray[np.float64]

    def __getitem__(self, keep: npt.NDArray[np.bool_]) -> Entries:
        return Entries(self.row[keep], self.col[keep], self.theta[keep], self.val[keep])

    @classmethod
    def join(cls, parts: Sequence[Entries]) -> Entries:
        return cls(*(np.concatenate([getattr(e, f) for e in parts])
                     for f in ("row", "col", "theta", "val")))


@dataclass(frozen=True)
class Placed:
    """A split product in cvxpy's program: the first columns of x holding vec(u) and
    vec(w), and the first row of θ holding vec(P)."""

    split: SplitProduct
    aux_col: int
    arg_col: int
    offset: int

    @property
    def aux_cols(self) -> npt.NDArray[np.int64]:
        return self.aux_col + np.arange(self.split.rows, dtype=np.int64)


def put_back(placed: Sequence[Placed], A: Entries, c: Entries, P: Entries | None,
             p: int) -> tuple[Entries, Entries, list[tuple[Placed, Entries]], npt.NDArray[np.int64]]:
    """Put ``u = P w`` back into cvxpy's program (A: rows and columns; c: rows are columns of
    x; P: both are).

    Where ``u`` enters A and c only with constant coefficients and not P, it is substituted:
    an entry a at (row, u_(c,i)) becomes the entries a·P_ij at (row, w_(c,j)) for every j,
    the very entries cvxpy would have made for ``P @ w`` there, and u's columns are removed
    (returned, for the caller to delete). Otherwise (u in the quadratic objective, or times
    another parameter) u stays and its rows ``u − P w = 0`` are returned (local row
    numbers), as cvxpy's own auxiliary for the product would have been.

    Returns (A, c, [(placed, its rows)], removed columns).
    """
    rows, removed = [], []
    for item in placed:
        cols = item.aux_cols
        on_A, on_c = np.isin(A.col, cols), np.isin(c.row, cols)
        in_P = P is not None and bool((np.isin(P.row, cols) | np.isin(P.col, cols)).any())
        if in_P or (A.theta[on_A] != p).any() or (c.theta[on_c] != p).any():
            rows.append((item, product_rows(item, p)))
            continue
        A = Entries.join([A[~on_A], _substitute(item, A[on_A], vector=False)])
        c = Entries.join([c[~on_c], _substitute(item, c[on_c], vector=True)])
        removed.append(cols)
    return A, c, rows, (np.concatenate(removed) if removed else np.zeros(0, np.int64))


def _substitute(item: Placed, on_u: Entries, vector: bool) -> Entries:
    """Constant entries on u's columns (A) or, for a ``vector`` indexed by x's columns (c),
    rows → the same coefficients times P on w's: a at u_(c,i) becomes a·P_ij at w_(c,j),
    j = 0..q−1."""
    k, q = item.split.matrix.shape
    local = (on_u.row if vector else on_u.col) - item.aux_col
    block, i = local // k, local % k
    j = np.arange(q, dtype=np.int64)
    w = (item.arg_col + block[:, None] * q + j[None, :]).ravel()
    theta = (item.offset + j[None, :] * k + i[:, None]).ravel()
    val = np.repeat(on_u.val, q)
    if vector:
        return Entries(w, np.zeros(w.size, np.int64), theta, val)
    return Entries(np.repeat(on_u.row, q), w, theta, val)


def product_rows(item: Placed, p: int) -> Entries:
    """The rows ``vec(u) − (I_r ⊗ P) vec(w) = 0`` (rows numbered from 0): entry (i, j) of P,
    read from θ̃ at ``offset + j·k + i`` (column-major), lands once per column c of w at row
    c·k + i, column ``arg_col + c·q + j``, with coefficient −1; u's coefficient +1 is
    constant (θ̃'s last column, ``p``)."""
    split = item.split
    k, q = split.matrix.shape
    r = split.rows // k
    c, j, i = (a.ravel() for a in np.meshgrid(np.arange(r, dtype=np.int64),
                                               np.arange(q, dtype=np.int64),
                                               np.arange(k, dtype=np.int64), indexing="ij"))
    own = np.arange(split.rows, dtype=np.int64)
    return Entries(np.concatenate([c * k + i, own]),
                   np.concatenate([item.arg_col + c * q + j, item.aux_col + own]),
                   np.concatenate([item.offset + j * k + i, np.full(split.rows, p, np.int64)]),
                   np.concatenate([np.full(c.size, -1.0), np.ones(split.rows)]))
