"""One adapter per library: compile a formulation, then forward / backward / Jacobian callables.

An adapter's ``compile(form, config)`` returns a :class:`Compiled` whose callables take
inputs already converted by ``prepare`` (tensor conversion is not part of a layer's cost).
Every library solves with SCS at the same tolerance (``config.eps``) except qpth, which has
its own interior-point method and tolerance. The bare solver is SCS run directly on
dpplayers' canonical cone program: it is the lower bound for a forward pass.

Libraries that cannot run a workload say why (``unsupported``) instead of failing.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

import dpplayers

from .workloads import Array, Formulation, Workload

#: Largest cost (parameter entries × problem-data entries × batch) for which a full Jacobian
#: is timed: dpplayers' ``jacobian()`` pushes one tangent column per parameter entry through
#: the data maps (2e7 is a few seconds on the reference machine).
JACOBIAN_LIMIT = 2e7
#: Batches from this size up are spread over a thread pool (dpplayers' own threshold).
PARALLEL_BATCH = 4
#: The JAX layer is timed up to this batch size (the default run's time budget).
JAX_MAX_BATCH = 32


@dataclass(frozen=True)
class Config:
    """Solver settings shared by all SCS-based libraries."""

    eps: float
    max_iters: int

    @property
    def scs_args(self) -> dict[str, Any]:
        return {"eps": self.eps, "max_iters": self.max_iters}


@dataclass(frozen=True)
class Compiled:
    """A compiled layer's operations; ``None`` where the library has no such operation."""

    prepare: Callable[[list[Array], Array], tuple[Any, Any]]  # values, cotangent -> inputs
    forward: Callable[[Any], Any]  # inputs -> state (with what backward needs)
    backward: Callable[[Any, Any], Any] | None  # (state, cotangent) -> parameter gradients
    output: Callable[[Any], Array]  # state -> x, (B, *shape)
    grads: Callable[[Any], list[Array]]  # backward's result -> numpy, one per parameter
    jacobian: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class Library:
    """A library under test: name, which formulation it takes, and its compile function."""

    name: str
    compile: Callable[[Formulation, Config], Compiled]
    formulation: Callable[[Workload], str]
    unsupported: Callable[[Workload, int], str | None]
    available: Callable[[], str | None]  # None if importable, else why not
    colour: str
    timed_by_default: bool = True  # otherwise only its accuracy is measured unless asked for


def _native(_: Workload) -> str:
    return "native"


def _factor_if_any(w: Workload) -> str:
    return "factor" if "factor" in w.formulations() else "native"


def _always(_: Workload, __: int) -> None:
    return None


def _importable(*modules: str) -> Callable[[], str | None]:
    def check() -> str | None:
        for mod in modules:
            try:
                if importlib.util.find_spec(mod) is None:
                    return f"{mod} is not installed"
                __import__(mod)
            except Exception as err:  # noqa: BLE001 -- an adapter being written may not import yet
                return f"{mod} does not import: {type(err).__name__}: {err}"
        return None
    return check


_DATA_SIZES: dict[str, int] = {}


def jacobian_cost(w: Workload, batch: int) -> float:
    """Parameter entries × problem-data entries × batch: the work of a forward-mode Jacobian."""
    if w.name not in _DATA_SIZES:
        form = w.formulations()["native"]
        prog = dpplayers.compile(form.problem, list(form.parameters), [form.output], gp=form.gp)
        p_nnz = prog.P.indices.size if prog.P is not None else 0
        _DATA_SIZES[w.name] = p_nnz + prog.A.indices.size + prog.m + prog.n
    form = w.formulations()["native"]
    p = sum(int(np.prod(par.shape, dtype=np.int64)) for par in form.parameters)
    return float(p) * _DATA_SIZES[w.name] * batch


def jacobian_unsupported(w: Workload, batch: int) -> str | None:
    """Why a full Jacobian is not timed at this size (None if it is)."""
    cost = jacobian_cost(w, batch)
    if cost > JACOBIAN_LIMIT:
        return (f"full Jacobian too costly: {cost:.1e} (parameter entries x data entries x "
                f"batch) > {JACOBIAN_LIMIT:.0e}")
    return None


# --- dpplayers, NumPy API -------------------------------------------------------------------


