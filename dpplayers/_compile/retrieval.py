"""The retrieval R: from the solver's (x, y) to the user's variables and dual variables.

R is linear (a sparse matrix on z = [x; y]). Rather than re-deriving how each of cvxpy's
reductions maps solutions back (symmetric variables stored as triangles, PSD duals,
SOC and exponential-cone duals split per argument, maximisation signs, ...), R is read
off cvxpy's own inversion, step by step as ``Chain.invert`` runs it, with one step replaced:
``CvxAttr2Constr`` projects each recovered leaf onto its attributes (``Leaf.project``:
``nonpos``, ``bounds``... clip, which is not linear), so that step is redone here without
the projection (the solver's x already satisfies the attribute constraints it was given).
Every step left is linear, so three probe solutions pin R down. Probe 1 (all ones) gives
each output's coefficient, probe 2 (distinct values) gives its source entry, and a random
probe of mixed signs and its negative verify the result; an output that depends on more than
one entry fails the check and is then probed column by column (exact, slower). An R that
still fails the check is refused by name, never returned.

With ``gp=True`` cvxpy returns exp(R z) for primal variables; those outputs are marked
``exp`` and probed through a log, so R stays the log-space map.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from cvxpy.reductions.cvx_attr2constr import CvxAttr2Constr, recover_value_for_leaf
from cvxpy.reductions.solution import Solution

from ..errors import VariableError, given_name, quoted_name
from .affine_maps import Gather, LinearMap, linear_map

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class OutputSpec:
    """One requested quantity: a primal variable or a constraint's dual variable."""

    name: str
    shape: tuple[int, ...]
    offset: int  # first row in R
    dual: bool
    exp: bool  # gp=True primal variable: the user's value is exp of the row values

    @functools.cached_property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Request:
    """What to read from cvxpy's inverted solution for one requested variable."""

    variable: cp.Variable
    constraint: cp.constraints.constraint.Constraint | None  # None for a primal variable
    index: int  # position among constraint.dual_variables


def resolve_requests(problem: cp.Problem, variables: Sequence[cp.Variable]) -> tuple[Request, ...]:
    """Match each requested variable to a primal variable or a constraint's dual variable."""
    primal = {v.id for v in problem.variables()}
    duals = {
        dv.id: (con, k) for con in problem.constraints for k, dv in enumerate(con.dual_variables)
    }
    out = []
    for v in variables:
        if not isinstance(v, cp.Variable):
            raise VariableError(f"variables must be cvxpy Variables, got {type(v).__name__}: {v}.")
        if v.id in primal:
            _refuse_complex_variable(v)
            out.append(Request(v, None, 0))
        elif v.id in duals:
            out.append(Request(v, *duals[v.id]))
            _refuse_complex_dual(out[-1])
        else:
            raise VariableError(
                f"variable {quoted_name(v, len(out))} (shape {v.shape}) is neither a variable of "
                "the problem nor a dual variable (con.dual_variables[0]) of one of its "
                "constraints: variables must be a subset of problem.variables or a constraint "
                "dual variable."
            )
    return tuple(out)


def _refuse_complex_variable(v: cp.Variable) -> None:
    """Outputs are real arrays: a complex variable's imaginary part would be dropped."""
    if v.is_complex():
        kind = "hermitian" if v.attributes.get("hermitian") else "complex"
        raise VariableError(
            f"variable '{v.name()}' (shape {v.shape}) is {kind}: dpplayers returns real arrays "
            "and does not support complex outputs; write it as two real variables, "
            f"{v.name()}_re + 1j * {v.name()}_im, and request those."
        )


def _refuse_complex_dual(r: Request) -> None:
    """A constraint between complex expressions has a complex dual: refuse it by name."""
    if any(arg.is_complex() for arg in r.constraint.args):
        raise VariableError(
            f"the {_dual_name(r)} is complex (the constraint is between complex expressions): "
            "dpplayers returns real arrays and does not support complex outputs; state the "
            "constraint on cp.real(...) and cp.imag(...) separately and request those duals."
        )


