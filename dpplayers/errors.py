"""Exception types raised by dpplayers, and how messages name the user's leaves.

Every error a user can trigger is one of these, so code can catch dpplayers' failures
without catching unrelated ones. All of them are ``ValueError`` subclasses except
``SolverError``, which also subclasses ``diffcp.SolverError`` when diffcp is installed so
that code written for cvxpylayers keeps catching it.

Messages name a parameter or variable by the name the user gave it, else by its position
in the list the user passed and its shape: cvxpy's generated names (``param61``) mean
nothing to the user.
"""

from __future__ import annotations

import cvxpy as cp

try:  # diffcp is a test/reference dependency, not a runtime one.
    from diffcp import SolverError as _DiffcpSolverError
except ImportError:  # pragma: no cover - exercised only without diffcp

    class _DiffcpSolverError(Exception):  # type: ignore[no-redef]
        """Stand-in base when diffcp is not installed."""


class DPPError(ValueError):
    """The problem is not DPP (or not DGP with ``gp=True``); the message is the report."""

    def __init__(self, report: object) -> None:
        super().__init__(str(report))
        self.report = report


class ParameterError(ValueError):
    """A parameter value has the wrong count, shape, batch size, or violates its attributes."""


class VariableError(ValueError):
    """A requested variable or dual variable does not belong to the problem."""


class SolverError(_DiffcpSolverError):
    """A batch element could not be solved (infeasible, unbounded, iteration limit...)."""


class DerivativeError(ValueError):
    """A derivative was requested that this solution cannot provide."""


def given_name(leaf: object) -> str | None:
    """The name the user gave a cvxpy Parameter or Variable; None for cvxpy's generated
    one (``param61``, ``var12``), which means nothing to the user."""
    name = leaf.name()
    prefix = cp.settings.PARAM_PREFIX if isinstance(leaf, cp.Parameter) else cp.settings.VAR_PREFIX
    return None if name == f"{prefix}{leaf.id}" else name


def leaf_name(leaf: object, position: int | None = None) -> str:
    """A leaf as messages name it: the user's name, else its position in the list the user
    passed (from 0, as the call's arguments) and its shape, else cvxpy's generated name
    with its shape (the name ``str`` of an expression shows)."""
    name = given_name(leaf)
    if name is not None:
        return name
    if position is not None:
        return f"#{position} (shape {tuple(leaf.shape)})"
    return f"{leaf.name()} (unnamed, shape {tuple(leaf.shape)})"


def quoted_name(leaf: object, position: int | None = None) -> str:
    """:func:`leaf_name` with a user's name in quotes: "'x'", or "#0 (shape (3,))"."""
    name = given_name(leaf)
    return f"'{name}'" if name is not None else leaf_name(leaf, position)


class InaccurateSolutionWarning(RuntimeWarning):
    """A batch element stopped short of its tolerances (iteration or time limit, reduced
    accuracy): its point is returned, as CVXPY and cvxpylayers do. ``inaccurate="fail"``
    on ``solve`` or the layers treats it as a failure instead."""


class DegenerateDerivativeWarning(RuntimeWarning):
    """A batch element's derivative met a singular or near-singular J: the canonical
    solution is not unique there (or the problem is badly conditioned), and the answer is
    J's minimum-norm least-squares solution. ``Solution.degenerate`` flags the elements."""
