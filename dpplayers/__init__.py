"""dpplayers: exact, fast, differentiable convex optimisation layers compiled from CVXPY.

    prog = dpplayers.compile(problem, parameters=[A, b], variables=[x])
    sol = prog.solve(A_val, b_val)          # NumPy in/out, optional leading batch axis
    sol.values, sol.vjp(dx), sol.jvp(dA, db), sol.jacobian()

Framework layers live in ``dpplayers.torch`` and ``dpplayers.jax``.
"""

from .compiler import CompiledProblem as CompiledProblem
from .compiler import compile as compile
from .dpp import DPPReport as DPPReport
from .dpp import Violation as Violation
from .dpp import check_dpp as check_dpp
from .errors import DerivativeError as DerivativeError
from .errors import DPPError as DPPError
from .errors import InaccurateSolutionWarning as InaccurateSolutionWarning
from .errors import ParameterError as ParameterError
from .errors import SolverError as SolverError
from .errors import VariableError as VariableError
from .solution import Solution as Solution
from .solvers import Status as Status
from . import sensitivity as sensitivity  # noqa: E402  (after compiler: it builds on it)
from .sensitivity import influence as influence

__version__ = "0.1.0"

__all__ = [
    "CompiledProblem", "DPPError", "DPPReport", "DerivativeError", "InaccurateSolutionWarning",
    "ParameterError", "Solution",
    "SolverError", "Status", "VariableError", "Violation", "check_dpp", "compile", "influence",
    "sensitivity",
]
