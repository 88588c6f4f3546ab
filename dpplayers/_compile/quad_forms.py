"""Lift parametric quadratic forms out of the objective.

cvxpy's DPP rules reject ``quad_form(x, Q)`` when ``Q`` is a ``cp.Parameter``, because the
cone-program data it produces is quadratic, not affine, in the parameters. Our solvers take
the quadratic objective matrix P of ``½ uᵀPu`` directly, and P is linear in Q, so such a
term is fine when it is a positively weighted summand of the objective: replace each
``w * quad_form(e, Q)`` by ``w * quad_form(aux, Q)`` with a new variable ``aux == e``. This
module removes the term from the objective and adds the equality; the compiler then adds
``2 * w * Q`` to the block of P that belongs to ``aux`` (objective convention ``½ uᵀPu``).

What is lifted: a summand of the objective, reached through sums, negations, and
multiplication or division by a real scalar constant (``0.5 * quad_form(z, Q)``,
``quad_form(z, Q) * 2``, ``quad_form(z, Q) / 2``, ``-quad_form(z, Q)`` under ``Maximize``),
whose matrix is real, affine in the parameters and known to cvxpy as PSD when the total
weight is positive (NSD when it is negative): a parameter declared ``PSD=True`` (or wrapped
by ``cp.psd_wrap``, i.e. ``quad_form(..., assume_PSD=True)``), sums and positive multiples of
such parameters (``Q1 + Q2``, ``2 * Q``), or an ``NSD=True`` parameter under ``Maximize``;
and whose argument is an affine expression of variables. Anything else stays in place and
:func:`dpplayers._compile.dpp.check_dpp` explains why it is not DPP.

A quadratic form with a constant matrix and a parameter-dependent argument
(``quad_form(x - p, M)``, and ``matrix_frac(x - p, M)``, which cvxpy builds as one) is
also rewritten, wherever it sits in the objective: its argument becomes a new variable
``aux == x - p``. cvxpy keeps such a term in P only when its argument is parameter-free;
otherwise it evaluates the parameters once, freezing their values in the compiled data.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
from cvxpy.atoms.affine.add_expr import AddExpression
from cvxpy.atoms.affine.binary_operators import DivExpression, MulExpression
from cvxpy.atoms.affine.unary_operators import NegExpression
from cvxpy.atoms.affine.wraps import psd_wrap
from cvxpy.atoms.quad_form import QuadForm
from cvxpy.expressions.constants.parameter import is_param_affine
from cvxpy.expressions.expression import Expression
from cvxpy.expressions.leaf import Leaf
from cvxpy.utilities.scopes import dpp_scope

from ..errors import leaf_name

__all__ = [
    "ParametricQuadForm", "explain_frozen_parameters", "explain_quad_form",
    "lift_parametric_quad_forms", "matrix_coefficients", "quad_form_matrix",
]

CONSTRAINT_HINT = (
    "`{expr}` uses the parameter matrix `{matrix}` in a constraint; factor Q = L^T L and write "
    "`cp.sum_squares(L @ ({arg}))` instead (e.g. `cp.sum_squares(L @ (y - z)) <= 1`), with a "
    "new parameter L whose value is a factor of Q's value (e.g. Cholesky)")
NOT_PSD_HINT = (
    "declare `{matrix}` with PSD=True (or call `cp.quad_form(..., assume_PSD=True)`) so "
    "`{expr}` can be lifted into the quadratic part of the objective")
NOT_BARE_HINT = (
    "the matrix `{matrix}` of `{expr}` must be affine in the parameters and PSD as cvxpy "
    "sees it (a PSD=True parameter, sums and positive multiples of them, psd_wrap); "
    "otherwise introduce a new PSD parameter (a bare cp.Parameter) for `{matrix}` and pass "
    "its value")
NOT_SUMMAND_HINT = (
    "`{expr}` is supported only as a summand of the objective with a constant positive weight "
    "for a PSD matrix (negative for an NSD one; the opposite under Maximize), not nested in "
    "another expression or with a parameter-dependent weight; use such a weight, or "
    "`cp.sum_squares(L @ x)` with a factor parameter L")
FROZEN_PARAMETERS_MSG = (
    "cvxpy cannot keep the parameter(s) {names} of `{expr}` as parameters: it would compile "
    "their current values into the program, and later values would be ignored. {hint}")
FROZEN_QUAD_FORM_HINT = (
    "Write the quadratic form as `cp.sum_squares(L @ ({arg}))` with a constant factor L "
    "(M = LᵀL, e.g. Cholesky), or make its argument parameter-free with a new variable "
    "`aux == {arg}`.")
FROZEN_HINT = "Rewrite it so that it is DPP for cvxpy's conic-QP path."


@dataclass(frozen=True)
class ParametricQuadForm:
    """One lifted objective term ``weight * quad_form(aux, matrix)``.

    The lifted problem contains the constraint ``aux == expression``; its objective no longer
    contains the term, so the compiler must add ``2 * weight * matrix`` to the P block of
    ``aux``'s columns (P in the convention ``½ uᵀPu``).

    Attributes:
        weight: the scalar weight w of the term in the (minimised) objective: positive for
            a PSD matrix, negative for an NSD one, so that ``w * Q`` is PSD.
        aux: the new variable, of shape ``(k,)``.
        matrix: the ``(k, k)`` matrix Q, affine in the parameters (often one parameter).
        expression: the original affine argument, flattened (column-major) to shape ``(k,)``.
    """

    weight: float
    aux: cp.Variable
    matrix: Expression
    expression: Expression

    def __post_init__(self) -> None:
        k = self.aux.size
        if (self.weight == 0 or self.weight < 0 and self.matrix.is_psd()
                or self.weight > 0 and self.matrix.is_nsd()):
            raise ValueError(
                f"ParametricQuadForm weight must be positive for a PSD matrix (negative for "
                f"an NSD one), got {self.weight} for `{self.matrix}`.")
        if self.aux.shape != (k,) or self.matrix.shape != (k, k):
            raise ValueError(
                f"ParametricQuadForm shapes disagree: aux {self.aux.shape}, "
                f"matrix {self.matrix.shape}; expected (k,) and (k, k)."
            )
        if self.expression.shape != (k,):
            raise ValueError(
                f"ParametricQuadForm expression has shape {self.expression.shape}, "
                f"expected ({k},)."
            )


def quad_form_matrix(expr: Expression) -> Expression | None:
    """Q of ``quad_form(x, Q)`` when Q is variable-free, affine in the parameters and has
    some (``psd_wrap(Q)`` counts as Q), else None."""
    if not isinstance(expr, QuadForm):
        return None
    matrix = expr.args[1]
    if isinstance(matrix, psd_wrap):
        matrix = matrix.args[0]
    if not matrix.parameters() or matrix.variables():
        return None
    with dpp_scope():
        return matrix if is_param_affine(matrix) else None


def explain_quad_form(expr: QuadForm, in_objective: bool) -> str:
    """Why ``quad_form(x, Q)`` with a parameter-dependent Q was not lifted, and what to do."""
    fmt = {"expr": expr, "matrix": expr.args[1], "arg": expr.args[0]}
    if not in_objective:
        return CONSTRAINT_HINT.format(**fmt)
    matrix = expr.args[1]
    if isinstance(matrix, cp.Parameter) and not (matrix.is_psd() or matrix.is_nsd()):
        return NOT_PSD_HINT.format(**fmt)
    if quad_form_matrix(expr) is None or not (matrix.is_psd() or matrix.is_nsd()):
        return NOT_BARE_HINT.format(**fmt)
    return NOT_SUMMAND_HINT.format(**fmt)


def explain_frozen_parameters(objective: Expression) -> str:
    """Which parameters cvxpy's conic-QP path would evaluate once (its QP-scoped DPP test
    fails on a quad form with a parameter-dependent argument), where, and the rewrite."""
    culprits = [e for e in _subexpressions(objective)
                if isinstance(e, QuadForm) and e.args[0].parameters()]
    expr = culprits[0] if culprits else objective
    names = ", ".join(f"`{leaf_name(p)}`" for p in expr.parameters())
    hint = FROZEN_QUAD_FORM_HINT.format(arg=expr.args[0]) if culprits else FROZEN_HINT
    return FROZEN_PARAMETERS_MSG.format(names=names, expr=expr, hint=hint)


def _subexpressions(expr: Expression) -> list[Expression]:
    return [expr] + [sub for arg in expr.args for sub in _subexpressions(arg)]


def matrix_coefficients(
    matrix: Expression,
) -> tuple[np.ndarray, dict[int, sp.csc_array]]:
    """The affine map θ ↦ vec_F(Q(θ)) of a parameter-affine matrix, read by probing.

    Returns ``(Q0, {parameter id: T_p})`` with vec_F(Q) = Q0 + Σ_p T_p vec_F(p), ``T_p``
    sparse of shape ``(Q.size, p.size)``. A bare parameter is the identity; otherwise the
    expression tree is evaluated once per parameter entry with values substituted for its
    parameters (not assigned to them: a unit probe is not PSD, and the user's values stay
    untouched); affinity in the parameters makes the probes exact.
    """
    if isinstance(matrix, cp.Parameter):
        return np.zeros(matrix.size), {matrix.id: sp.identity(matrix.size, format="csc")}
    params = matrix.parameters()
    zeros = {p.id: np.zeros(p.shape) for p in params}
    base = _vec(_evaluate(matrix, zeros))
    coefficients = {}
    for param in params:
        rows, cols, vals = [], [], []
        for entry in range(param.size):
            unit = np.zeros(param.size)
            unit[entry] = 1.0
            probe = dict(zeros)
            probe[param.id] = unit.reshape(param.shape, order="F")
            column = _vec(_evaluate(matrix, probe)) - base
            nonzero = np.flatnonzero(column)
            rows.append(nonzero)
            cols.append(np.full(nonzero.size, entry))
            vals.append(column[nonzero])
        coefficients[param.id] = sp.csc_array(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(base.size, param.size))
    return base, coefficients


def _evaluate(expr: Expression, values: dict[int, np.ndarray]) -> np.ndarray:
    """``expr``'s value with ``values`` (by parameter id) in place of its parameters."""
    if isinstance(expr, cp.Parameter):
        return values[expr.id]
    if isinstance(expr, Leaf):
        return expr.value
    return expr.numeric([_evaluate(arg, values) for arg in expr.args])


