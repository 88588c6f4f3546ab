"""Exception types raised by dpplayers.

Every error a user can trigger is one of these, so code can catch dpplayers' failures
without catching unrelated ones. All of them are ``ValueError`` subclasses except
``SolverError``, which also subclasses ``diffcp.SolverError`` when diffcp is installed so
that code written for cvxpylayers keeps catching it.
"""

from __future__ import annotations

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


class InaccurateSolutionWarning(RuntimeWarning):
    """A batch element stopped short of its tolerances (iteration or time limit, reduced
    accuracy): its point is returned, as CVXPY and cvxpylayers do. ``inaccurate="fail"``
    on ``solve`` or the layers treats it as a failure instead."""