@dataclass(frozen=True)
class Retrieval:
    """R as a sparse matrix on z = [x; y], how its rows split into outputs, and R and Rᵀ as
    :func:`~.affine_maps.linear_map` strategies (a gather where every row of R picks one
    entry of z, the usual variable), picked when built (:meth:`of`)."""

    matrix: sp.csr_array  # (K, n + m)
    outputs: tuple[OutputSpec, ...]
    forward: LinearMap  # z ↦ R z
    backward: LinearMap  # g ↦ Rᵀ g

    @classmethod
    def of(cls, matrix: sp.csr_array, outputs: tuple[OutputSpec, ...]) -> Retrieval:
        matrix = sp.csr_array(matrix)
        return cls(matrix, outputs, linear_map(matrix), linear_map(matrix.T))

    def apply(self, x: FloatArray, y: FloatArray, batched: bool = True) -> tuple[FloatArray, ...]:
        """z = [x; y] (n+m, B) → one array per output, shaped (B, *shape), or with
        ``batched=False`` (B = 1) shaped as the output itself."""
        if isinstance(self.forward, Gather) and self.last_column < x.shape[0]:
            flat = self.forward(x)  # primal variables only: no need to build z
        else:
            flat = self.forward(np.concatenate((x, y)))
        out = []
        for spec in self.outputs:
            block = flat[spec.offset : spec.offset + spec.size]
            if spec.exp:
                block = np.exp(block)
            out.append(_unflatten(block, spec.shape) if batched
                       else block[:, 0].reshape(spec.shape, order="F"))
        return tuple(out)

    @functools.cached_property
    def last_column(self) -> int:
        """The last entry of z = [x; y] that R reads (−1 when none): below n, no output
        reads y."""
        return int(self.matrix.indices.max(initial=-1))

    def transpose(self, cotangents: Sequence[FloatArray | None], values: Sequence[FloatArray],
                  batch: int) -> FloatArray:
        """Rᵀ g: cotangents per output (B, *shape), None for zero, → a cotangent on
        z = [x; y] (n+m, B), the exp chain rule applied. Where R picks distinct entries of
        z with coefficient 1 (the usual variables), each output's block is written straight
        to its entries (no (K, B) array to gather from: a third of the cost at batch 1)."""
        scatter = self._scatter
        g = np.zeros((self.matrix.shape[1] if scatter is not None else self.matrix.shape[0],
                      batch))
        for spec, ct, val in zip(self.outputs, cotangents, values):
            if ct is None:
                continue
            rows = slice(spec.offset, spec.offset + spec.size)
            block = _flatten(ct, spec.size)
            if spec.exp:
                block = block * _flatten(val, spec.size)
            g[scatter[rows] if scatter is not None else rows] = block
        return g if scatter is not None else self.backward(g)

    @functools.cached_property
    def _scatter(self) -> npt.NDArray[np.intp] | None:
        """The entries of z that R's rows pick, where each row picks a distinct one with
        coefficient 1; else None."""
        forward = self.forward
        if not isinstance(forward, Gather) or forward.scale is not None:
            return None
        return forward.source if np.unique(forward.source).size == forward.source.size else None

    def unflatten_tangent(self, dflat: FloatArray, values: Sequence[FloatArray]) -> tuple[FloatArray, ...]:
        """Tangent on R's rows (K, B) → one tangent per output (B, *shape)."""
        out = []
        for spec, val in zip(self.outputs, values):
            block = _unflatten(dflat[spec.offset : spec.offset + spec.size], spec.shape)
            out.append(block * val if spec.exp else block)
        return tuple(out)


def _dual_name(r: Request) -> str:
    """A readable name for a dual variable: which constraint it belongs to."""
    text = str(r.constraint)
    text = text if len(text) <= 40 else text[:37] + "..."
    suffix = f"[{r.index}]" if len(r.constraint.dual_variables) > 1 else ""
    return f"dual{suffix} of ({text})"