def _vec(value: object) -> np.ndarray:
    """vec_F of a numeric value (dense or scipy sparse)."""
    dense = value.toarray() if hasattr(value, "toarray") else np.asarray(value, dtype=float)
    return np.asarray(dense, dtype=float).reshape(-1, order="F")


def _scalar_constant(expr: Expression) -> float | None:
    """The value of a real, parameter-free, variable-free scalar, else None."""
    if expr.size != 1 or expr.parameters() or expr.variables() or not expr.is_real():
        return None
    with np.errstate(all="ignore"):  # e.g. sqrt(-1.5): not a usable weight, not an error
        value = expr.value
    if value is None or not np.all(np.isfinite(value)):
        return None
    return float(np.real(np.asarray(value)).reshape(()))


def _flatten(expr: Expression) -> Expression:
    """``expr`` as a vector of shape ``(k,)`` (column-major, as cvxpy vectorises)."""
    if expr.ndim == 1:
        return expr
    return cp.reshape(expr, (expr.size,), order="F")


@dataclass(frozen=True)
class _Lifter:
    """Walks the objective once, collecting lifted terms; ``strip`` returns what remains."""

    forms: list[ParametricQuadForm]

    def strip(self, expr: Expression, coef: float) -> Expression | None:
        """``expr`` without its liftable quad forms (None if nothing remains).

        ``coef`` is the factor multiplying ``expr`` in the minimised objective. Unchanged
        sub-trees are returned as the same objects, so diagnostics print them unchanged.
        """
        if isinstance(expr, AddExpression):
            kept = [self.strip(arg, coef) for arg in expr.args]
            if all(new is old for new, old in zip(kept, expr.args)):
                return expr
            remaining = [new for new in kept if new is not None]
            return functools.reduce(operator.add, remaining) if remaining else None
        if isinstance(expr, NegExpression):
            return self._rebuild(expr, 0, -coef, lambda inner: -inner)
        if isinstance(expr, MulExpression) and len(expr.args) == 2:
            for idx in (0, 1):
                scale = _scalar_constant(expr.args[1 - idx])
                if scale is not None:
                    return self._rebuild(expr, idx, coef * scale, None)
            return expr
        if isinstance(expr, DivExpression):
            scale = _scalar_constant(expr.args[1])
            if scale is not None and scale != 0:
                return self._rebuild(expr, 0, coef / scale, None)
            return expr
        matrix = self._liftable(expr, coef)
        if matrix is None:
            return expr
        argument = _flatten(expr.args[0])
        if isinstance(argument, cp.Variable) and argument.ndim == 1:
            aux = argument  # P goes straight onto its columns (if it survives, see below)
        else:
            name = f"{_label(matrix)}_quad_form_aux{len(self.forms)}"
            aux = cp.Variable(argument.size, name=name)
        self.forms.append(ParametricQuadForm(coef, aux, matrix, argument))
        return None

    def _rebuild(
        self,
        expr: Expression,
        idx: int,
        coef: float,
        make: Callable[[Expression], Expression] | None,
    ) -> Expression | None:
        """Strip argument ``idx`` of ``expr`` and rebuild ``expr`` around what remains."""
        old = expr.args[idx]
        new = self.strip(old, coef)
        if new is old:
            return expr
        if new is None:
            return None
        if make is not None:
            return make(new)
        args = list(expr.args)
        args[idx] = new
        return expr.copy(args)

    @staticmethod
    def _liftable(expr: Expression, coef: float) -> Expression | None:
        """Q if ``coef * expr`` is a liftable ``quad_form(x, Q)`` term, else None."""
        matrix = quad_form_matrix(expr)
        if matrix is None:
            return None
        arg = expr.args[0]
        liftable = (
            matrix.is_real()
            # the declared matrix decides: psd_wrap(Q) is PSD though Q need not be
            and (coef > 0 and expr.args[1].is_psd() or coef < 0 and expr.args[1].is_nsd())
            and arg.is_real()
            and bool(arg.variables())
            and arg.is_affine()
        )
        return matrix if liftable else None


