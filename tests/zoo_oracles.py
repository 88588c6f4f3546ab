"""Oracles for the zoo: run one generated case through dpplayers and judge it independently.

Every case is compiled with its parameter values unset (as a layer is built), on SCS and on
Clarabel, and solved at two parameter points (two calls, or one batch of two). Then:

* values (variables and duals) against CVXPY's own solve of the same problem (Clarabel at
  tolerance 1e-10, SCS at 1e-10 where Clarabel does not report optimal); for cases whose
  optimum is not unique, the objective at dpplayers' point instead;
* ``jvp`` against central finite differences of refined solves through dpplayers on both
  solvers; the two must agree before a mismatch counts (else a third difference through
  CVXPY's own re-solves decides);
* the dot-product identity ⟨w, jvp u⟩ = ⟨vjp w, u⟩, and ``jacobian()`` contracted with u
  against ``jvp`` u.

An exception raised inside dpplayers is a *refusal* when it is one of dpplayers' error types
and a *crash* otherwise; a number off beyond tolerance is *wrong* unless the solution says it
is ``degenerate``.
"""

from __future__ import annotations

import traceback
import warnings
import zlib
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
from zoo_cases import Built, ZooCase

import dpplayers
from dpplayers._solve.qp_route import MIN_BATCH as QP_ROUTE_MIN_BATCH
from dpplayers.errors import DerivativeError, DPPError, ParameterError, SolverError, VariableError

DPP_ERRORS = (DPPError, ParameterError, VariableError, SolverError, DerivativeError)
SOLVERS = ("CLARABEL", "SCS")
#: Refined solves: values and finite differences need solutions far beyond the FD step.
SOLVE_ARGS = {"CLARABEL": {"eps": 1e-10, "refine": 3},
              "SCS": {"eps": 1e-9, "max_iters": 100_000, "refine": 3}}  # 1e-10: max_iters
REFERENCE_ARGS = {cp.CLARABEL: {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10,
                                "max_iter": 400},
                  cp.SCS: {"eps": 1e-10, "max_iters": 200_000}}
#: Elements of a "many" batch (the thread pool), and of a "route" batch: enough for the dense
#: QP route (dpplayers._solve.qp_route), for the families built for it.
MANY = 5
ROUTE = QP_ROUTE_MIN_BATCH
VALUE_TOL = 1e-4  # relative to max(1, |reference|∞): wrong classes are off by far more
#: batch element 0 vs the same point solved alone (a degenerate SDP's solves differ by 2e-6)
CONSISTENCY_TOL = 1e-5
FD_STEP = 1e-5
FD_TOL = 1e-3  # jvp vs central differences, relative to max(1, |fd|∞)
DOT_TOL = 1e-7  # ⟨w, Ju⟩ vs ⟨Jᵀw, u⟩ and jacobian vs jvp, relative (factorised modes)
ITERATIVE_TOL = 1e-5  # the same for lsqr / lsmr (seen: 5e-8 relative on a 60-variable LP)

#: Outcome kinds from worst to best; a case's outcome is its worst finding.
KINDS = ("wrong_value", "wrong_derivative", "crash", "refused", "inconclusive", "degenerate",
         "correct")
PASSING = ("refused", "inconclusive", "degenerate", "correct")


@dataclass(frozen=True)
class Outcome:
    case_id: str
    family: str
    group: str
    batch: str
    kind: str
    detail: str
    seconds: float
    others: tuple[str, ...] = ()  # the case's other findings (e.g. the other solver's)

    @property
    def passed(self) -> bool:
        return self.kind in PASSING


class Finding(Exception):
    """One judgement about a case (kind in KINDS) with a one-line detail."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


def guarded(stage: str, fn, *args, **kwargs):
    """Call into dpplayers; turn its exceptions into refusals or crashes named by stage."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)
    except DPP_ERRORS as exc:
        text = " / ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise Finding("refused", f"{stage}: {type(exc).__name__}: {text[:240]}") from exc
    except Exception as exc:  # noqa: BLE001 - anything else is a crash, by definition
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}"
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise Finding("crash", f"{stage}: {type(exc).__name__}: {msg} [{where}]") from exc


# ------------------------------------------------------------------ parameter points and calls


@dataclass(frozen=True)
class Call:
    """One solve call: the inputs as passed, and each element's parameter values."""

    inputs: list
    elements: list  # per element: one value per parameter
    batched: bool


