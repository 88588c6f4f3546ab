"""Gradient accuracy: each library's directional derivative against finite differences.

For one problem instance θ (batch element 0 of the workload's values), a random direction
v (scaled parameter by parameter to θ's size, symmetric where only the symmetric part
matters) and a random output cotangent w, the quantity is

    d/dt  wᵀ x*(θ + t v)  at t = 0.

The reference solves tightly: dpplayers with Clarabel at tolerance 1e-10 plus Newton
refinement of the KKT residual (``refine``) to rounding level, and takes a central
difference with step h (relative to θ). A library's value is ⟨∇_θ(wᵀx*), v⟩ from its own
backward pass; its relative error against the finite difference is reported, together with
the relative error of the whole gradient against the reference's exact gradient and of x*.
The reference's own analytic derivative is compared with the finite difference as well
(``reference_vs_fd``): it bounds how finely the finite difference resolves errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import dpplayers

from .libraries import Compiled
from .workloads import Array, Formulation, Workload

REFERENCE_ARGS = {"eps": 1e-10, "refine": 3}
FD_STEP = 1e-5


@dataclass(frozen=True)
class Probe:
    """One instance (batch 1), a direction on its parameters and a cotangent on x."""

    values: list[Array]
    direction: list[Array]
    cotangent: Array


@dataclass(frozen=True)
class Reference:
    """The tightly solved reference for one formulation, at one probe."""

    x: Array
    grads: list[Array]
    fd: float  # central difference of wᵀx* along v
    analytic: float  # ⟨reference gradient, v⟩

    @property
    def self_error(self) -> float:
        return abs(self.analytic - self.fd) / max(abs(self.fd), 1e-300)


def make_probe(w: Workload, formulation: str) -> Probe:
    """The probe for a formulation; the same seed gives the same θ, v, w for all libraries."""
    form = w.formulations()[formulation]
    values = [v[:1] for v in w.values(1)[formulation]]
    rng = np.random.default_rng(w.seed + 1000)
    direction = []
    for value, sym in zip(values, form.symmetric):
        d = rng.standard_normal(value.shape)
        if sym:
            d = 0.5 * (d + np.swapaxes(d, -1, -2))
        scale = np.linalg.norm(value) / max(np.linalg.norm(d), 1e-300)
        direction.append(d * (scale if scale > 0 else 1.0))
    cot = rng.standard_normal((1, *form.output.shape))
    return Probe(values, direction, cot)


def _dot(a: list[Array], b: list[Array]) -> float:
    return float(sum(np.vdot(x, y) for x, y in zip(a, b)))


def reference(form: Formulation, probe: Probe) -> Reference:
    """Solve tightly, differentiate exactly, and take the central finite difference."""
    prog = dpplayers.compile(form.problem, list(form.parameters), [form.output],
                             solver="CLARABEL", gp=form.gp)

    def objective(t: float) -> float:
        vals = [v + t * d for v, d in zip(probe.values, probe.direction)]
        x = prog.solve(*vals, solver_args=REFERENCE_ARGS).values[0]
        return float(np.vdot(probe.cotangent, x))

    sol = prog.solve(*probe.values, solver_args=REFERENCE_ARGS)
    grads = [np.asarray(g) for g in sol.vjp(probe.cotangent)]
    fd = (objective(FD_STEP) - objective(-FD_STEP)) / (2 * FD_STEP)
    return Reference(np.asarray(sol.values[0]), grads, fd, _dot(grads, probe.direction))


def _symmetrised(grads: list[Array], form: Formulation) -> list[Array]:
    return [0.5 * (g + np.swapaxes(g, -1, -2)) if s else g
            for g, s in zip(grads, form.symmetric)]


def library_errors(compiled: Compiled, form: Formulation, probe: Probe,
                   ref: Reference) -> dict[str, Any]:
    """Relative errors of one library against the reference (forward x and gradient)."""
    inputs, cot = compiled.prepare(probe.values, probe.cotangent)
    state = compiled.forward(inputs)
    x = compiled.output(state)
    out: dict[str, Any] = {
        "x_rel_err": float(np.linalg.norm(x - ref.x) / max(np.linalg.norm(ref.x), 1e-300)),
    }
    if compiled.backward is None:
        return out
    grads = [np.asarray(g).reshape(r.shape)
             for g, r in zip(compiled.grads(compiled.backward(state, cot)), ref.grads)]
    directional = _dot(grads, probe.direction)
    g_lib = np.concatenate([g.ravel() for g in _symmetrised(grads, form)])
    g_ref = np.concatenate([g.ravel() for g in _symmetrised(ref.grads, form)])
    out["dir_rel_err"] = abs(directional - ref.fd) / max(abs(ref.fd), 1e-300)
    out["grad_rel_err"] = float(np.linalg.norm(g_lib - g_ref) / max(np.linalg.norm(g_ref), 1e-300))
    return out