def _flatten(value: FloatArray, size: int) -> FloatArray:
    """(B, *shape) → (size, B), each element's entries column-major: a column-major
    reshape keeps B the fastest axis, so (B, size) in that order is already it."""
    return value.reshape(value.shape[0], size, order="F").T


def _unflatten(block: FloatArray, shape: tuple[int, ...]) -> FloatArray:
    """(size, B) column-major entries → (B, *shape)."""
    return block.T.reshape((block.shape[1], *shape), order="F")  # the inverse of _flatten


def build_retrieval(chain: cp.reductions.Chain, inverse_data: list, n: int, m: int,
                    requests: Sequence[Request], gp: bool) -> Retrieval:
    """Read R off cvxpy's linear inversion by probing (see the module docstring).

    Raises:
        VariableError: an output's map back from the solver is not linear (R would not be
            exact); the message names the output.
    """
    specs, offset = [], 0
    for position, r in enumerate(requests):
        shape = tuple(int(d) for d in r.variable.shape)
        name = (given_name(r.variable) or f"#{position}") if r.constraint is None else _dual_name(r)
        specs.append(OutputSpec(name, shape, offset, r.constraint is not None,
                                gp and r.constraint is None))
        offset += specs[-1].size
    specs = tuple(specs)
    total = n + m

    def probe(z: FloatArray) -> FloatArray:
        return _read_outputs(chain, inverse_data, z[:n], z[n:], requests, specs, offset)

    scale = probe(np.ones(total))
    ids = np.arange(1, total + 1, dtype=np.float64) / total
    tagged = probe(ids)
    rows = np.flatnonzero(np.abs(scale) > 0)
    src = np.rint(tagged[rows] / scale[rows] * total).astype(np.int64) - 1
    ok = (src >= 0) & (src < total)
    rows, src = rows[ok], src[ok]
    R = sp.csr_array((scale[rows], (rows, src)), shape=(offset, total))
    check = _check_probe(total)
    bad = _mismatched_rows(R, probe, check)
    if bad.size:
        R = _probe_columns(probe, total, offset, R, bad)
        _refuse_nonlinear(_mismatched_rows(R, probe, check), specs)
    return Retrieval.of(R.tocsr(), specs)


def _check_probe(total: int) -> FloatArray:
    """A fixed random z of both signs and varied sizes: a map that clips, rounds or takes
    absolute values (not linear) disagrees with R somewhere on it, where the all-positive
    probes that built R could not tell (``nonpos`` maps every one of them to 0)."""
    rng = np.random.default_rng(0)
    return rng.uniform(0.5, 2.0, total) * rng.choice((-1.0, 1.0), total)


def _mismatched_rows(R: sp.csr_array, probe, check: FloatArray) -> npt.NDArray[np.intp]:
    """Rows of R that disagree with the probed map at ``check`` or at ``-check``, beyond
    rounding relative to the size of each row's terms (a sum may cancel to near zero)."""
    bad = np.zeros(R.shape[0], dtype=bool)
    scale = abs(R) @ np.abs(check)
    for z in (check, -check):
        bad |= np.abs(R @ z - probe(z)) > 1e-9 * scale + 1e-12
    return np.flatnonzero(bad)


def _refuse_nonlinear(bad_rows: npt.NDArray[np.intp], specs: Sequence[OutputSpec]) -> None:
    """Raise naming each output whose rows of R could not be verified exact."""
    if not bad_rows.size:
        return
    names = [s.name for s in specs
             if np.any((bad_rows >= s.offset) & (bad_rows < s.offset + s.size))]
    raise VariableError(
        f"cannot read {', '.join(repr(n) for n in names)} back from the solver exactly: "
        "cvxpy's map from the solver's solution to it is not linear (an attribute or "
        "construct dpplayers does not support in an output); request another variable or "
        "declare it without the attribute and add the constraint explicitly."
    )


