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
whose total weight is positive, whose matrix is a bare real ``cp.Parameter`` declared
``PSD=True`` (or wrapped by ``cp.psd_wrap``, i.e. ``quad_form(..., assume_PSD=True)``), and
whose argument is an affine expression of variables. Anything else stays in place and
:func:`dpplayers.dpp.check_dpp` explains why it is not DPP.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
from cvxpy.atoms.affine.add_expr import AddExpression
from cvxpy.atoms.affine.binary_operators import DivExpression, MulExpression
from cvxpy.atoms.affine.unary_operators import NegExpression
from cvxpy.atoms.affine.wraps import psd_wrap
from cvxpy.atoms.quad_form import QuadForm
from cvxpy.expressions.expression import Expression

__all__ = [
    "ParametricQuadForm", "explain_quad_form", "lift_parametric_quad_forms", "quad_form_matrix",
]

CONSTRAINT_HINT = (
    "`{expr}` uses the parameter matrix `{matrix}` in a constraint; factor Q = L^T L and write "
    "`cp.sum_squares(L @ ({arg}))` instead (e.g. `cp.sum_squares(L @ (y - z)) <= 1`), with a "
    "new parameter L whose value is a factor of Q's value (e.g. Cholesky)")
NOT_PSD_HINT = (
    "declare `{matrix}` with PSD=True (or call `cp.quad_form(..., assume_PSD=True)`) so "
    "`{expr}` can be lifted into the quadratic part of the objective")
NOT_BARE_HINT = (
    "the matrix of `{expr}` must be a bare cp.Parameter; introduce a new PSD parameter for "
    "`{matrix}` and pass its value")
NOT_SUMMAND_HINT = (
    "`{expr}` is supported only as a summand of the objective with a constant positive weight "
    "(negative under Maximize), not nested in another expression or with a negative or "
    "parameter-dependent weight; use such a weight, or `cp.sum_squares(L @ x)` with a factor "
    "parameter L")


@dataclass(frozen=True)
class ParametricQuadForm:
    """One lifted objective term ``weight * quad_form(aux, matrix)``.

    The lifted problem contains the constraint ``aux == expression``; its objective no longer
    contains the term, so the compiler must add ``2 * weight * matrix`` to the P block of
    ``aux``'s columns (P in the convention ``½ uᵀPu``).

    Attributes:
        weight: the positive scalar weight w of the term in the (minimised) objective.
        aux: the new variable, of shape ``(k,)``.
        matrix: the ``(k, k)`` parameter Q.
        expression: the original affine argument, flattened (column-major) to shape ``(k,)``.
    """

    weight: float
    aux: cp.Variable
    matrix: cp.Parameter
    expression: Expression

    def __post_init__(self) -> None:
        k = self.aux.size
        if not self.weight > 0:
            raise ValueError(f"ParametricQuadForm weight must be positive, got {self.weight}.")
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


def quad_form_matrix(expr: Expression) -> cp.Parameter | None:
    """The bare parameter Q of ``quad_form(x, Q)`` (``psd_wrap(Q)`` unwrapped), else None."""
    if not isinstance(expr, QuadForm):
        return None
    matrix = expr.args[1]
    if isinstance(matrix, psd_wrap):
        matrix = matrix.args[0]
    return matrix if isinstance(matrix, cp.Parameter) else None


def explain_quad_form(expr: QuadForm, in_objective: bool) -> str:
    """Why ``quad_form(x, Q)`` with a parameter-dependent Q was not lifted, and what to do."""
    fmt = {"expr": expr, "matrix": expr.args[1], "arg": expr.args[0]}
    if not in_objective:
        return CONSTRAINT_HINT.format(**fmt)
    if quad_form_matrix(expr) is None:
        return NOT_BARE_HINT.format(**fmt)
    if not expr.args[1].is_psd():
        return NOT_PSD_HINT.format(**fmt)
    return NOT_SUMMAND_HINT.format(**fmt)


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
            aux = cp.Variable(argument.size, name=f"{matrix.name()}_quad_form_aux{len(self.forms)}")
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
    def _liftable(expr: Expression, coef: float) -> cp.Parameter | None:
        """Q if ``coef * expr`` is a liftable ``quad_form(x, Q)`` term, else None."""
        matrix = quad_form_matrix(expr)
        if matrix is None or not coef > 0:
            return None
        arg = expr.args[0]
        liftable = (
            matrix.is_real()
            and expr.args[1].is_psd()  # a PSD attribute, or psd_wrap
            and arg.is_real()
            and bool(arg.variables())
            and arg.is_affine()
        )
        return matrix if liftable else None


def lift_parametric_quad_forms(
    problem: cp.Problem,
) -> tuple[cp.Problem, tuple[ParametricQuadForm, ...]]:
    """Remove the liftable ``quad_form(e, Q)`` terms (Q a parameter) from the objective.

    Each lifted term becomes a constraint ``aux == e`` appended after the original
    constraints (so constraint indices are unchanged), except when ``e`` is a vector
    variable that the rest of the problem mentions: then ``aux`` is ``e`` itself; a ``Maximize`` objective becomes
    ``Minimize`` of its negation. The problem passed in is not modified.

    Args:
        problem: the user's problem.

    Returns:
        ``(lifted, forms)``: the lifted problem and the lifted terms, in the order they
        appear in the objective. Without liftable terms: ``(problem, ())``, the same object.
    """
    lifter = _Lifter([])
    maximize = isinstance(problem.objective, cp.Maximize)
    expr = problem.objective.args[0]
    remaining = lifter.strip(expr, -1.0 if maximize else 1.0)
    if not lifter.forms:
        return problem, ()
    if remaining is None:
        remaining = cp.Constant(0.0)
    elif maximize:
        remaining = -remaining
    # A bare vector variable needs no copy, unless nothing else mentions it (cvxpy would
    # then drop it from the canonical program); every other argument gets aux == e.
    present = {v.id for v in remaining.variables()}
    present |= {v.id for con in problem.constraints for v in con.variables()}
    forms = []
    for form in lifter.forms:
        if form.aux is form.expression and form.aux.id not in present:
            form = ParametricQuadForm(
                form.weight, cp.Variable(form.aux.size, name=f"{form.matrix.name()}_quad_form_aux"),
                form.matrix, form.expression)
        forms.append(form)
    equalities = [form.aux == form.expression for form in forms if form.aux is not form.expression]
    lifted = cp.Problem(cp.Minimize(remaining), list(problem.constraints) + equalities)
    return lifted, tuple(forms)