def make_calls(case: ZooCase, built: Built, points: list) -> list[Call]:
    """Parameter points as one call each (none / one) or as one batch (mixed: 2, many: 5)."""
    if case.batch == "none":
        return [Call(list(pt), [list(pt)], False) for pt in points]
    if case.batch == "one":
        return [Call([v[None] for v in pt], [list(pt)], True) for pt in points]
    first = points[0]
    count = len(built.parameters)
    # free parameters batched (but leave one broadcast where there are several parameters)
    batched = list(built.free)[: max(1, count - 1)] if built.free else list(range(count))
    elements = [[pt[i] if i in batched else first[i] for i in range(count)] for pt in points]
    inputs = [np.stack([e[i] for e in elements]) if i in batched else first[i]
              for i in range(count)]
    return [Call(inputs, elements, True)]


def direction(param: cp.Parameter, rng: np.random.Generator) -> np.ndarray:
    """A random tangent keeping the parameter's declared structure."""
    d = rng.standard_normal(param.shape)
    if param.is_complex():
        d = d + 1j * rng.standard_normal(param.shape)
    attrs = param.attributes
    if attrs.get("symmetric") or attrs.get("PSD") or attrs.get("NSD") or attrs.get("hermitian"):
        d = (d + np.conj(d.T)) / 2
    if attrs.get("diag"):
        d = np.diag(np.diag(d))
    return d


def tangents_like(call: Call, built: Built, rng: np.random.Generator) -> list:
    out = []
    for i, p in enumerate(built.parameters):
        is_batched = call.batched and np.ndim(call.inputs[i]) == len(p.shape) + 1
        nb = len(call.elements)
        out.append(np.stack([direction(p, rng) for _ in range(nb)]) if is_batched
                   else direction(p, rng))
    return out


# ------------------------------------------------------------------ CVXPY reference


def shaped(v, shape: tuple):
    """A reference value as a dense array of the output's declared shape (CVXPY returns
    sparse values for diag variables and (n, 1) for an SOC's vector dual)."""
    if v is None:
        return None
    v = np.asarray(v.toarray() if sp.issparse(v) else v)
    return v.reshape(shape) if v.size == int(np.prod(shape)) else v


def reference(built: Built, values: list, gp: bool) -> tuple[list, float] | None:
    """CVXPY's own answer (outputs, objective) at one parameter point; None if no solver
    reports optimal."""
    for p, v in zip(built.parameters, values):
        p.value = v
    for solver, args in REFERENCE_ARGS.items():
        if built.value_scale < 1:  # the solvers' tolerances are absolute: tighten them
            args = {k: (1e-12 if k.startswith(("tol", "eps")) else v) for k, v in args.items()}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                built.problem.solve(solver=solver, gp=gp, **args)
        except (cp.error.SolverError, ValueError):
            continue
        if built.problem.status == cp.OPTIMAL:
            return [shaped(o.value, o.shape) for o in built.outputs], float(built.problem.value)
    return None


def clear_parameters(built: Built) -> None:
    for p in built.parameters:
        p.value = None


def objective_at(built: Built, params: list, outs: list) -> float | None:
    """The problem's objective at dpplayers' point (None if some variable was not returned)."""
    variables = {v.id: v for v in built.problem.variables()}
    given = {o.id: val for o, val in zip(built.outputs, outs) if o.id in variables}
    if set(given) != set(variables):
        return None
    for p, v in zip(built.parameters, params):
        p.value = v
    for vid, val in given.items():
        var = variables[vid]
        var.value = var.project(np.real_if_close(val) if not var.is_complex() else val)
    return float(built.problem.objective.value)