def _probe_columns(probe, total: int, k: int, R: sp.csr_array, bad_rows: FloatArray) -> sp.csr_array:
    """Exact fallback: R's bad rows from one probe per column of z."""
    base = probe(np.zeros(total))
    cols = [probe(np.eye(1, total, j)[0]) - base for j in range(total)]
    dense = np.stack(cols, axis=1)[bad_rows]
    keep = np.setdiff1d(np.arange(k), bad_rows)
    lil = sp.lil_array(R.shape)
    lil[keep] = R.tocsr()[keep]
    lil[bad_rows] = dense
    return sp.csr_array(lil)


def _read_outputs(chain, inverse_data, x, y, requests, specs, size) -> FloatArray:
    """Invert one probe solution with cvxpy and flatten the requested quantities."""
    solution = {
        "x": x, "y": y, "s": np.zeros_like(y),
        "info": {"status_val": 1, "solve_time": 0.0, "setup_time": 0.0, "iter": 0, "pobj": 0.0},
    }
    inverted = _invert_linearly(chain, solution, inverse_data)
    out = np.zeros(size)
    for r, spec in zip(requests, specs):
        if r.constraint is None:
            value = inverted.primal_vars.get(r.variable.id)
            if value is None:  # variable eliminated by cvxpy (does not affect the problem)
                value = np.zeros(spec.shape)
            value = np.log(value) if spec.exp else value
        else:
            value = _dual_piece(r, inverted.dual_vars.get(r.constraint.id))
        out[spec.offset : spec.offset + spec.size] = np.reshape(value, -1, order="F")
    return out


def _invert_linearly(chain: cp.reductions.Chain, solution, inverse_data: list) -> Solution:
    """``chain.invert`` with CvxAttr2Constr's step done without projecting onto attributes
    (:func:`_recover_attribute_leaves`); every other step is cvxpy's own."""
    for reduction, inverse in reversed(list(zip(chain.reductions, inverse_data))):
        if isinstance(reduction, CvxAttr2Constr):
            solution = _recover_attribute_leaves(solution, inverse)
        else:
            solution = reduction.invert(solution, inverse)
    return solution


def _recover_attribute_leaves(solution: Solution, inverse) -> Solution:
    """CvxAttr2Constr's inversion, linear: each variable's full value from its reduced one
    (triangle → symmetric, diagonal → matrix, nonzeros → sparse pattern; dense always) but
    never projected onto ``nonpos``/``bounds``/... as ``Leaf.project`` would. Constraint
    duals are renamed back to the user's constraints."""
    if not inverse:  # the reduction had nothing to do
        return solution
    new_by_id, old_by_id, constraint_ids = inverse
    primal = {}
    for vid, var in old_by_id.items():
        reduced = solution.primal_vars.get(new_by_id[vid].id)
        if reduced is None:
            continue
        value = recover_value_for_leaf(var, reduced, project=False)
        primal[vid] = value.toarray() if sp.issparse(value) else value
    duals = None
    if solution.dual_vars is not None:
        duals = {orig: solution.dual_vars[new] for orig, new in constraint_ids.items()
                 if new in solution.dual_vars}
    return Solution(solution.status, solution.opt_val, primal, duals, solution.attr)


def _dual_piece(r: Request, raw) -> FloatArray:
    """The part of a constraint's dual that belongs to ``dual_variables[r.index]``.

    cvxpy splits multi-argument duals (SOC, exponential and power cones) in the
    constraint's ``save_dual_value``; a copy of the constraint receives the value so the
    user's constraint object is never written to.
    """
    con = r.constraint
    if raw is None:
        return np.zeros(r.variable.shape)
    if len(con.dual_variables) == 1:
        return np.reshape(raw, r.variable.shape, order="F") if np.size(raw) else raw
    twin = con.copy()
    twin.save_dual_value(raw)
    return np.asarray(twin.dual_variables[r.index].value, dtype=np.float64)
