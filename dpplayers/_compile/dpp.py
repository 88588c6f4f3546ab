"""Decide whether a problem is DPP and explain each violation.

The verdict is cvxpy's (``is_dpp``), taken on the problem after
:func:`dpplayers._compile.quad_forms.lift_parametric_quad_forms`, so ``quad_form(z, Q)`` with a
parameter-affine PSD ``Q`` (``Q``, ``Q1 + Q2``, ``2 * Q``; NSD under ``Maximize``) is accepted
as a term of the objective, and ``quad_form(x - p, M)`` with a constant ``M`` anywhere in the
objective is accepted with its argument lifted (cvxpy's conic-QP path would otherwise
evaluate ``p`` once). When cvxpy says no, each failing
objective or constraint is walked with cvxpy's own per-node predicates (``is_convex``,
``is_atom_convex``, ``is_incr``..., under ``dpp_scope``) down to the smallest
sub-expression that breaks the composition rules, which is then named, classified by
:class:`Rule` and paired with a rewrite. The DPP rules themselves are never re-derived.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cvxpy as cp
from cvxpy.atoms.affine.binary_operators import DivExpression, MulExpression
from cvxpy.atoms.affine.conv import conv, convolve
from cvxpy.atoms.affine.kron import kron
from cvxpy.atoms.affine.promote import Promote
from cvxpy.atoms.atom import Atom
from cvxpy.atoms.quad_form import QuadForm
from cvxpy.constraints import Equality, Inequality, NonNeg, NonPos
from cvxpy.expressions.constants.parameter import is_param_affine
from cvxpy.expressions.expression import Expression
from cvxpy.utilities.scopes import dpp_scope

from ..errors import given_name, leaf_name, quoted_name
from .quad_forms import explain_quad_form, lift_parametric_quad_forms

__all__ = ["DPPReport", "Rule", "Violation", "check_dpp"]


class Rule(enum.Enum):
    """The rule a sub-expression breaks; each value is a short description."""

    PARAMETER_PRODUCT = "product of two parameter-dependent expressions"
    PARAMETER_IN_NONAFFINE = "parameter inside a non-affine expression"
    NOT_DCP = "breaks the DCP curvature rules (parameters aside)"
    DQCP_ONLY = "quasiconvex (DQCP) but not DCP; dpplayers does not support DQCP"
    NOT_DGP = "breaks the DGP log-log curvature rules (parameters aside)"
    GP_PARAMETER = "parameter used where DGP-DPP needs it log-log affine"
    QUAD_FORM_NOT_IN_OBJECTIVE = "quad_form with a parameter matrix: only supported in the objective"
    MIXED_INTEGER = ("integer or boolean variable: mixed-integer problems are not "
                     "differentiable layers")


_GRADIENT_NOTE = (
    " (compute it from {params} outside the problem; in a PyTorch/JAX layer, in the framework,"
    " so gradients reach them)")
PRODUCT_HINT = "introduce a new parameter for `{expr}` and pass its value" + _GRADIENT_NOTE
PRODUCT_WITH_VARIABLES_HINT = (
    "`{expr}` multiplies factors that both depend on parameters ({params}); introduce one new "
    "parameter for the product of those parameters, pass its value, and multiply the "
    "parameter-free part by it")
NONAFFINE_HINT = (
    "precompute `{expr}`: introduce a new parameter for it and pass its value" + _GRADIENT_NOTE)
DIVISION_HINT = (
    "`{expr}` divides by the parameter-dependent `{den}`; introduce a new parameter for "
    "`1/({den})`, pass its value, and multiply by it")
NONAFFINE_ATOM_HINT = (
    "`{expr}` uses parameters ({params}) inside a non-affine atom, which DPP forbids; move them "
    "out of the atom (scale its argument or result instead) or introduce a new parameter for "
    "the parameter-dependent quantity and pass its value")
SIGN_HINT = (
    "`{expr}` multiplies a {curvature} expression by `{factor}`, whose sign cvxpy cannot tell; "
    "declare the parameter(s) {params} with nonneg=True (or nonpos=True)")
VARIABLE_PRODUCT_HINT = (
    "`{expr}` multiplies expressions that both depend on variables, which is not DCP; "
    "reformulate it (e.g. with a new variable) following {url}")
CURVATURE_HINT = (
    "`{expr}` is {curvature} where {need} is needed{where}; rewrite it following the {rules} "
    "rules ({url})")
DQCP_HINT = (
    "`{expr}` is only quasiconvex/quasiconcave: cvxpy solves DQCP problems by bisection over "
    "many problems, which dpplayers cannot differentiate; reformulate the problem as DCP")
DQCP_NOTE = " (cvxpy accepts it as DQCP with qcp=True, which dpplayers does not support)"
POSITIVE_HINT = "declare `{expr}` with pos=True: DGP needs positive variables and parameters"
NONPOSITIVE_CONSTANT_HINT = "DGP needs positive constants; `{expr}` is not (drop or rescale it)"
GP_PARAMETER_HINT = (
    "in DGP-DPP parameters may appear only log-log affinely (in monomials); introduce a new "
    "positive parameter for `{expr}` and pass its value")
DGP_CONSTRAINT_HINT = (
    "DGP allows only <=, >= and == constraints between log-log expressions; rewrite `{expr}`")
MIXED_INTEGER_HINT = (
    "{name} is declared {attr}=True: a mixed-integer problem's solution is piecewise constant "
    "in the parameters, so it has no useful derivative and dpplayers does not solve it; use a "
    "continuous variable (a relaxation) or solve the integer problem outside the layer")
UNDIAGNOSED_HINT = "cvxpy rejects `{expr}` under the {rules} rules ({url})"
MISSING_PARAMETERS_MSG = "parameters of the problem missing from `parameters` (pass them all)"
UNKNOWN_PARAMETERS_MSG = "entries of `parameters` that are not parameters of the problem"
UNKNOWN_VARIABLES_MSG = "requested variables that are not variables or constraint duals of it"
#: cvxpylayers' wording for the same faults, kept in our messages for code that matches it.
PARAMETERS_MATCH_MSG = "The layer's parameters must exactly match problem.parameters."
VARIABLES_SUBSET_MSG = (
    "Requested variables must be a subset of problem.variables or a constraint dual variable.")
MUST_BE_DPP_MSG = "Problem must be DPP{gp}: rewrite each expression above as its fix says."
DCP_URL = "https://www.cvxpy.org/tutorial/dcp/"
DGP_URL = "https://www.cvxpy.org/tutorial/dgp/"
_LOCATION_WIDTH = 60
_PRODUCT_ATOMS = (MulExpression, DivExpression, kron, conv, convolve)


@dataclass(frozen=True)
class Violation:
    """One offending sub-expression: what it is, which rule, where, and how to fix it.

    ``expression`` is cvxpy's ``str`` of the smallest offending sub-expression, with each
    unnamed leaf called by its place in the lists the user passed (``parameters[1]``,
    ``variables[0]``, or ``problem.variables()[2]``) instead of cvxpy's ``param61``;
    ``location`` is ``"objective"`` or ``"constraint i: <constraint, truncated>"``.
    """

    expression: str
    rule: Rule
    location: str
    hint: str


@dataclass(frozen=True)
class DPPReport:
    """cvxpy's DPP verdict on a problem, explained; ``ok`` means it can be compiled.

    ``ok`` holds iff there are no violations and no missing or unknown names. Names are
    the user's, else positions in the list passed (or in ``problem.parameters()`` for a
    missing one) and shapes. ``str(report)`` is a headline plus one numbered block per violation.
    """

    ok: bool
    violations: tuple[Violation, ...]
    missing_parameters: tuple[str, ...]
    unknown_parameters: tuple[str, ...]
    unknown_variables: tuple[str, ...]
    gp: bool

    def __str__(self) -> str:
        kind = "DGP-DPP" if self.gp else "DPP"
        if not self.violations:
            head = f"The problem is {kind}" + ("." if self.ok else ", but:")
        else:
            count = len(self.violations)
            head = f"The problem is not {kind}: {count} violation{'s' * (count != 1)}."
        lines = [head]
        for number, v in enumerate(self.violations, 1):
            lines += ["", f"  {number}. {v.expression}", f"     rule:  {v.rule.value}",
                      f"     where: {v.location}", f"     fix:   {v.hint}"]
        for names, what in ((self.missing_parameters, MISSING_PARAMETERS_MSG),
                            (self.unknown_parameters, UNKNOWN_PARAMETERS_MSG),
                            (self.unknown_variables, UNKNOWN_VARIABLES_MSG)):
            if names:
                lines += ["", f"{what}: {', '.join(names)}"]
        if self.missing_parameters or self.unknown_parameters:
            lines += ["", PARAMETERS_MATCH_MSG]
        if self.unknown_variables:
            lines += ["", VARIABLES_SUBSET_MSG]
        if any(v.rule is not Rule.MIXED_INTEGER for v in self.violations):
            lines += ["", MUST_BE_DPP_MSG.format(gp=" for geometric programming" * self.gp)]
        return "\n".join(lines)


class _Need(enum.Enum):
    CONVEX = "convex"
    CONCAVE = "concave"
    AFFINE = "affine"
    ANY = "convex or concave"


def _sat(expr: Expression, need: _Need, gp: bool) -> bool:
    """Whether cvxpy finds ``expr`` to have the needed (log-log, if ``gp``) curvature."""
    if gp:
        cvx, ccv, aff = expr.is_log_log_convex, expr.is_log_log_concave, expr.is_log_log_affine
    else:
        cvx, ccv, aff = expr.is_convex, expr.is_concave, expr.is_affine
    if need is _Need.ANY:
        return cvx() or ccv()
    return {_Need.CONVEX: cvx, _Need.CONCAVE: ccv, _Need.AFFINE: aff}[need]()


def _descend(expr: Expression, need: _Need, gp: bool) -> list[tuple[Expression, _Need]]:
    """The smallest sub-expressions that stop ``expr`` having ``need`` (call in dpp_scope).

    Follows cvxpy's composition rule: an atom with the right curvature needs each argument
    to be affine, or of its own curvature where it is increasing, or the opposite where
    decreasing. Where the atom itself lacks the curvature, the culprit is the atom, unless
    an argument is itself neither convex nor concave, in which case we look there.
    """
    if _sat(expr, need, gp):
        return []
    if not isinstance(expr, Atom):
        return [(expr, need)]
    if gp:
        convex, concave = expr.is_atom_log_log_convex(), expr.is_atom_log_log_concave()
    else:
        convex, concave = expr.is_atom_convex(), expr.is_atom_concave()
    if not {_Need.CONVEX: convex, _Need.CONCAVE: concave,
            _Need.AFFINE: convex and concave, _Need.ANY: convex or concave}[need]:
        bad = [arg for arg in expr.args if not _sat(arg, _Need.ANY, gp)]
        return [c for arg in bad for c in _descend(arg, _Need.ANY, gp)] or [(expr, need)]
    if need is _Need.ANY:
        need = _Need.CONVEX if convex else _Need.CONCAVE
    found: list[tuple[Expression, _Need]] = []
    for idx, arg in enumerate(expr.args):
        if need is _Need.AFFINE or not (expr.is_incr(idx) or expr.is_decr(idx)):
            arg_need = _Need.AFFINE
        elif expr.is_incr(idx):
            arg_need = need
        else:
            arg_need = _Need.CONCAVE if need is _Need.CONVEX else _Need.CONVEX
        if _sat(arg, arg_need, gp):
            continue
        if (not gp and arg_need is not need and arg_need is _Need.AFFINE
                and isinstance(expr, _PRODUCT_ATOMS) and _sat(arg, _Need.ANY, gp)):
            return [(expr, need)]  # the other factor's sign is unknown: blame the product
        found += _descend(arg, arg_need, gp)
    return found or [(expr, need)]


def _refine(expr: Expression, ok: Callable[[Expression], bool]) -> Expression:
    """The deepest variable-free, parameter-dependent node under ``expr`` failing ``ok``."""
    for arg in expr.args:
        if arg.parameters() and not arg.variables() and not ok(arg):
            return _refine(arg, ok)
    return expr


def _log_log_affine(expr: Expression) -> bool:
    with dpp_scope():
        return expr.is_log_log_affine()


def _names(expr: Expression) -> str:
    """The parameters of ``expr`` for a hint: the user's names, else cvxpy's (which the
    report then replaces by their places, :func:`_readable`) marked unnamed, with the
    shape."""
    notes = {p.name(): "" if given_name(p) is not None else f" (unnamed, shape {p.shape})"
             for p in expr.parameters()}
    return ", ".join(f"`{name}`{note}" for name, note in sorted(notes.items()))


def _curvature(expr: Expression, gp: bool) -> str:
    with dpp_scope():
        return (expr.log_log_curvature if gp else expr.curvature).lower().replace("_", "-")


_Verdict = tuple[Expression, Rule, str]


def _classify_dcp(node: Expression, need: _Need, where: str, objective: bool) -> _Verdict:
    """Rule and hint for a DCP culprit found by ``_descend``."""
    args = node.args
    if isinstance(node, QuadForm) and args[1].parameters():
        return node, Rule.QUAD_FORM_NOT_IN_OBJECTIVE, explain_quad_form(node, objective)
    if _sat(node, need, gp=False):  # fine once parameters are constants: parameters' fault
        if not node.variables() or (isinstance(node, DivExpression) and args[1].parameters()):
            return _classify_parameters(_refine(node, is_param_affine))
        for arg in args:
            if arg.parameters() and not arg.variables() and not is_param_affine(arg):
                return _classify_parameters(_refine(arg, is_param_affine))
        if isinstance(node, _PRODUCT_ATOMS) and sum(bool(a.parameters()) for a in args) > 1:
            hint = PRODUCT_WITH_VARIABLES_HINT.format(expr=node, params=_names(node))
            return node, Rule.PARAMETER_PRODUCT, hint
        hint = NONAFFINE_ATOM_HINT.format(expr=node, params=_names(node))
        return node, Rule.PARAMETER_IN_NONAFFINE, hint
    if isinstance(node, _PRODUCT_ATOMS):
        if sum(bool(a.variables()) for a in args) > 1:
            return node, Rule.NOT_DCP, VARIABLE_PRODUCT_HINT.format(expr=node, url=DCP_URL)
        factors = [a for a in args if a.parameters() and not a.variables()]
        others = [a for a in args if a.variables()]
        if factors and others:
            return node, Rule.NOT_DCP, SIGN_HINT.format(
                expr=node, curvature=_curvature(others[0], False), factor=factors[0],
                params=_names(factors[0]))
    hint = CURVATURE_HINT.format(expr=node, curvature=_curvature(node, False), need=need.value,
                                 where=where, rules="DCP", url=DCP_URL)
    return node, Rule.NOT_DCP, hint


def _classify_parameters(node: Expression) -> _Verdict:
    """Rule and hint for a node that is not affine in the parameters."""
    if isinstance(node, DivExpression) and node.args[1].parameters():
        den = node.args[1]
        den = den.args[0] if isinstance(den, Promote) else den  # a broadcast scalar
        return node, Rule.PARAMETER_IN_NONAFFINE, DIVISION_HINT.format(expr=node, den=den)
    if isinstance(node, _PRODUCT_ATOMS):
        return node, Rule.PARAMETER_PRODUCT, PRODUCT_HINT.format(expr=node, params=_names(node))
    hint = NONAFFINE_HINT.format(expr=node, params=_names(node))
    return node, Rule.PARAMETER_IN_NONAFFINE, hint


def _classify_dgp(node: Expression, need: _Need, where: str) -> _Verdict:
    """Rule and hint for a DGP culprit found by ``_descend``."""
    if isinstance(node, (cp.Parameter, cp.Variable)) and not node.is_pos():
        rule = Rule.GP_PARAMETER if isinstance(node, cp.Parameter) else Rule.NOT_DGP
        return node, rule, POSITIVE_HINT.format(expr=node)
    if not node.parameters() and not node.variables() and not node.is_pos():
        return node, Rule.NOT_DGP, NONPOSITIVE_CONSTANT_HINT.format(expr=node)
    if node.parameters() and (not node.variables() or _sat(node, need, gp=True)):
        node = _refine(node, _log_log_affine)
        return node, Rule.GP_PARAMETER, GP_PARAMETER_HINT.format(expr=node)
    hint = CURVATURE_HINT.format(expr=node, curvature=_curvature(node, True),
                                 need=f"log-log {need.value}", where=where, rules="DGP",
                                 url=DGP_URL)
    return node, Rule.NOT_DGP, hint


def _pieces(root: cp.Constraint | cp.Minimize | cp.Maximize,
            gp: bool) -> list[tuple[Expression, _Need, str]] | None:
    """What each argument of an objective/constraint must be; None if the type is not DGP."""
    if isinstance(root, (cp.Minimize, cp.Maximize)):
        minimize = isinstance(root, cp.Minimize)
        return [(root.args[0], _Need.CONVEX if minimize else _Need.CONCAVE,
                 f" (in a {'minimised' if minimize else 'maximised'} objective)")]
    sides = (" (left-hand side)", " (right-hand side)")
    if isinstance(root, Inequality):
        return list(zip(root.args, (_Need.CONVEX, _Need.CONCAVE), sides))
    if isinstance(root, Equality):
        return list(zip(root.args, (_Need.AFFINE, _Need.AFFINE), sides))
    if gp:
        return None
    need = {NonPos: _Need.CONVEX, NonNeg: _Need.CONCAVE}.get(type(root), _Need.AFFINE)
    return [(arg, need, "") for arg in root.args]  # cone constraints: affine arguments


def _violations(root: cp.Constraint | cp.Minimize | cp.Maximize, location: str,
                gp: bool) -> list[Violation]:
    """The explained violations of one objective or constraint that cvxpy rejects."""
    pieces = _pieces(root, gp)
    if pieces is None:
        hint = DGP_CONSTRAINT_HINT.format(expr=root)
        return [Violation(str(root), Rule.NOT_DGP, location, hint)]
    dqcp_only = not gp and not root.is_dcp() and root.is_dqcp()
    found: dict[int, Violation] = {}
    for expr, need, where in pieces:
        with dpp_scope():
            culprits = _descend(expr, need, gp)
        for node, node_need in culprits:
            if gp:
                node, rule, hint = _classify_dgp(node, node_need, where)
            else:
                node, rule, hint = _classify_dcp(node, node_need, where, location == "objective")
            if dqcp_only and rule is Rule.NOT_DCP:
                if _sat(node, _Need.ANY, gp=False):  # e.g. minimize log(x): a curvature error
                    hint += DQCP_NOTE
                else:  # a quasiconvex atom such as ceil(x) or x / y
                    rule, hint = Rule.DQCP_ONLY, DQCP_HINT.format(expr=node)
            found.setdefault(id(node), Violation(str(node), rule, location, hint))
    if not found:  # defensive: cvxpy rejects the root but no node was singled out
        rules, url = ("DGP", DGP_URL) if gp else ("DCP", DCP_URL)
        hint = UNDIAGNOSED_HINT.format(expr=root, rules=rules, url=url)
        return [Violation(str(root), Rule.NOT_DGP if gp else Rule.NOT_DCP, location, hint)]
    return list(found.values())


def check_dpp(
    problem: cp.Problem,
    parameters: Sequence[cp.Parameter] | None = None,
    variables: Sequence[cp.Variable] | None = None,
    gp: bool = False,
) -> DPPReport:
    """Check that ``problem`` is DPP (DGP-DPP if ``gp``) and the requested lists fit it.

    Args:
        problem: the problem to compile.
        parameters: the parameters whose values will be passed; None means all of them.
        variables: the requested variables or constraint dual variables
            (``con.dual_variables[0]``); None means all variables.
        gp: check the DGP (log-log) ruleset instead of DCP.

    Returns:
        A :class:`DPPReport`; ``report.ok`` is True iff the problem is DPP and nothing is
        missing or unknown. Raise ``dpplayers.errors.DPPError(report)`` to reject it.
    """
    if not isinstance(problem, cp.Problem):
        raise TypeError(f"check_dpp expects a cvxpy Problem, got {type(problem).__name__}.")
    context = "dgp" if gp else "dcp"
    lifted = problem if gp else lift_parametric_quad_forms(problem)[0]
    violations = _mixed_integer(problem)
    if not lifted.is_dpp(context):
        n = len(problem.constraints)  # lifted equalities come from the objective: list first
        roots = [(root, "objective") for root in [lifted.objective, *lifted.constraints[n:]]]
        for i, con in enumerate(problem.constraints):
            text = str(con)
            text = text if len(text) <= _LOCATION_WIDTH else text[: _LOCATION_WIDTH - 3] + "..."
            roots.append((con, f"constraint {i}: {text}"))
        for root, location in roots:
            if not root.is_dpp(context):
                violations += _violations(root, location, gp)

    problem_params = problem.parameters()
    given = problem_params if parameters is None else list(parameters)
    given_ids = {id(p) for p in given}
    known_ids = {id(p) for p in problem_params}
    missing = tuple(_name(p, i, "problem.parameters()") for i, p in enumerate(problem_params)
                    if id(p) not in given_ids)
    unknown = tuple(_name(p, i) for i, p in enumerate(given) if id(p) not in known_ids)
    known_vars = {id(v) for v in problem.variables()}
    known_vars |= {id(d) for con in problem.constraints for d in con.dual_variables}
    unknown_vars = tuple(_name(v, i) for i, v in enumerate(variables or ())
                         if id(v) not in known_vars)
    ok = not violations and not missing and not unknown and not unknown_vars
    labels = _generated_names(problem, given, variables)
    violations = [Violation(_readable(v.expression, labels), v.rule,
                            _readable(v.location, labels), _readable(v.hint, labels))
                  for v in violations]
    return DPPReport(ok, tuple(violations), missing, unknown, unknown_vars, gp)


def _generated_names(problem: cp.Problem, parameters: Sequence[object],
                     variables: Sequence[object] | None) -> dict[str, str]:
    """cvxpy's generated name of each unnamed leaf (what ``str`` of an expression shows) ↦
    its place in the lists the user passed, or among the problem's variables."""
    labels: dict[str, str] = {}
    places = [("problem.variables()", problem.variables()), ("variables", variables or ()),
              ("parameters", parameters)]
    for within, leaves in places:  # later lists win: the user's own over the problem's
        for k, leaf in enumerate(leaves):
            if isinstance(leaf, (cp.Parameter, cp.Variable)) and given_name(leaf) is None:
                labels[leaf.name()] = f"{within}[{k}]"
    return labels