def close(got, want, tol: float, floor: float = 1.0) -> bool:
    """|got − want|∞ ≤ tol · max(floor, |want|∞), shapes equal, got finite."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape or not np.all(np.isfinite(got)):
        return False
    scale = max(floor, float(np.max(np.abs(want), initial=0.0)))
    return float(np.max(np.abs(got - want), initial=0.0)) <= tol * scale


def element(values, b: int, batched: bool):
    return [np.asarray(v)[b] if batched else np.asarray(v) for v in values]


# ------------------------------------------------------------------ derivatives


def inner(a: list, b: list) -> float:
    return float(sum(np.real(np.sum(np.conj(x) * y)) for x, y in zip(a, b) if x is not None))


def finite_difference(prog, call: Call, us: list, solver: str) -> list:
    args = SOLVE_ARGS[solver]
    plus = [v + FD_STEP * u for v, u in zip(call.inputs, us)]
    minus = [v - FD_STEP * u for v, u in zip(call.inputs, us)]
    hi = guarded(f"fd solve[{solver}]", prog.solve, *plus, solver_args=args).values
    lo = guarded(f"fd solve[{solver}]", prog.solve, *minus, solver_args=args).values
    return [(h - lo_) / (2 * FD_STEP) for h, lo_ in zip(hi, lo)]


def finite_difference_cvxpy(built: Built, call: Call, us: list, gp: bool) -> list | None:
    """The same central difference through CVXPY's own re-solves (a tie-breaker)."""
    per_element = []
    for b, vals in enumerate(call.elements):
        ub = [u[b] if np.ndim(u) == np.ndim(v) + 1 else u for u, v in zip(us, vals)]
        hi = reference(built, [v + FD_STEP * u for v, u in zip(vals, ub)], gp)
        lo = reference(built, [v - FD_STEP * u for v, u in zip(vals, ub)], gp)
        if hi is None or lo is None:
            return None
        per_element.append([(h - lo_) / (2 * FD_STEP) for h, lo_ in zip(hi[0], lo[0])])
    if not call.batched:
        return per_element[0]
    return [np.stack(parts) for parts in zip(*per_element)]


def derivative_cvxpy(built: Built, call: Call, us: list, gp: bool) -> list | None:
    """CVXPY's ``derivative()`` (diffcp) along us, where it applies (primal outputs only)."""
    variables = {v.id for v in built.problem.variables()}
    if not all(o.id in variables for o in built.outputs):
        return None
    per_element = []
    try:
        for b, vals in enumerate(call.elements):
            ub = [u[b] if np.ndim(u) == np.ndim(v) + 1 else u for u, v in zip(us, vals)]
            for p, v, u in zip(built.parameters, vals, ub):
                p.value = v
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                built.problem.solve(requires_grad=True, gp=gp, eps=1e-10, max_iters=100_000)
                for p, u in zip(built.parameters, ub):
                    p.delta = u
                built.problem.derivative()
            per_element.append([shaped(o.delta, o.shape) for o in built.outputs])
    except Exception:  # noqa: BLE001 - does not apply (cone, attribute, solver failure)
        return None
    if not call.batched:
        return per_element[0]
    return [np.stack(parts) for parts in zip(*per_element)]


def jacobian_times(jac, us: list, call: Call, built: Built) -> list:
    """Σ_j jac[i][j] · u_j, per element."""
    out = []
    nb = len(call.elements)
    for i, _ in enumerate(built.outputs):
        parts = []
        for b in range(nb if call.batched else 1):
            acc = 0.0
            for j, p in enumerate(built.parameters):
                block = jac[i][j][b] if call.batched else jac[i][j]
                u = us[j][b] if call.batched and np.ndim(us[j]) == len(p.shape) + 1 else us[j]
                acc = acc + np.tensordot(block, u, axes=len(p.shape))
            parts.append(acc)
        out.append(np.stack(parts) if call.batched else parts[0])
    return out


def check_derivatives(case: ZooCase, built: Built, sols: dict, progs: dict, call: Call,
                      rng: np.random.Generator) -> None:
    """Raise the worst derivative finding for this call (or return if all agree)."""
    us = tangents_like(call, built, rng)
    tol = ITERATIVE_TOL if case.mode in ("lsqr", "lsmr") else DOT_TOL
    complex_case = any(p.is_complex() for p in built.parameters) or any(
        np.iscomplexobj(v) for v in next(iter(sols.values())).values)
    jvps = {}
    for solver, sol in sols.items():
        ws = [rng.standard_normal(np.shape(v)) for v in sol.values]
        jvp = guarded(f"jvp[{solver}]", sol.jvp, *us)
        jvps[solver] = jvp
        if complex_case:
            continue
        vjp = guarded(f"vjp[{solver}]", sol.vjp, *ws)
        lhs, rhs = inner(ws, jvp), inner(vjp, us)
        if not abs(lhs - rhs) <= tol * max(1.0, abs(lhs), abs(rhs)):
            flag(sol, f"[{solver}] dot-product identity: <w, jvp u> = {lhs:.10g}, "
                      f"<vjp w, u> = {rhs:.10g}")
        if sum(p.size for p in built.parameters) <= 64:
            jac = guarded(f"jacobian[{solver}]", sol.jacobian)
            Ju = jacobian_times(jac, us, call, built)
            for i, (a, b) in enumerate(zip(Ju, jvp)):
                if not close(a, b, 10 * tol):
                    flag(sol, f"[{solver}] jacobian()·u differs from jvp(u) on output {i}: "
                              f"{np.max(np.abs(np.asarray(a) - np.asarray(b))):.3g}")
        if call.batched:
            check_single_element(solver, sol, progs[solver], call, us, jvp, case.mode)
    if not case.family.smooth:
        return
    fds = {}
    for solver, prog in progs.items():
        try:
            fds[solver] = finite_difference(prog, call, us, solver)
        except Finding:
            pass
    fd = agreed(fds)
    if fd is None:  # tie-breakers: CVXPY's own re-solves and its diffcp derivative
        tie = {"CVXPY": finite_difference_cvxpy(built, call, us, case.family.gp),
               "DIFFCP": derivative_cvxpy(built, call, us, case.family.gp)}
        clear_parameters(built)
        fd = agreed({**fds, **{k: v for k, v in tie.items() if v is not None}})
    if fd is None:
        raise Finding("inconclusive", "finite differences through SCS, Clarabel, CVXPY and "
                                      "diffcp's derivative do not agree")
    for solver, jvp in jvps.items():
        for i, (a, b) in enumerate(zip(jvp, fd)):
            if not close(a, b, FD_TOL):
                err = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                flag(sols[solver], f"[{solver}] jvp vs finite differences on output {i} "
                                   f"({built.outputs[i].name()}): max error {err:.3g}, "
                                   f"|fd|∞ {float(np.max(np.abs(b))):.3g}",
                     unique=case.family.unique and case.family.smooth)