def _dpplayers_numpy(form: Formulation, cfg: Config, solver: str = "SCS") -> Compiled:
    prog = dpplayers.compile(form.problem, list(form.parameters), [form.output], gp=form.gp, solver=solver)
    args = cfg.scs_args if solver == "SCS" else {"eps": cfg.eps}
    return Compiled(
        prepare=lambda values, cot: (values, cot),
        forward=lambda values: prog.solve(*values, solver_args=args),
        backward=lambda sol, cot: sol.vjp(cot),
        output=lambda sol: sol.values[0],
        grads=lambda g: [np.asarray(x) for x in g],
        jacobian=lambda sol: sol.jacobian(),
    )


def _dpplayers_clarabel(form: Formulation, cfg: Config) -> Compiled:
    """dpplayers on Clarabel (interior point) at tolerance ``eps``: not the like-for-like
    comparison (the others all run SCS), but the other backend a user can pick."""
    return _dpplayers_numpy(form, cfg, solver="CLARABEL")


# --- the bare solver: SCS on dpplayers' canonical data --------------------------------------


def _bare_scs(form: Formulation, cfg: Config) -> Compiled:
    """SCS alone on each element's canonical data, with the same settings and the same
    parallelism as dpplayers and diffcp (a thread pool of nproc workers for batches ≥ 4;
    SCS releases the GIL) and, when A and P are constant, one workspace per thread whose
    b and c are updated, as a layer would keep it."""
    import scs

    prog = dpplayers.compile(form.problem, list(form.parameters), [form.output], gp=form.gp, solver="SCS")
    settings = prog.backend.settings(cfg.scs_args)  # exactly what dpplayers hands SCS
    k = prog.cones
    cones = {"z": k.zero, "l": k.nonneg, "q": list(k.soc), "s": list(k.psd), "ep": k.exp,
             "ed": k.exp_dual, "p": list(k.power)}
    constant = prog.C_A.is_constant and (prog.C_P is None or prog.C_P.is_constant)
    local = threading.local()
    workers = os.cpu_count() or 1
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None

    def prepare(values: list[Array], cot: Array) -> tuple[list[dict], None]:
        theta = prog.layout.stack(values)[0]
        data = (prog.C_P(theta) if prog.C_P is not None else np.zeros((0, 1)),
                prog.C_A(theta), prog.C_b(theta), prog.C_c(theta))
        out = []
        for j in range(theta.shape[1]):
            P, A, b, c = prog.element_data(data, j)
            out.append({"A": A, "b": b, "c": c} | ({"P": P} if P is not None else {}))
        return out, None

    def solve(d: dict) -> dict:
        if not constant:
            return scs.SCS(d, cones, **settings).solve(warm_start=False)
        ws = getattr(local, "workspace", None)
        if ws is None:
            ws = local.workspace = scs.SCS(d, cones, **settings)
        else:
            ws.update(b=d["b"], c=d["c"])
        return ws.solve(warm_start=False)

    def forward(elements: list[dict]) -> list[dict]:
        if pool is not None and len(elements) >= PARALLEL_BATCH:
            return list(pool.map(solve, elements))
        return [solve(d) for d in elements]

    def output(sols: list[dict]) -> Array:  # the user's x, through dpplayers' retrieval R
        return prog.retrieval.apply(np.stack([s["x"] for s in sols], 1),
                                    np.stack([s["y"] for s in sols], 1))[0]

    return Compiled(prepare=prepare, forward=forward, backward=None, output=output,
                    grads=lambda g: [])


# --- PyTorch layers: dpplayers.torch and cvxpylayers.torch ----------------------------------


def _torch_prepare(values: list[Array], cot: Array):
    import torch

    params = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values]
    return params, torch.tensor(cot, dtype=torch.float64)


def _torch_layer(layer: Any, args: dict[str, Any]) -> Compiled:
    return _torch_compiled(lambda params: layer(*params, solver_args=args)[0])


def _torch_compiled(solve: Callable[[Any], Any]) -> Compiled:
    """A torch callable ``params -> x`` timed as forward, and ``autograd.grad`` as backward."""
    import torch

    def forward(params):
        return params, solve(params)

    def backward(state, cot):
        params, x = state
        return torch.autograd.grad(x, params, grad_outputs=cot)

    return Compiled(
        prepare=_torch_prepare, forward=forward, backward=backward,
        output=lambda state: state[1].detach().numpy(),
        grads=lambda g: [t.detach().numpy() for t in g],
    )


