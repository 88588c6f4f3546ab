"""Projections onto convex cones and the derivatives of those projections.

Every cone class acts on a stack ``x`` of shape ``(k, d)``: k cones of one kind and one size,
handled with array operations (no Python loop over cones). `ProductCone` walks the offsets of a
product-cone vector once, groups its blocks by kind (and by size for second-order and PSD
cones), and then projects or differentiates each group in one call.

Conventions, shared with SCS, Clarabel and cvxpy and used by the whole package:

* `CONE_ORDER`: blocks appear in a product-cone vector as zero, nonnegative, second-order,
  PSD, exponential, dual exponential, power (SCS's order).
* Second-order cone: ``(t, x)`` with ``||x|| <= t``.
* PSD cone (`PSD_TRIANGLE_KIND`): a symmetric n x n matrix is stored as its lower triangle,
  column by column, off-diagonal entries scaled by sqrt(2), so that the dot product of two
  vectors equals the trace inner product of the matrices (`svec`, `smat`). Clarabel stores the
  upper triangle instead; `psd_svec_permutation` converts.
* Exponential cone (`EXP_CONE_ORDER`): closure of {(x, y, z): y > 0, y exp(x/y) <= z}; dual:
  {(u, v, w): u < 0, -u exp(v/u) <= e w} ∪ {(0, v, w): v, w >= 0}.
* Power cone, alpha in (0, 1): {(x, y, z): x^alpha y^(1-alpha) >= |z|, x, y >= 0}; dual:
  {(u, v, w): (u/alpha)^alpha (v/(1-alpha))^(1-alpha) >= |w|, u, v >= 0}.
* Duals are projected with Moreau's decomposition, Pi_K*(v) = v + Pi_K(-v), so their
  derivative is I - DPi_K(-v).

Where a projection is not differentiable (on the boundary between two regions) the derivative
returned is a one-sided one: the identity on the boundary of K (1 at a zero entry of the
nonnegative cone, zero eigenvalues count as nonnegative), zero on the boundary of the polar cone
-K*, and for the power cone at z = 0 the limit as z -> 0. Each is an element of the generalized
Jacobian, finite and symmetric, so `ProjectionDerivative.T` is the operator itself.
"""

from ._base import AbstractCone as AbstractCone
from ._closed_form import FreeCone as FreeCone
from ._closed_form import NonnegativeCone as NonnegativeCone
from ._closed_form import PSDCone as PSDCone
from ._closed_form import SecondOrderCone as SecondOrderCone
from ._closed_form import ZeroCone as ZeroCone
from ._exponential import DualExponentialCone as DualExponentialCone
from ._exponential import ExponentialCone as ExponentialCone
from ._layout import CONE_ORDER as CONE_ORDER
from ._layout import EXP_CONE_ORDER as EXP_CONE_ORDER
from ._layout import PSD_TRIANGLE_KIND as PSD_TRIANGLE_KIND
from ._layout import Array as Array
from ._layout import ConeDims as ConeDims
from ._layout import Index as Index
from ._layout import Mask as Mask
from ._layout import psd_svec_permutation as psd_svec_permutation
from ._layout import scs_to_clarabel_permutation as scs_to_clarabel_permutation
from ._layout import smat as smat
from ._layout import svec as svec
from ._operators import AbstractBlockOperator as AbstractBlockOperator
from ._operators import BatchedProjectionDerivative as BatchedProjectionDerivative
from ._operators import DenseBlocks as DenseBlocks
from ._operators import DiagonalBlocks as DiagonalBlocks
from ._operators import ProjectionDerivative as ProjectionDerivative
from ._operators import PSDBlocks as PSDBlocks
from ._operators import SOCBlocks as SOCBlocks
from ._power import DualPowerCone as DualPowerCone
from ._power import PowerCone as PowerCone
from ._product import Groups as Groups
from ._product import ProductCone as ProductCone