def check_single_element(solver: str, sol, prog, call: Call, us: list, jvp: list,
                         mode: str) -> None:
    """Batch element 0 solved alone (unbatched, after the batch: scratch reused across batch
    sizes) gives the batch's values and jvp."""
    alone = guarded(f"solve[{solver}] unbatched", prog.solve, *call.elements[0],
                    solver_args={**SOLVE_ARGS[solver], "mode": mode})
    for i, (a, b) in enumerate(zip(alone.values, sol.values)):
        if not close(a, np.asarray(b)[0], CONSISTENCY_TOL):
            raise Finding("wrong_value", f"[{solver}] output {i}: batch element 0 (off by "
                          f"{np.max(np.abs(a - np.asarray(b)[0])):.3g}) "
                          f"{fmt(np.asarray(b)[0])} but alone {fmt(a)}")
    u0 = [u[0] if np.ndim(u) == np.ndim(v) + 1 else u for u, v in zip(us, call.elements[0])]
    for i, (a, b) in enumerate(zip(guarded(f"jvp[{solver}] unbatched", alone.jvp, *u0), jvp)):
        if not close(a, np.asarray(b)[0], 10 * CONSISTENCY_TOL):
            flag(alone, f"[{solver}] jvp output {i}: batch element 0 {fmt(np.asarray(b)[0])} "
                        f"but alone {fmt(a)}")


def agreed(fds: dict, tol: float = FD_TOL) -> list | None:
    """The finite difference of the closest pair of sources, if they agree within tol
    (a dpplayers solver's own where the pair has one; the other is only a witness)."""
    best = None
    names = list(fds)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            gap = max(fd_gap(x, y) for x, y in zip(fds[a], fds[b]))
            if gap <= tol and (best is None or gap < best[0]):
                best = (gap, fds[a] if a in SOLVERS or b not in SOLVERS else fds[b])
    return None if best is None else best[1]