def lift_parametric_quad_forms(
    problem: cp.Problem,
) -> tuple[cp.Problem, tuple[ParametricQuadForm, ...]]:
    """Remove the liftable ``quad_form(e, Q)`` terms (Q parameter-affine) from the objective.

    Each lifted term becomes a constraint ``aux == e`` appended after the original
    constraints (so constraint indices are unchanged), except when ``e`` is a vector
    variable that the rest of the problem mentions: then ``aux`` is ``e`` itself; a
    ``Maximize`` objective becomes ``Minimize`` of its negation. A constant-matrix quad form
    whose argument depends on parameters gets its argument replaced the same way (it stays
    in the objective). The problem passed in is not modified.

    Args:
        problem: the user's problem.

    Returns:
        ``(lifted, forms)``: the lifted problem and the lifted terms, in the order they
        appear in the objective. Without anything to rewrite: ``(problem, ())``, the same
        object.
    """
    lifter = _Lifter([])
    maximize = isinstance(problem.objective, cp.Maximize)
    expr = problem.objective.args[0]
    remaining = lifter.strip(expr, -1.0 if maximize else 1.0)
    freed: list[cp.Constraint] = []
    if remaining is not None:
        remaining = _free_quad_form_arguments(remaining, freed)
    if not lifter.forms and not freed:
        return problem, ()
    if not lifter.forms:  # only arguments freed: the objective keeps its sense
        objective = type(problem.objective)(remaining)
    elif remaining is None:
        objective = cp.Minimize(cp.Constant(0.0))
    else:
        objective = cp.Minimize(-remaining if maximize else remaining)
    forms = _own_variables(lifter.forms, objective.args[0],
                           list(problem.constraints) + freed)
    equalities = [form.aux == form.expression for form in forms if form.aux is not form.expression]
    lifted = cp.Problem(objective, list(problem.constraints) + freed + equalities)
    return lifted, tuple(forms)