def _dpplayers_torch(form: Formulation, cfg: Config) -> Compiled:
    from dpplayers.torch import CvxpyLayer

    layer = CvxpyLayer(form.problem, parameters=list(form.parameters), variables=[form.output],
                       gp=form.gp)
    return _torch_layer(layer, cfg.scs_args)


def _cvxpylayers_torch(form: Formulation, cfg: Config, mode: str | None = None) -> Compiled:
    from cvxpylayers.torch import CvxpyLayer

    layer = CvxpyLayer(form.problem, parameters=list(form.parameters), variables=[form.output],
                       gp=form.gp)

    def quiet(*params, solver_args):
        with warnings.catch_warnings():  # diffcp warns on every "Solved/Inaccurate"
            warnings.simplefilter("ignore")
            return layer(*params, solver_args=solver_args)
    return _torch_layer(quiet, cfg.scs_args | ({"mode": mode} if mode else {}))


def _cvxpylayers_dense(form: Formulation, cfg: Config) -> Compiled:
    """cvxpylayers with diffcp's dense derivative (its default LSQR can stop far off)."""
    return _cvxpylayers_torch(form, cfg, mode="dense")


# --- JAX layer ------------------------------------------------------------------------------


def _dpplayers_jax(form: Formulation, cfg: Config) -> Compiled:
    import jax

    jax.config.update("jax_enable_x64", True)
    from dpplayers.jax import CvxpyLayer

    layer = CvxpyLayer(form.problem, parameters=list(form.parameters), variables=[form.output],
                       gp=form.gp)
    args = cfg.scs_args

    def f(*params):
        return layer(*params, solver_args=args)[0]

    def prepare(values, cot):
        return [jax.numpy.asarray(v) for v in values], jax.numpy.asarray(cot)

    def forward(params):
        x, pullback = jax.vjp(f, *params)
        return jax.block_until_ready(x), pullback

    def backward(state, cot):
        return jax.block_until_ready(state[1](cot))

    return Compiled(
        prepare=prepare, forward=forward, backward=backward,
        output=lambda state: np.asarray(state[0]),
        grads=lambda g: [np.asarray(t) for t in g],
    )


# --- qpth (OptNet's batched interior-point QP solver) ---------------------------------------


def _qpth(form: Formulation, cfg: Config) -> Compiled:
    from qpth.qp import QPFunction

    return _torch_compiled(lambda params: QPFunction(verbose=-1)(*params))


def _jax_batches(_: Workload, batch: int) -> str | None:
    if batch > JAX_MAX_BATCH:
        return f"JAX layer timed up to batch {JAX_MAX_BATCH} (time budget of the default run)"
    return None


def _qp_only(w: Workload, _: int) -> str | None:
    return None if w.is_qp else "qpth solves QPs only"


LIBRARIES: dict[str, Library] = {lib.name: lib for lib in [
    Library("dpplayers", _dpplayers_numpy, _native, _always, _importable("dpplayers"),
            "tab:blue"),
    Library("dpplayers-clarabel", _dpplayers_clarabel, _native, _always,
            _importable("dpplayers"), "tab:olive", timed_by_default=False),
    Library("dpplayers-torch", _dpplayers_torch, _native, _always,
            _importable("dpplayers.torch"), "tab:cyan"),
    Library("dpplayers-jax", _dpplayers_jax, _native, _jax_batches,
            _importable("dpplayers.jax"), "tab:purple"),
    Library("cvxpylayers", _cvxpylayers_torch, _factor_if_any, _always,
            _importable("cvxpylayers.torch"), "tab:red"),
    Library("cvxpylayers-dense", _cvxpylayers_dense, _factor_if_any, _always,
            _importable("cvxpylayers.torch"), "tab:orange", timed_by_default=False),
    Library("scs (bare)", _bare_scs, _native, _always, _importable("scs"), "tab:gray"),
    Library("qpth", _qpth, _native, _qp_only, _importable("qpth.qp"), "tab:green"),
]}