def _readable(text: str, labels: dict[str, str]) -> str:
    """``text`` with each generated leaf name replaced by its label (whole words only)."""
    if not labels:
        return text
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, labels)) + r")\b")
    return pattern.sub(lambda m: labels[m.group(1)], text)


def _name(obj: object, position: int, within: str = "") -> str:
    """A leaf's name for the report (the user's, else its position in the list passed, or
    in ``within``, and its shape), or the repr of anything else passed by mistake."""
    if not isinstance(obj, (cp.Parameter, cp.Variable)):
        return repr(obj)
    if given_name(obj) is not None or not within:
        return leaf_name(obj, position)
    return f"{within}[{position}] (shape {tuple(obj.shape)})"


def _mixed_integer(problem: cp.Problem) -> list[Violation]:
    """One violation per integer or boolean variable: no layer can differentiate them."""
    found = []
    for i, var in enumerate(problem.variables()):
        attr = next((a for a in ("integer", "boolean") if _declared(var.attributes.get(a))), None)
        if attr is not None:
            name = (f"variable {quoted_name(var)}" if given_name(var) is not None
                    else f"variable problem.variables()[{i}] (shape {tuple(var.shape)})")
            hint = MIXED_INTEGER_HINT.format(name=name, attr=attr)
            found.append(Violation(str(var), Rule.MIXED_INTEGER, name, hint))
    return found


def _declared(attribute: object) -> bool:
    """Whether a leaf attribute is set (cvxpy stores True or a list of indices)."""
    return attribute is not None and attribute is not False and (
        attribute is True or len(attribute) > 0)