def _own_variables(forms: list[ParametricQuadForm], remaining: Expression,
                   constraints: list[cp.Constraint]) -> list[ParametricQuadForm]:
    """Give a lifted term whose argument is a bare vector variable a copy ``aux`` where
    needed. Unneeded when something else mentions the variable; needed when nothing does
    (cvxpy would drop it from the canonical program) and when the lifted problem would
    otherwise have no constraints at all (cvxpy refuses such a problem for SCS before any
    row could be added)."""
    present = {v.id for v in remaining.variables()}
    present |= {v.id for con in constraints for v in con.variables()}
    copy_all = not constraints and all(f.aux is f.expression for f in forms)
    owned = []
    for form in forms:
        if form.aux is form.expression and (copy_all or form.aux.id not in present):
            aux = cp.Variable(form.aux.size, name=f"{_label(form.matrix)}_quad_form_aux")
            form = ParametricQuadForm(form.weight, aux, form.matrix, form.expression)
        owned.append(form)
    return owned


def _free_quad_form_arguments(expr: Expression, equalities: list[cp.Constraint]) -> Expression:
    """``expr`` with the argument of each constant-matrix quad form that depends on
    parameters replaced by a new variable ``aux`` (``aux == argument`` appended to
    ``equalities``). Unchanged sub-trees are returned as the same objects."""
    if isinstance(expr, QuadForm):
        arg, matrix = expr.args
        if arg.parameters() and not matrix.parameters():
            aux = cp.Variable(arg.shape, name=f"quad_form_arg{len(equalities)}",
                              complex=not arg.is_real())
            equalities.append(aux == arg)
            return expr.copy([aux, matrix])
        return expr
    if not expr.args:
        return expr
    args = [_free_quad_form_arguments(arg, equalities) for arg in expr.args]
    if all(new is old for new, old in zip(args, expr.args)):
        return expr
    return expr.copy(args)


def _label(matrix: Expression) -> str:
    """A name for variables made for ``matrix``: its own if it is a parameter."""
    return matrix.name() if isinstance(matrix, cp.Parameter) else "Q"
