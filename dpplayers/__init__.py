"""dpplayers: exact, fast, differentiable convex optimisation layers compiled from CVXPY.

    prog = dpplayers.compile(problem, parameters=[A, b], variables=[x])
    sol = prog.solve(A_val, b_val)          # NumPy in/out, optional leading batch axis
    sol.values, sol.vjp(dx), sol.jvp(dA, db), sol.jacobian()

Framework layers live in ``dpplayers.torch`` and ``dpplayers.jax``.
"""

from ._compile.dpp import DPPReport as DPPReport
from ._compile.dpp import Violation as Violation
from ._compile.dpp import check_dpp as check_dpp
from ._program import CompiledProblem as CompiledProblem
from ._program import compile as compile
from ._solution import Solution as Solution
from ._solve.backends import Status as Status
from ._version import __version__ as __version__
from .errors import DegenerateDerivativeWarning as DegenerateDerivativeWarning
from .errors import DerivativeError as DerivativeError
from .errors import DPPError as DPPError
from .errors import InaccurateSolutionWarning as InaccurateSolutionWarning
from .errors import ParameterError as ParameterError
from .errors import SolverError as SolverError
from .errors import VariableError as VariableError
from .sensitivity import influence as influence

__all__ = [
    "CompiledProblem", "DPPError", "DPPReport", "DegenerateDerivativeWarning", "DerivativeError",
    "InaccurateSolutionWarning",
    "ParameterError", "Solution",
    "SolverError", "Status", "VariableError", "Violation", "check_dpp", "compile", "influence",
    "sensitivity",
]