def fd_gap(got, want) -> float:
    """|got − want|∞ relative to max(1, |want|∞) (inf where shapes differ or not finite)."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape or not np.all(np.isfinite(got)):
        return np.inf
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    return float(np.max(np.abs(got - want), initial=0.0)) / scale


def flag(sol, detail: str, unique: bool = False) -> None:
    """A derivative mismatch: wrong unless the solution reports itself degenerate and the
    family's optimum may be non-unique (``unique``: the answer is unique and differentiable,
    so a flagged minimum-norm answer that misses it is wrong all the same)."""
    degenerate = bool(np.any(sol.degenerate)) and not unique
    raise Finding("degenerate" if degenerate else "wrong_derivative", detail)


# ------------------------------------------------------------------ one case


def run_case(case: ZooCase) -> Outcome:
    import time

    start = time.perf_counter()
    findings = judge(case)
    worst = min(findings, key=lambda f: KINDS.index(f.kind)) if findings else None
    kind, detail = (worst.kind, worst.detail) if worst else ("correct", "")
    others = tuple(f"{f.kind}: {f.detail}" for f in findings if f is not worst)
    return Outcome(case.id, case.family.name, case.family.group, case.batch, kind, detail,
                   time.perf_counter() - start, others)


def judge(case: ZooCase) -> list[Finding]:
    """Every finding on this case (empty: correct)."""
    built = case.build()
    rng = np.random.default_rng(zlib.crc32(case.id.encode()) + 1)
    if case.family.partial:
        return judge_partial_failure(case, built, rng)
    points = [built.sample(rng) for _ in range({"many": MANY, "route": ROUTE}.get(case.batch, 2))]
    calls = make_calls(case, built, points)
    gp = case.family.gp
    if case.family.refuse:
        return judge_refusal(case, built, calls)
    findings: list[Finding] = []
    progs = {}
    for p, v in zip(built.parameters, points[0]):  # set (to the first point) or unset
        p.value = v if case.preset else None
    for solver in SOLVERS:  # compile as a layer is built
        try:
            progs[solver] = guarded(f"compile[{solver}]", dpplayers.compile, built.problem,
                                    list(built.parameters), list(built.outputs),
                                    solver=solver, gp=gp)
        except Finding as f:
            findings.append(f)
    refs = [[reference(built, vals, gp) for vals in call.elements] for call in calls]
    clear_parameters(built)
    if any(r is None for rs in refs for r in rs):
        findings.append(Finding("inconclusive", "CVXPY's reference solve is not optimal"))
    first_sols = {}
    for solver, prog in progs.items():
        try:
            sol = None
            for c, call in enumerate(calls):  # the second call warm-started from the first
                sol = solve_checked(solver, prog, call, refs[c], case.mode, sol)
                compare_values(case, built, solver, sol, call, refs[c], where=f"call {c}, ")
                if c == 0:
                    first_sols[solver] = sol
        except Finding as f:
            findings.append(f)
    if first_sols and not any(f.kind == "wrong_value" for f in findings):
        try:
            check_derivatives(case, built, first_sols,
                              {s: progs[s] for s in first_sols}, calls[0], rng)
        except Finding as f:
            findings.append(f)
    clear_parameters(built)
    return findings


def judge_refusal(case: ZooCase, built: Built, calls: list[Call]) -> list[Finding]:
    """A case dpplayers must refuse: each solver must raise one of its errors (compile or
    solve), never return numbers and never crash."""
    findings = []
    for solver in SOLVERS:
        try:
            prog = guarded(f"compile[{solver}]", dpplayers.compile, built.problem,
                           list(built.parameters), list(built.outputs), solver=solver,
                           gp=case.family.gp)
            empty = True
            for call in calls:
                inputs = built.mutate(call.inputs) if built.mutate else call.inputs
                sol = guarded(f"solve[{solver}]", prog.solve, *inputs,
                              solver_args=SOLVE_ARGS[solver])
                empty = empty and all(np.shape(v)[:1] == (0,) for v in sol.values)
            if not empty:  # (an empty batch may be answered with empty outputs)
                findings.append(Finding("wrong_value", f"[{solver}] returned values where it "
                                                       "must refuse"))
        except Finding as f:
            findings.append(f)
    return findings


PARTIAL_BATCH, FAILED = 3, 1


def judge_partial_failure(case: ZooCase, built: Built, rng: np.random.Generator) -> list:
    """A batch with one infeasible element under on_failure="nan": that element NaN and
    flagged, the others exact in values and derivatives."""
    points = [built.sample(rng) for _ in range(PARTIAL_BATCH)]
    inputs = built.mutate([np.stack(vals) for vals in zip(*points)])
    call = Call(inputs, [[v[b] for v in inputs] for b in range(PARTIAL_BATCH)], True)
    ok = [b for b in range(PARTIAL_BATCH) if b != FAILED]
    refs = [reference(built, call.elements[b], case.family.gp) for b in ok]
    clear_parameters(built)
    us = [np.stack([direction(p, rng) for _ in range(PARTIAL_BATCH)]) for p in built.parameters]
    findings, progs, jvps, sols = [], {}, {}, {}
    for solver in SOLVERS:
        try:
            prog = guarded(f"compile[{solver}]", dpplayers.compile, built.problem,
                           list(built.parameters), list(built.outputs), solver=solver)
            sol = guarded(f"solve[{solver}]", prog.solve, *inputs, on_failure="nan",
                          solver_args={**SOLVE_ARGS[solver], "mode": case.mode})
            if sol.status[FAILED].ok or not all(sol.status[b].ok for b in ok):
                raise Finding("wrong_value", f"[{solver}] statuses {sol.status}: element "
                                             f"{FAILED} alone is infeasible")
            if not all(np.all(np.isnan(v[FAILED])) for v in sol.values):
                raise Finding("wrong_value", f"[{solver}] the failed element is not NaN")
            compare_values(case, built, solver, sol, Call(inputs, [call.elements[b] for b in ok],
                                                          True), refs, rows=ok)
            jvps[solver] = guarded(f"jvp[{solver}]", sol.jvp, *us)
            ws = [rng.standard_normal(v.shape) for v in sol.values]
            vjp = guarded(f"vjp[{solver}]", sol.vjp, *ws)
            lhs = inner([w[ok] for w in ws], [j[ok] for j in jvps[solver]])
            rhs = inner([g[ok] for g in vjp], [u[ok] for u in us])
            tol = ITERATIVE_TOL if case.mode in ("lsqr", "lsmr") else DOT_TOL
            if not abs(lhs - rhs) <= tol * max(1.0, abs(lhs), abs(rhs)):
                flag(sol, f"[{solver}] dot-product identity over the solved elements: "
                          f"{lhs:.10g} vs {rhs:.10g}")
            progs[solver], sols[solver] = prog, sol
        except Finding as f:
            findings.append(f)
    fds = {}
    for solver, prog in progs.items():
        args = {**SOLVE_ARGS[solver]}
        try:
            hi = guarded("fd", prog.solve, *[v + FD_STEP * u for v, u in zip(inputs, us)],
                         solver_args=args, on_failure="nan").values
            lo = guarded("fd", prog.solve, *[v - FD_STEP * u for v, u in zip(inputs, us)],
                         solver_args=args, on_failure="nan").values
        except Finding as f:
            findings.append(f)
            continue
        fds[solver] = [((h - lo_) / (2 * FD_STEP))[ok] for h, lo_ in zip(hi, lo)]
    fd = agreed(fds) if len(fds) == len(SOLVERS) else None
    for solver, jvp in jvps.items():
        try:
            for i, (a, b) in enumerate(zip(jvp, fd or [])):
                if not close(a[ok], b, FD_TOL):
                    flag(sols[solver], f"[{solver}] jvp vs finite differences on the solved "
                                       f"elements, output {i}",
                         unique=case.family.unique and case.family.smooth)
        except Finding as f:
            findings.append(f)
    if fd is None and jvps:
        findings.append(Finding("inconclusive", "finite differences through SCS and Clarabel "
                                                "disagree"))
    return findings


def solve_checked(solver: str, prog, call: Call, refs: list, mode: str, warm=None):
    """prog.solve; a claim of infeasible/unbounded where CVXPY solved it is a wrong answer."""
    try:
        return guarded(f"solve[{solver}]", prog.solve, *call.inputs, warm_start=warm,
                       solver_args={**SOLVE_ARGS[solver], "mode": mode})
    except Finding as f:
        text = f.detail.lower()
        if (f.kind == "refused" and all(r is not None for r in refs)
                and ("infeasible" in text or "unbounded" in text)):
            raise Finding("wrong_value", f"wrong status (CVXPY: optimal): {f.detail}") from f
        raise


def compare_values(case: ZooCase, built: Built, solver: str, sol, call: Call, refs: list,
                   rows: list[int] | None = None, where: str = "") -> None:
    """Each element's outputs (rows: their batch indices) against CVXPY's."""
    for b, ref in enumerate(refs):
        if ref is None:
            continue
        outs = element(sol.values, rows[b] if rows else b, call.batched)
        if case.family.unique:
            for i, (got, want) in enumerate(zip(outs, ref[0])):
                if want is not None and not close(got, want, VALUE_TOL, built.value_scale):
                    raise Finding("wrong_value", f"[{solver}] {where}element {b}, output {i} "
                                  f"({built.outputs[i].name()}): got {fmt(got)}, "
                                  f"CVXPY {fmt(want)}")
        if case.family.unique:  # the values decide it (and an optimum on the domain's
            continue            # boundary can evaluate to ±inf a rounding away)
        objective = objective_at(built, call.elements[b], outs)
        clear_parameters(built)
        if objective is not None and not close(objective, ref[1], VALUE_TOL):
            raise Finding("wrong_value", f"[{solver}] {where}element {b}: objective "
                          f"{objective:.6g} "
                          f"at the returned point, CVXPY {ref[1]:.6g}")


def fmt(v) -> str:
    return np.array2string(np.asarray(v), precision=4, threshold=8, separator=",").replace(
        "\n", "")
