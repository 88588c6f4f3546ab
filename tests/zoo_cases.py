"""The generated differential test zoo (issue #17): small random DPP problems, seeded.

One builder per family. A builder takes a seeded ``np.random.Generator`` (sizes, shapes and
constant data are drawn from it) and returns a :class:`Built`: a fresh cvxpy problem whose
parameters have no values (as a layer is built), the variables/duals to return, and a sampler
of parameter values that keeps the problem feasible and bounded. Most problems carry a
strongly convex regulariser ``½‖x − p‖²`` on a *free* target parameter p, so the solution is
unique and differentiable at generic samples.

``cases()`` enumerates every (family, seed) pair: a stable list of :class:`ZooCase`, each with
a batch mode (``none``: unbatched, ``one``: a leading batch axis of 1, ``mixed`` / ``many``: a
batch of 2 / ``zoo_oracles.MANY`` where free parameters are batched and the others broadcast;
``route``: a batch large enough for the dense QP route, for the families built for it) and a derivative
mode (direct, dense, lsqr, lsmr), both cycled over the seeds; every third seed compiles with
the parameter values already set to the first point (as users often do: nothing may freeze).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
from helpers import sym  # a random symmetric matrix

Sampler = Callable[[np.random.Generator], list]
Draw = Callable[[np.random.Generator], object]

#: Seeds per family in the full run (seeds 0, 2 or 1, 3 of each family are the CI sample).
SEEDS_PER_FAMILY = 6
#: none: unbatched; one: a batch axis of 1; mixed: 2 elements, many: zoo_oracles.MANY (the
#: thread pool), with free parameters batched and the others broadcast. (``route``, the dense
#: QP route's batch, only for the families built for it.)
BATCH_MODES = ("none", "one", "mixed", "many")
#: Derivative mode per seed (solver_args={"mode": ...}); "direct" is the default.
DERIVATIVE_MODES = ("direct", "lsqr", "direct", "dense", "direct", "lsmr")


@dataclass(frozen=True)
class Built:
    """One concrete problem: the cvxpy objects and a sampler of feasible parameter values."""

    problem: cp.Problem
    parameters: tuple[cp.Parameter, ...]
    outputs: tuple[cp.Variable, ...]
    sample: Sampler
    free: tuple[int, ...]  # parameters drawn independently of the others (safe to batch alone)
    mutate: Callable[[list], list] | None = None  # spoils the inputs (refusal families)
    value_scale: float = 1.0  # values below this are compared absolutely (scaled families)


@dataclass(frozen=True)
class Family:
    name: str
    group: str  # atoms, constraints, attributes, maximize, duals, gp
    builder: Callable[[np.random.Generator], Built]
    gp: bool
    smooth: bool  # solution map differentiable at generic samples
    unique: bool  # unique optimum (else only the objective is compared)
    flip: bool  # may be rewritten as Maximize(−f)
    refuse: bool  # dpplayers must refuse this case with one of its errors
    partial: bool  # a batch of 3 whose middle element is infeasible, on_failure="nan"
    batches: tuple[str, ...] = BATCH_MODES  # the batch modes its seeds cycle through


@dataclass(frozen=True)
class ZooCase:
    id: str
    family: Family
    seed: int
    batch: str
    mode: str  # derivative mode of the solves that are differentiated
    preset: bool  # parameter values set (to the first point) before compiling
    ci: bool  # in the representative sample that runs by default

    def build(self) -> Built:
        """Fresh cvxpy objects for this case (same sizes and data every call)."""
        rng = np.random.default_rng(zlib.crc32(self.id.encode()))
        built = self.family.builder(rng)
        if self.family.flip and self.seed % 2 == 1:
            built = _as_maximize(built)
        return built


FAMILIES: dict[str, Family] = {}


def family(name: str, group: str = "atoms", gp: bool = False, smooth: bool = True,
           unique: bool = True, flip: bool = True, refuse: bool = False, partial: bool = False,
           batches: tuple[str, ...] = BATCH_MODES):
    """Register a builder ``rng -> Built`` under a family name."""

    def register(builder):
        FAMILIES[name] = Family(name, group, builder, gp, smooth, unique, flip and not gp,
                                refuse, partial, batches)
        return builder

    return register


def cases() -> list[ZooCase]:
    """Every generated case, in a stable order (family registration order, then seed)."""
    out = []
    for fam in FAMILIES.values():
        offset = zlib.crc32(fam.name.encode())  # per family, independent of the order
        for seed in range(SEEDS_PER_FAMILY):
            batch = fam.batches[(offset + seed) % len(fam.batches)]
            ci = seed in (offset % 2, offset % 2 + 2)  # (Minimize or flipped) and preset
            out.append(ZooCase(f"{fam.name}-{seed}", fam, seed, batch,
                               DERIVATIVE_MODES[seed % len(DERIVATIVE_MODES)],
                               seed % 3 == 2, ci))
    return out


def _as_maximize(built: Built) -> Built:
    prob = built.problem
    if not isinstance(prob.objective, cp.Minimize):
        return built
    flipped = cp.Problem(cp.Maximize(-prob.objective.args[0]), prob.constraints)
    return Built(flipped, built.parameters, built.outputs, built.sample, built.free,
                 built.mutate, built.value_scale)


# ------------------------------------------------------------------ small building blocks


def independent(params: list, draws: list[Draw], outputs: list, problem: cp.Problem) -> Built:
    """A Built whose parameters are all drawn independently (all free)."""
    return Built(problem, tuple(params), tuple(outputs),
                 lambda rng: [np.asarray(d(rng)) for d in draws], tuple(range(len(params))))


def normal(shape, scale: float = 1.0) -> Draw:
    return lambda rng: scale * rng.standard_normal(shape)


def uniform(shape, lo: float, hi: float) -> Draw:
    return lambda rng: rng.uniform(lo, hi, shape)


def spd(rng: np.random.Generator, n: int, shift: float = 1.0) -> np.ndarray:
    a = rng.standard_normal((n, n))
    return a @ a.T / n + shift * np.eye(n)


def pick_shape(rng: np.random.Generator, kinds=("scalar", "vector", "matrix")) -> tuple:
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "scalar":
        return ()
    if kind == "vector":
        return (int(rng.integers(2, 5)),)
    return (int(rng.integers(2, 4)), int(rng.integers(2, 4)))


def reg(x, p, weight: float = 0.5):
    return weight * cp.sum_squares(x - p)


def affine_image(rng: np.random.Generator, x, rows: int | None = None):
    """A @ x + b with parameters A, b (scalar x: a*x + b); returns expr, params, draws."""
    if x.ndim == 0:
        a, b = cp.Parameter(name="a"), cp.Parameter(name="b")
        return a * x + b, [a, b], [normal(()), normal(())]
    k = rows or int(rng.integers(2, 5))
    A = cp.Parameter((k, x.shape[0]), name="A")
    b_shape = (k,) if x.ndim == 1 else (k, x.shape[1])
    b = cp.Parameter(b_shape, name="b")
    return A @ x + b, [A, b], [normal(A.shape), normal(b_shape)]


def regularised(rng, x, term, params, draws, constraints=(), outputs=None, weight=0.5) -> Built:
    """Minimize term + weight‖x − p‖² (p a free target parameter of x's shape)."""
    p = cp.Parameter(x.shape, name="p")
    prob = cp.Problem(cp.Minimize(term + reg(x, p, weight)), list(constraints))
    return independent([*params, p], [*draws, normal(x.shape, 1.5)],
                       outputs or [x], prob)


def atom_on_image(atom: Callable, shapes=("scalar", "vector", "matrix")):
    """Builder: atom(A @ x + b) + ½‖x − p‖² for x of a random shape."""

    def build(rng):
        x = cp.Variable(pick_shape(rng, shapes), name="x")
        expr, params, draws = affine_image(rng, x)
        return regularised(rng, x, atom(expr, rng), params, draws)

    return build


# ------------------------------------------------------------------ affine atoms


@family("affine_index")
def _affine_index(rng):
    shape = pick_shape(rng, ("vector", "matrix"))
    x = cp.Variable(shape, name="x")
    sub = x[1:] if x.ndim == 1 else x[:, ::2][1:]
    c = cp.Parameter(sub.shape, name="c")
    u = cp.Parameter(name="u")
    first = x[0] if x.ndim == 1 else x[0, -1]
    return regularised(rng, x, cp.sum(cp.multiply(c, sub)), [c, u],
                       [normal(sub.shape), uniform((), 0.2, 1.0)], [first <= u])


@family("affine_reshape")
def _affine_reshape(rng):
    m, n = int(rng.integers(2, 4)), int(rng.integers(2, 4))
    x = cp.Variable(m * n, name="x")
    order = "F" if rng.integers(2) else "C"
    X = cp.reshape(x, (m, n), order=order)
    C = cp.Parameter((n, m), name="C")
    term = cp.trace(C @ X) + cp.sum(cp.vec(X, order="F")[:2])
    return regularised(rng, x, term, [C], [normal((n, m))])


@family("affine_stack")
def _affine_stack(rng):
    n = int(rng.integers(2, 4))
    x, y = cp.Variable(n, name="x"), cp.Variable(n, name="y")
    kind = int(rng.integers(3))
    if kind == 0:
        z = cp.hstack([x, y])
    elif kind == 1:
        z = cp.vstack([x, y])
    else:
        z = cp.bmat([[cp.reshape(x, (n, 1), order="F"), cp.reshape(y, (n, 1), order="F")],
                     [cp.reshape(y, (n, 1), order="F"), cp.reshape(x, (n, 1), order="F")]])
    C = cp.Parameter(z.shape, name="C")
    p, q = cp.Parameter(n, name="p"), cp.Parameter(n, name="q")
    obj = cp.sum(cp.multiply(C, z)) + cp.norm(z, "fro") + reg(x, p) + reg(y, q)
    prob = cp.Problem(cp.Minimize(obj))
    return independent([C, p, q], [normal(z.shape), normal(n), normal(n)], [x, y], prob)


@family("affine_trace")
def _affine_trace(rng):
    n = int(rng.integers(2, 4))
    X = cp.Variable((n, n), name="X")
    C, t = cp.Parameter((n, n), name="C"), cp.Parameter(name="t")
    return regularised(rng, X, cp.trace(C @ X), [C, t], [normal((n, n)), uniform((), 0.5, 1)],
                       [cp.trace(X) <= t])


@family("affine_diag")
def _affine_diag(rng):
    n = int(rng.integers(2, 4))
    if rng.integers(2):
        x = cp.Variable(n, name="x")
        C = cp.Parameter((n, n), name="C")
        return regularised(rng, x, cp.sum(cp.multiply(C, cp.diag(x))), [C], [normal((n, n))],
                           [cp.diag(x) >> -np.eye(n)])
    X = cp.Variable((n, n), name="X")
    c = cp.Parameter(n, name="c")
    return regularised(rng, X, c @ cp.diag(X) + cp.norm(cp.diag(X), 1), [c], [normal(n)])


@family("affine_cumsum")
def _affine_cumsum(rng):
    n = int(rng.integers(2, 5))
    x = cp.Variable(n, name="x")
    c, u = cp.Parameter(n, name="c"), cp.Parameter(n, name="u")
    return regularised(rng, x, c @ cp.cumsum(x), [c, u], [normal(n), uniform(n, 0.1, 1.0)],
                       [cp.cumsum(x) <= u])


@family("affine_kron")
def _affine_kron(rng):
    X = cp.Variable((2, 2), name="X")
    K = rng.standard_normal((2, 2))
    D = cp.Parameter((4, 4), name="D")
    first = cp.kron(K, X) if rng.integers(2) else cp.kron(X, K)
    return regularised(rng, X, cp.sum(cp.multiply(D, first)), [D], [normal((4, 4))])


# ------------------------------------------------------------------ elementwise / reductions


@family("abs")
def _abs(rng):
    return atom_on_image(lambda e, r: cp.sum(cp.abs(e)))(rng)


@family("pos_neg")
def _pos_neg(rng):
    return atom_on_image(lambda e, r: cp.sum(cp.pos(e)) + 2 * cp.sum(cp.neg(e)))(rng)


@family("max_min")
def _max_min(rng):
    def atom(e, r):
        if r.integers(2):
            return cp.max(e) - cp.min(e)
        return cp.sum(cp.maximum(e, 0.3)) - cp.sum(cp.minimum(e, -0.2))

    return atom_on_image(atom)(rng)


@family("sum_largest")
def _sum_largest(rng):
    def atom(e, r):
        k = max(1, e.size // 2)
        return cp.sum_largest(e, k) - cp.sum_smallest(e, k) / 2

    return atom_on_image(atom, ("vector", "matrix"))(rng)


def _norm_family(p):
    return atom_on_image(lambda e, r: cp.norm(cp.vec(e, order="F"), p), ("vector", "matrix"))


family("norm1")(_norm_family(1))
family("norm2")(_norm_family(2))
family("norm_inf")(_norm_family("inf"))
family("pnorm")(_norm_family(3))


@family("norm_fro")
def _norm_fro(rng):
    return atom_on_image(lambda e, r: cp.norm(e, "fro"), ("matrix",))(rng)


@family("norm_nuc")
def _norm_nuc(rng):
    return atom_on_image(lambda e, r: cp.normNuc(e), ("matrix",))(rng)


@family("norm_matrix_induced")
def _norm_induced(rng):
    p = [1, "inf", 2][int(rng.integers(3))]
    return atom_on_image(lambda e, r: cp.norm(e, p), ("matrix",))(rng)


@family("mixed_norm")
def _mixed_norm(rng):
    p, q = [(2, 1), (1, 2), ("inf", 1), (2, "inf")][int(rng.integers(4))]
    return atom_on_image(lambda e, r: cp.mixed_norm(e, p, q), ("matrix",))(rng)


@family("norm_axis")
def _norm_axis(rng):
    axis = int(rng.integers(2))
    return atom_on_image(lambda e, r: cp.sum(cp.norm(e, 2, axis=axis)), ("matrix",))(rng)


@family("huber")
def _huber(rng):
    M = float(rng.uniform(0.3, 1.5))
    return atom_on_image(lambda e, r: cp.sum(cp.huber(e, M)))(rng)


@family("quad_over_lin")
def _quad_over_lin(rng):
    x = cp.Variable(int(rng.integers(2, 5)), name="x")
    expr, params, draws = affine_image(rng, x)
    if rng.integers(2):
        t = float(rng.uniform(0.5, 2.0))
        return regularised(rng, x, cp.quad_over_lin(expr, t), params, draws)
    y = cp.Variable(name="y")
    q = cp.Parameter(name="q")
    obj = cp.quad_over_lin(expr, y) + reg(x, q * np.ones(x.shape)) + reg(y, 1.0) + y
    prob = cp.Problem(cp.Minimize(obj), [y >= 0.2])
    return independent([*params, q], [*draws, normal(())], [x, y], prob)


@family("sum_squares")
def _sum_squares(rng):
    return atom_on_image(lambda e, r: cp.sum_squares(e))(rng)


@family("quad_form_const")
def _quad_form_const(rng):
    n = int(rng.integers(2, 4))
    x = cp.Variable(n, name="x")
    M = spd(rng, n)
    q, p = cp.Parameter(n, name="q"), cp.Parameter(n, name="p")
    if rng.integers(2):
        obj = cp.quad_form(x - p, M) + q @ x
    else:
        obj = 0.5 * cp.quad_form(x, M) + q @ x + cp.sum_squares(x - p)
    prob = cp.Problem(cp.Minimize(obj), [x <= 2])
    return independent([q, p], [normal(n), normal(n)], [x], prob)


@family("quad_form_param")
def _quad_form_param(rng):
    """The OptNet form: ½ quad_form(x, P) + qᵀx with a PSD parameter P, constrained."""
    n = int(rng.integers(2, 4))
    x = cp.Variable(n, name="x")
    P, q = cp.Parameter((n, n), PSD=True, name="P"), cp.Parameter(n, name="q")
    G, h = cp.Parameter((2, n), name="G"), cp.Parameter(2, name="h")
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, P) + q @ x), [G @ x <= h])
    return independent([P, q, G, h], [lambda r: spd(r, n), normal(n), normal((2, n)),
                                      uniform(2, 0.1, 1)], [x], prob)


@family("quad_form_param_unconstrained")
def _quad_form_param_unconstrained(rng):
    n = int(rng.integers(2, 4))
    x = cp.Variable(n, name="x")
    P, q = cp.Parameter((n, n), PSD=True, name="P"), cp.Parameter(n, name="q")
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, P) + q @ x))
    return independent([P, q], [lambda r: spd(r, n), normal(n)], [x], prob)


@family("quad_form_param_sums")
def _quad_form_param_sums(rng):
    """Sums and multiples of PSD parameters, several parametric quad forms (issue #17, 13)."""
    n = int(rng.integers(2, 4))
    x = cp.Variable(n, name="x")
    P1 = cp.Parameter((n, n), PSD=True, name="P1")
    P2 = cp.Parameter((n, n), PSD=True, name="P2")
    q = cp.Parameter(n, name="q")
    kind = int(rng.integers(3))
    quad = [cp.quad_form(x, P1 + P2), cp.quad_form(x, 2 * P1),
            cp.quad_form(x, P1) + 0.5 * cp.quad_form(x, P2)][kind]
    prob = cp.Problem(cp.Minimize(0.5 * quad + q @ x), [cp.sum(x) <= 1])
    params = [P1, q] if kind == 1 else [P1, P2, q]
    return independent(params, [lambda r: spd(r, n)] * (len(params) - 1) + [normal(n)],
                       [x], prob)


# ------------------------------------------------------------------ powers, exp/log family


@family("power_frac")
def _power_frac(rng):
    x = cp.Variable(int(rng.integers(2, 5)), name="x")
    pw = float(rng.choice([0.3, 0.5, 0.7]))
    c = cp.Parameter(x.shape, pos=True, name="c")
    return regularised(rng, x, -c @ cp.power(x + 2, pw), [c], [uniform(x.shape, 0.5, 2)])


@family("power_gt1")
def _power_gt1(rng):
    pw = float(rng.choice([1.5, 2, 3, 2.5]))
    return atom_on_image(lambda e, r: cp.sum(cp.power(cp.abs(e), pw)), ("scalar", "vector"))(rng)


@family("power_neg")
def _power_neg(rng):
    x = cp.Variable(int(rng.integers(2, 5)), name="x")
    pw = float(rng.choice([-1, -0.5, -2]))
    c = cp.Parameter(x.shape, pos=True, name="c")
    return regularised(rng, x, cp.sum(cp.power(x + c, pw)), [c], [uniform(x.shape, 0.5, 2)])


@family("sqrt")
def _sqrt(rng):
    x = cp.Variable(int(rng.integers(2, 5)), name="x")
    A = cp.Parameter((3, x.shape[0]), name="A")
    b = cp.Parameter(3, pos=True, name="b")
    term = -cp.sum(cp.sqrt(A @ x + b))
    return regularised(rng, x, term, [A, b], [normal(A.shape, 0.3), uniform(3, 2.0, 3.0)],
                       [cp.norm(x, "inf") <= 1])


@family("inv_pos")
def _inv_pos(rng):
    x = cp.Variable(int(rng.integers(2, 5)), name="x")
    c = cp.Parameter(x.shape, pos=True, name="c")
    return regularised(rng, x, cp.sum(cp.inv_pos(x + c)), [c], [uniform(x.shape, 0.5, 2)])


@family("exp")
def _exp(rng):
    return atom_on_image(lambda e, r: cp.sum(cp.exp(0.5 * e)))(rng)


@family("log")
def _log(rng):
    x = cp.Variable(int(rng.integers(2, 5)), name="x")
    A = cp.Parameter((4, x.shape[0]), name="A")
    b = cp.Parameter(4, pos=True, name="b")
    return regularised(rng, x, -cp.sum(cp.log(b - A @ x)), [A, b],
                       [normal(A.shape, 0.3), uniform(4, 1.0, 2.0)])


@family("entr")
def _entr(rng):
    x = cp.Variable(int(rng.integers(2, 5)), name="x")
    c = cp.Parameter(x.shape, name="c")
    return regularised(rng, x, -cp.sum(cp.entr(x)) + c @ x, [c], [normal(x.shape)])


@family("rel_entr")
def _rel_entr(rng):
    x = cp.Variable(int(rng.integers(2, 5)), name="x")
    y = cp.Parameter(x.shape, pos=True, name="y")
    return regularised(rng, x, cp.sum(cp.rel_entr(x, y)), [y], [uniform(x.shape, 0.5, 2)])


@family("kl_div")
def _kl_div(rng):
    n = int(rng.integers(2, 5))
    x, z = cp.Variable(n, name="x"), cp.Variable(n, name="z")
    y = cp.Parameter(n, pos=True, name="y")
    p = cp.Parameter(n, name="p")
    obj = cp.sum(cp.kl_div(x, y)) + cp.sum(cp.kl_div(z, x + 1)) + reg(x, p) + reg(z, 1.0)
    prob = cp.Problem(cp.Minimize(obj), [cp.sum(x) == 1])
    return independent([y, p], [uniform(n, 0.2, 1.0), normal(n)], [x, z], prob)


@family("log_sum_exp")
def _log_sum_exp(rng):
    def atom(e, r):
        if e.ndim == 2 and r.integers(2):
            return cp.sum(cp.log_sum_exp(e, axis=int(r.integers(2))))
        return cp.log_sum_exp(e)

    return atom_on_image(atom, ("vector", "matrix"))(rng)


@family("logistic")
def _logistic(rng):
    return atom_on_image(lambda e, r: cp.sum(cp.logistic(e)))(rng)


@family("geo_mean")
def _geo_mean(rng):
    n = int(rng.integers(2, 5))
    x = cp.Variable(n, name="x")
    c = cp.Parameter(n, pos=True, name="c")
    w = list(rng.integers(1, 4, n)) if rng.integers(2) else None
    term = -cp.geo_mean(x, w) if w is not None else -cp.geo_mean(x)
    return regularised(rng, x, term + c @ x * 0.1, [c], [uniform(n, 0.5, 2)],
                       [x >= 0.1])


@family("harmonic_mean")
def _harmonic_mean(rng):
    n = int(rng.integers(2, 5))
    x = cp.Variable(n, name="x")
    c = cp.Parameter(n, pos=True, name="c")
    return regularised(rng, x, -cp.harmonic_mean(x + c), [c], [uniform(n, 0.5, 2)])


# ------------------------------------------------------------------ spectral / SDP atoms


def _sym_plus_diag(rng):
    n = int(rng.integers(2, 4))
    x = cp.Variable(n, name="x")
    C = cp.Parameter((n, n), symmetric=True, name="C")
    return x, C, C + cp.diag(x), [lambda r: sym(r, n)]


@family("lambda_max")
def _lambda_max(rng):
    x, C, M, draws = _sym_plus_diag(rng)
    return regularised(rng, x, cp.lambda_max(M), [C], draws)


@family("lambda_min")
def _lambda_min(rng):
    x, C, M, draws = _sym_plus_diag(rng)
    return regularised(rng, x, -cp.lambda_min(M), [C], draws)


@family("lambda_sum_largest")
def _lambda_sum_largest(rng):
    x, C, M, draws = _sym_plus_diag(rng)
    k = int(rng.integers(1, x.shape[0]))
    term = cp.lambda_sum_largest(M, k) - 0.5 * cp.lambda_sum_smallest(M, 1)
    return regularised(rng, x, term, [C], draws)


@family("log_det")
def _log_det(rng):
    n = int(rng.integers(2, 4))
    X = cp.Variable((n, n), symmetric=True, name="X")
    C = cp.Parameter((n, n), PSD=True, name="C")
    return regularised(rng, X, -cp.log_det(X) + cp.trace(C @ X), [C],
                       [lambda r: spd(r, n)], weight=0.1)


@family("matrix_frac")
def _matrix_frac(rng):
    n = int(rng.integers(2, 4))
    x = cp.Variable(n, name="x")
    kind = int(rng.integers(2))
    if kind == 0:
        P = cp.Parameter((n, n), PSD=True, name="P")
        c = cp.Parameter(n, name="c")
        return regularised(rng, x, cp.matrix_frac(x, P) + c @ x, [P, c],
                           [lambda r: spd(r, n), normal(n)])
    M = spd(rng, n)
    p = cp.Parameter(n, name="p")
    q = cp.Parameter(n, name="q")
    prob = cp.Problem(cp.Minimize(cp.matrix_frac(x - p, M) + q @ x + 0.1 * cp.sum_squares(x)))
    return independent([p, q], [normal(n), normal(n)], [x], prob)


@family("sigma_max")
def _sigma_max(rng):
    return atom_on_image(lambda e, r: cp.sigma_max(e), ("matrix",))(rng)


@family("tr_inv")
def _tr_inv(rng):
    n = int(rng.integers(2, 4))
    X = cp.Variable((n, n), symmetric=True, name="X")
    C = cp.Parameter((n, n), PSD=True, name="C")
    return regularised(rng, X, cp.tr_inv(X) + cp.trace(C @ X), [C], [lambda r: spd(r, n)],
                       weight=0.1)


@family("cvar")
def _cvar(rng):
    beta = float(rng.choice([0.5, 0.7, 0.9]))
    return atom_on_image(lambda e, r: cp.cvar(e, beta), ("vector",))(rng)


@family("dotsort")
def _dotsort(rng):
    def atom(e, r):
        w = np.sort(r.uniform(0, 1, int(r.integers(1, e.size + 1))))
        return cp.dotsort(e, w)

    return atom_on_image(atom, ("vector",))(rng)


@family("perspective")
def _perspective(rng):
    n = int(rng.integers(2, 4))
    x, s = cp.Variable(n, name="x"), cp.Variable(nonneg=True, name="s")
    p, t = cp.Parameter(n, name="p"), cp.Parameter(pos=True, name="t")
    f = cp.sum_squares(x) if rng.integers(2) else cp.sum_squares(x) + cp.sum(x)
    obj = cp.perspective(f, s) + reg(x, p) + reg(s, t)
    prob = cp.Problem(cp.Minimize(obj), [s <= 5])
    return independent([p, t], [normal(n), uniform((), 0.5, 2)], [x, s], prob)


# ------------------------------------------------------------------ constraint shapes


def _box_target_problem(rng, cons_of, draw_p):
    n = int(rng.integers(2, 5))
    x = cp.Variable(n, name="x")
    p = cp.Parameter(n, name="p")
    cons, params, draws = cons_of(x, n)
    prob = cp.Problem(cp.Minimize(reg(x, p)), cons)
    return independent([p, *params], [draw_p(n), *draws], [x], prob)


@family("con_none", group="constraints")
def _con_none(rng):
    n = int(rng.integers(2, 5))
    x = cp.Variable(n, name="x")
    p, c = cp.Parameter(n, name="p"), cp.Parameter(n, name="c")
    extra = cp.norm(x, 1) if rng.integers(2) else 0
    prob = cp.Problem(cp.Minimize(reg(x, p) + c @ x + extra))
    return independent([p, c], [normal(n), normal(n)], [x], prob)


@family("con_eq_fixed", group="constraints")
def _con_eq_fixed(rng):
    """x == p: every unknown fixed by an equality (eliminated entirely)."""
    n = int(rng.integers(1, 5))
    x = cp.Variable(n, name="x")
    p = cp.Parameter(n, name="p")
    obj = cp.sum_squares(x) if rng.integers(2) else cp.sum_squares(x) + cp.sum(x)
    return independent([p], [normal(n)], [x], cp.Problem(cp.Minimize(obj), [x == p]))


@family("con_eq_only", group="constraints")
def _con_eq_only(rng):
    n = int(rng.integers(2, 5))
    x = cp.Variable(n, name="x")
    m = int(rng.integers(1, n))
    A, b, p = cp.Parameter((m, n), name="A"), cp.Parameter(m, name="b"), cp.Parameter(n, name="p")
    prob = cp.Problem(cp.Minimize(reg(x, p)), [A @ x == b])
    return independent([A, b, p], [normal((m, n)), normal(m), normal(n)], [x], prob)


@family("con_ineq_only", group="constraints")
def _con_ineq_only(rng):
    def cons(x, n):
        m = int(rng.integers(1, 2 * n))
        G, h = cp.Parameter((m, n), name="G"), cp.Parameter(m, name="h")
        return [G @ x <= h], [G, h], [normal((m, n)), uniform(m, 0.1, 1.0)]

    return _box_target_problem(rng, cons, lambda n: normal(n, 2.0))


@family("con_all_active", group="constraints")
def _con_all_active(rng):
    def cons(x, n):
        u = cp.Parameter(n, name="u")
        return [x <= u], [u], [uniform(n, -1.0, 0.0)]

    return _box_target_problem(rng, cons, lambda n: uniform(n, 0.5, 2.0))


@family("con_all_inactive", group="constraints")
def _con_all_inactive(rng):
    def cons(x, n):
        u = cp.Parameter(n, name="u")
        return [x <= u, x >= -u], [u], [uniform(n, 2.0, 3.0)]

    return _box_target_problem(rng, cons, lambda n: uniform(n, -1.0, 1.0))


@family("con_redundant", group="constraints")
def _con_redundant(rng):
    def cons(x, n):
        u = cp.Parameter(n, name="u")
        out = [x <= u, 2 * x <= 2 * u, cp.sum(x) <= cp.sum(u) + 1]
        if not rng.integers(2):
            return out, [u], [uniform(n, 0.0, 1.0)]
        a = cp.Parameter(n, name="a")
        out += [a @ x == 0, 3 * (a @ x) == 0]
        return out, [u, a], [uniform(n, 0.0, 1.0), uniform(n, 0.5, 1.5)]

    return _box_target_problem(rng, cons, lambda n: normal(n, 2.0))


@family("con_mixed_cones", group="constraints")
def _con_mixed_cones(rng):
    n = int(rng.integers(2, 5))
    x = cp.Variable(n, name="x")
    p, r = cp.Parameter(n, name="p"), cp.Parameter(pos=True, name="r")
    t = cp.Parameter(pos=True, name="t")
    cons = [cp.norm(x, 2) <= r, cp.sum(cp.exp(x)) <= n + t, x >= -2]
    prob = cp.Problem(cp.Minimize(reg(x, p)), cons)
    return independent([p, r, t], [normal(n, 2.0), uniform((), 0.5, 1.5), uniform((), 0.5, 3)],
                       [x], prob)


# ------------------------------------------------------------------ variable / parameter attributes


def _attr_variable(attrs: dict, shape_kinds=("vector",)):
    def build(rng):
        shape = pick_shape(rng, shape_kinds)
        if attrs.get("diag") or attrs.get("symmetric") or attrs.get("PSD") or attrs.get("NSD"):
            n = int(rng.integers(2, 4))
            shape = (n, n)
        x = cp.Variable(shape, name="x", **attrs)
        p = cp.Parameter(shape, name="p")
        c = cp.Parameter(shape, name="c")
        prob = cp.Problem(cp.Minimize(reg(x, p) + 0.1 * cp.sum(cp.multiply(c, x))))
        return independent([p, c], [normal(shape, 1.5), normal(shape)], [x], prob)

    return build


family("var_nonneg", group="attributes")(_attr_variable({"nonneg": True}, ("vector", "matrix")))
family("var_nonpos", group="attributes")(_attr_variable({"nonpos": True}, ("vector", "matrix")))
family("var_pos", group="attributes")(_attr_variable({"pos": True}))
family("var_neg", group="attributes")(_attr_variable({"neg": True}))
family("var_bounds", group="attributes")(
    _attr_variable({"bounds": [-0.5, 0.5]}, ("scalar", "vector", "matrix")))
family("var_diag", group="attributes")(_attr_variable({"diag": True}))
family("var_symmetric", group="attributes")(_attr_variable({"symmetric": True}))
family("var_psd", group="attributes")(_attr_variable({"PSD": True}))
family("var_nsd", group="attributes")(_attr_variable({"NSD": True}))


@family("var_bounds_param", group="attributes")
def _var_bounds_param(rng):
    n = int(rng.integers(2, 5))
    lo, hi = cp.Parameter(n, name="lo"), cp.Parameter(n, name="hi")
    x = cp.Variable(n, name="x", bounds=[lo, hi])
    p = cp.Parameter(n, name="p")
    prob = cp.Problem(cp.Minimize(reg(x, p)))
    return independent([p, lo, hi], [normal(n, 1.5), uniform(n, -1, -0.2), uniform(n, 0.2, 1)],
                       [x], prob)


@family("var_complex", group="attributes")
def _var_complex(rng):
    n = int(rng.integers(2, 4))
    z = cp.Variable(n, complex=True, name="z")
    p = cp.Parameter(n, name="p")
    c = np.exp(1j * rng.uniform(0, 2 * np.pi, n))
    prob = cp.Problem(cp.Minimize(cp.sum_squares(z - cp.multiply(c, p)) + cp.norm(z, 1)))
    return independent([p], [normal(n, 2.0)], [z], prob)


@family("var_hermitian", group="attributes")
def _var_hermitian(rng):
    n = 2
    Z = cp.Variable((n, n), hermitian=True, name="Z")
    P = cp.Parameter((n, n), symmetric=True, name="P")
    prob = cp.Problem(cp.Minimize(cp.sum_squares(Z - P) - cp.real(cp.trace(Z))), [Z >> 0])
    return independent([P], [lambda r: sym(r, n)], [Z], prob)


def _attr_parameter(attrs: dict, draw_of: Callable[[tuple, np.random.Generator], np.ndarray],
                    square: bool = False):
    def build(rng):
        n = int(rng.integers(2, 4))
        shape = (n, n) if square else pick_shape(rng, ("scalar", "vector", "matrix"))
        x = cp.Variable(shape, name="x")
        c = cp.Parameter(shape, name="c", **attrs)
        p = cp.Parameter(shape, name="p")
        term = cp.sum(cp.multiply(c, x))
        if square:
            term = cp.trace(c @ x)
        prob = cp.Problem(cp.Minimize(term + reg(x, p)), [cp.sum(x) <= 3])
        return independent([c, p], [lambda r: draw_of(shape, r), normal(shape)], [x], prob)

    return build


family("param_nonneg", group="attributes")(
    _attr_parameter({"nonneg": True}, lambda s, r: r.uniform(0.1, 2, s)))
family("param_nonpos", group="attributes")(
    _attr_parameter({"nonpos": True}, lambda s, r: -r.uniform(0.1, 2, s)))
family("param_pos", group="attributes")(
    _attr_parameter({"pos": True}, lambda s, r: r.uniform(0.1, 2, s)))
family("param_neg", group="attributes")(
    _attr_parameter({"neg": True}, lambda s, r: -r.uniform(0.1, 2, s)))
family("param_symmetric", group="attributes")(
    _attr_parameter({"symmetric": True}, lambda s, r: sym(r, s[0]), square=True))
family("param_psd", group="attributes")(
    _attr_parameter({"PSD": True}, lambda s, r: spd(r, s[0]), square=True))
family("param_nsd", group="attributes")(
    _attr_parameter({"NSD": True}, lambda s, r: -spd(r, s[0]), square=True))
family("param_diag", group="attributes")(
    _attr_parameter({"diag": True}, lambda s, r: np.diag(r.standard_normal(s[0])), square=True))


@family("param_complex", group="attributes")
def _param_complex(rng):
    n = int(rng.integers(2, 4))
    z = cp.Variable(n, complex=bool(rng.integers(2)), name="z")
    p = cp.Parameter(n, complex=True, name="p")
    prob = cp.Problem(cp.Minimize(cp.sum_squares(z - p) + 0.1 * cp.sum_squares(z)))
    return independent([p], [lambda r: r.standard_normal(n) + 1j * r.standard_normal(n)],
                       [z], prob)


# ------------------------------------------------------------------ Maximize, duals


@family("maximize_concave", group="maximize", flip=False)
def _maximize_concave(rng):
    n = int(rng.integers(2, 5))
    x = cp.Variable(n, name="x")
    p, c = cp.Parameter(n, name="p"), cp.Parameter(n, pos=True, name="c")
    kind = int(rng.integers(3))
    concave = [cp.sum(cp.log(x + 2)), cp.min(x), cp.sum(cp.sqrt(x + 3))][kind]
    prob = cp.Problem(cp.Maximize(concave - reg(x, p) + c @ x), [x <= 2])
    return independent([p, c], [normal(n), uniform(n, 0.1, 1)], [x], prob)


@family("maximize_quad_form", group="maximize", flip=False)
def _maximize_quad_form(rng):
    n = int(rng.integers(2, 4))
    x = cp.Variable(n, name="x")
    q = cp.Parameter(n, name="q")
    if rng.integers(2):
        Q = cp.Parameter((n, n), PSD=True, name="Q")
        obj = -cp.quad_form(x, Q) + q @ x
        draw = lambda r: spd(r, n)
    else:
        Q = cp.Parameter((n, n), NSD=True, name="N")
        obj = cp.quad_form(x, Q) + q @ x
        draw = lambda r: -spd(r, n)
    prob = cp.Problem(cp.Maximize(obj), [cp.norm(x, 1) <= 3])
    return independent([Q, q], [draw, normal(n)], [x], prob)


@family("dual_eq_ineq", group="duals")
def _dual_eq_ineq(rng):
    n = int(rng.integers(3, 5))
    x = cp.Variable(n, name="x")
    A, G, h = cp.Parameter((1, n), name="A"), cp.Parameter((2, n), name="G"), cp.Parameter(2)
    q = cp.Parameter(n, name="q")
    eq, ineq = A @ x == 0, G @ x <= h
    prob = cp.Problem(cp.Minimize(reg(x, q)), [eq, ineq])
    return independent([A, G, h, q],
                       [normal((1, n)), normal((2, n)), uniform(2, 0.01, 0.3), normal(n, 3.0)],
                       [x, eq.dual_variables[0], ineq.dual_variables[0]], prob)


@family("dual_bounds", group="duals")
def _dual_bounds(rng):
    n = int(rng.integers(2, 5))
    x = cp.Variable(n, name="x")
    p, u = cp.Parameter(n, name="p"), cp.Parameter(n, name="u")
    up, lo = x <= u, x >= -1
    prob = cp.Problem(cp.Minimize(reg(x, p)), [up, lo])
    return independent([p, u], [normal(n, 2.0), uniform(n, 0.2, 1.0)],
                       [x, up.dual_variables[0], lo.dual_variables[0]], prob)


@family("dual_soc", group="duals")
def _dual_soc(rng):
    n = int(rng.integers(2, 4))
    x = cp.Variable(n, name="x")
    t = cp.Variable(name="t")
    c = cp.Parameter(n, name="c")
    soc = cp.SOC(t, x)
    prob = cp.Problem(cp.Minimize(c @ x + 2 * t + 0.1 * cp.sum_squares(x)), [soc, t <= 2])
    return independent([c], [normal(n, 3.0)], [x, soc.dual_variables[0], soc.dual_variables[1]],
                       prob)


@family("dual_psd", group="duals")
def _dual_psd(rng):
    n = int(rng.integers(2, 4))
    X = cp.Variable((n, n), symmetric=True, name="X")
    C = cp.Parameter((n, n), symmetric=True, name="C")
    psd = X >> 0
    prob = cp.Problem(cp.Minimize(cp.trace(C @ X) + 0.5 * cp.sum_squares(X)), [psd])
    return independent([C], [lambda r: sym(r, n)], [X, psd.dual_variables[0]], prob)


@family("dual_exp", group="duals")
def _dual_exp(rng):
    a = cp.Parameter(pos=True, name="a")
    x, y, z = cp.Variable(name="x"), cp.Variable(name="y"), cp.Variable(name="z")
    ec = cp.constraints.ExpCone(x, y, z)
    prob = cp.Problem(cp.Minimize(z - a * x + cp.square(y - 1) + cp.square(x)), [ec])
    return independent([a], [uniform((), 0.5, 2)], [x, y, z, ec.dual_variables[0]], prob)


@family("dual_pow", group="duals")
def _dual_pow(rng):
    alpha = float(rng.choice([0.3, 0.5, 0.7]))
    c = cp.Parameter(2, name="c")
    x, y, z = cp.Variable(name="x"), cp.Variable(name="y"), cp.Variable(name="z")
    pc = cp.constraints.PowCone3D(x, y, z, alpha)
    obj = -z + c[0] * x + c[1] * y + cp.square(x - 1) + cp.square(y - 1) + cp.square(z)
    prob = cp.Problem(cp.Minimize(obj), [pc])
    return independent([c], [normal(2, 0.5)], [x, y, z, pc.dual_variables[0]], prob)


@family("dual_redundant_eq", group="duals", unique=False)
def _dual_redundant_eq(rng):
    n = int(rng.integers(2, 4))
    x = cp.Variable(n, name="x")
    p = cp.Parameter(n, name="p")
    e1, e2 = cp.sum(x) == 1, 2 * cp.sum(x) == 2
    prob = cp.Problem(cp.Minimize(reg(x, p)), [e1, e2])
    return independent([p], [normal(n)], [x, e1.dual_variables[0]], prob)


@family("lp_vertex", group="constraints", unique=False, smooth=False)
def _lp_vertex(rng):
    n = int(rng.integers(2, 5))
    x = cp.Variable(n, name="x")
    c = cp.Parameter(n, name="c")
    prob = cp.Problem(cp.Minimize(c @ x), [x >= -1, x <= 1, cp.sum(x) <= 1])
    return independent([c], [normal(n)], [x], prob)


# ------------------------------------------------------------------ DGP (gp=True)


def _pos(name=None):
    return cp.Variable(pos=True, name=name)


@family("gp_monomial", group="gp", gp=True)
def _gp_monomial(rng):
    x, y = _pos("x"), _pos("y")
    a, b = cp.Parameter(pos=True, name="a"), cp.Parameter(pos=True, name="b")
    prob = cp.Problem(cp.Minimize(1 / (x * y**2)), [x <= a, y <= b, x * y <= 3])
    return independent([a, b], [uniform((), 0.5, 1.5), uniform((), 0.5, 1.5)], [x, y], prob)


@family("gp_posynomial", group="gp", gp=True)
def _gp_posynomial(rng):
    x, y = _pos("x"), _pos("y")
    a, b = cp.Parameter(pos=True, name="a"), cp.Parameter(pos=True, name="b")
    prob = cp.Problem(cp.Minimize(x + y + a / (x * y) + b * x / y))
    return independent([a, b], [uniform((), 0.5, 2), uniform((), 0.5, 2)], [x, y], prob)


@family("gp_box", group="gp", gp=True)
def _gp_box(rng):
    a, b = cp.Parameter(pos=True, name="a"), cp.Parameter(pos=True, name="b")
    x, y, z = _pos("x"), _pos("y"), _pos("z")
    prob = cp.Problem(cp.Minimize(1 / (x * y * z)),
                      [a * (x * y + x * z + y * z) <= b, x >= 0.5 * y, x <= 2 * y])
    return independent([a, b], [uniform((), 1, 2), uniform((), 2, 4)], [x, y, z], prob)


@family("gp_exponent_param", group="gp", gp=True)
def _gp_exponent_param(rng):
    a, b = cp.Parameter(pos=True, name="a"), cp.Parameter(pos=True, name="b")
    c = cp.Parameter(name="c")
    x, y, z = _pos("x"), _pos("y"), _pos("z")
    prob = cp.Problem(cp.Minimize(1 / (x * y * z)),
                      [a * (x * y + x * z + y * z) <= b, x >= y**c, x <= 3 * y])
    return independent([a, b, c], [uniform((), 1.5, 2.5), uniform((), 0.8, 1.2),
                                   uniform((), 0.3, 0.8)], [x, y, z], prob)


@family("gp_max", group="gp", gp=True)
def _gp_max(rng):
    x, y = _pos("x"), _pos("y")
    a, b = cp.Parameter(pos=True, name="a"), cp.Parameter(pos=True, name="b")
    prob = cp.Problem(cp.Minimize(cp.maximum(a * x, b / x) + y + 1 / y))
    return independent([a, b], [uniform((), 0.5, 2), uniform((), 0.5, 2)], [x, y], prob)


@family("gp_one_minus_pos", group="gp", gp=True)
def _gp_one_minus_pos(rng):
    x, y = _pos("x"), _pos("y")
    b = cp.Parameter(pos=True, name="b")
    prob = cp.Problem(cp.Maximize(x * y), [y <= b * cp.one_minus_pos(x), x <= 0.9])
    return independent([b], [uniform((), 0.5, 2)], [x, y], prob)


@family("gp_pf_eigenvalue", group="gp", gp=True)
def _gp_pf_eigenvalue(rng):
    X = cp.Variable((2, 2), pos=True, name="X")
    a, b = cp.Parameter(pos=True, name="a"), cp.Parameter(pos=True, name="b")
    cons = [X[0, 0] == a, X[1, 1] == b, X[0, 1] * X[1, 0] >= 1.0, X[0, 1] <= 4 * X[1, 0],
            X[1, 0] <= 4 * X[0, 1]]
    prob = cp.Problem(cp.Minimize(cp.pf_eigenvalue(X) + X[0, 1] + X[1, 0]), cons)
    return independent([a, b], [uniform((), 0.5, 2), uniform((), 0.5, 2)], [X], prob)


@family("gp_dual", group="gp", gp=True)
def _gp_dual(rng):
    x, y = _pos("x"), _pos("y")
    a = cp.Parameter(pos=True, name="a")
    con = x * y >= a
    prob = cp.Problem(cp.Minimize(x + 2 * y), [con])
    return independent([a], [uniform((), 0.5, 2)], [x, y, con.dual_variables[0]], prob)


@family("gp_vector", group="gp", gp=True)
def _gp_vector(rng):
    n = int(rng.integers(2, 4))
    x = cp.Variable(n, pos=True, name="x")
    c = cp.Parameter(n, pos=True, name="c")
    prob = cp.Problem(cp.Minimize(cp.sum(cp.multiply(c, x)) + cp.sum(1 / x)),
                      [cp.prod(x) >= 0.5])
    return independent([c], [uniform(n, 0.5, 2)], [x], prob)


# ------------------------------------------------------------------ cases dpplayers must refuse


def _qp(n, **var_attrs):
    x = cp.Variable(n, name="x", **var_attrs)
    p = cp.Parameter(n, name="p")
    return x, p, reg(x, p)


@family("refuse_integer", group="refusals", refuse=True, smooth=False, flip=False)
def _refuse_integer(rng):
    kind = ["integer", "boolean"][int(rng.integers(2))]
    x, p, obj = _qp(int(rng.integers(2, 4)), **{kind: True})
    return independent([p], [normal(x.shape)], [x], cp.Problem(cp.Minimize(obj), [x <= 3]))


@family("refuse_non_dpp", group="refusals", refuse=True, smooth=False, flip=False)
def _refuse_non_dpp(rng):
    x, p, obj = _qp(int(rng.integers(2, 4)))
    a = cp.Parameter(name="a")
    term = [a * a * cp.sum(x), cp.sum(p) * (p @ x), a * cp.norm(x - p, 2)][int(rng.integers(3))]
    cons = [x <= 3]
    if term.is_dcp():
        cons.append(cp.abs(a) * x[0] <= 1)  # |a| of a parameter: non-DPP in any case
    return independent([p, a], [normal(x.shape), uniform((), 0.5, 1)], [x],
                       cp.Problem(cp.Minimize(obj + term), cons))


@family("refuse_infeasible", group="refusals", refuse=True, smooth=False, flip=False)
def _refuse_infeasible(rng):
    x, p, obj = _qp(int(rng.integers(2, 4)))
    u = cp.Parameter(name="u")
    return independent([p, u], [normal(x.shape), uniform((), 0.5, 1)], [x],
                       cp.Problem(cp.Minimize(obj), [x >= u, cp.sum(x) <= -u]))


@family("refuse_unbounded", group="refusals", refuse=True, smooth=False, flip=False)
def _refuse_unbounded(rng):
    n = int(rng.integers(2, 4))
    x = cp.Variable(n, name="x")
    c = cp.Parameter(n, name="c")
    return independent([c], [uniform(n, 0.5, 1)], [x],
                       cp.Problem(cp.Minimize(c @ x), [x <= 1]))


def _spoil(kind: str) -> Callable[[list], list]:
    def mutate(values: list) -> list:
        out = list(values)
        if kind == "none":
            out[0] = None
        elif kind == "nan":
            out[0] = np.full(np.shape(out[0]), np.nan)
        elif kind == "shape":
            out[0] = np.zeros(np.shape(out[0])[-1] + 1)  # one entry too many (not a batch)
        else:  # one value too few
            out = out[:-1]
        return out

    return mutate


@family("refuse_bad_values", group="refusals", refuse=True, smooth=False, flip=False)
def _refuse_bad_values(rng):
    x, p, obj = _qp(int(rng.integers(2, 4)))
    u = cp.Parameter(pos=True, name="u")
    built = independent([p, u], [normal(x.shape), uniform((), 0.5, 1)], [x],
                        cp.Problem(cp.Minimize(obj), [x <= u]))
    kind = ["none", "nan", "shape", "count"][int(rng.integers(4))]
    return Built(built.problem, built.parameters, built.outputs, built.sample, built.free,
                 _spoil(kind))


@family("lp_medium", group="constraints", flip=False)
def _lp_medium(rng):
    """An LP the size of issue #17's SCS stall (reduced: 60 variables, 150 rows)."""
    n, m = 60, 150
    A = rng.standard_normal((m, n))
    x0 = rng.standard_normal(n)
    b = cp.Parameter(m, name="b")
    c = cp.Parameter(n, name="c")
    x = cp.Variable(n, name="x")
    prob = cp.Problem(cp.Minimize(c @ x), [A @ x <= b])

    def sample(r):
        lam = r.uniform(0, 1, m) * (r.uniform(0, 1, m) < 0.5)
        return [A @ x0 + r.uniform(0.1, 1.0, m), -A.T @ lam]

    return Built(prob, (b, c), (x,), sample, ())


# The dense QP route (dpplayers/_solve/qp_route.py) takes LPs and QPs of MIN_ORDER <= n + m
# <= MAX_ORDER with dense data in batches of MIN_BATCH or more: these families are built
# for it and always solved as a "route" batch of MIN_BATCH elements.


def _optnet_data(rng, Q, n: int, n_ineq: int, n_eq: int):
    """(q, G, h, A, b, z) for min ½zᵀQz + qᵀz, Gz <= h, Az = b with the chosen solution z:
    about half the rows active with multipliers in [0.2, 1], the others inactive by a
    margin in [0.1, 1] (strictly complementary: the solution map is smooth)."""
    z = rng.uniform(-0.5, 0.5, n)
    G, A = rng.standard_normal((n_ineq, n)), rng.standard_normal((n_eq, n))
    active = rng.uniform(size=n_ineq) < 0.5
    lam = np.where(active, rng.uniform(0.2, 1.0, n_ineq), 0.0)
    h = G @ z + np.where(active, 0.0, rng.uniform(0.1, 1.0, n_ineq))
    q = -(Q @ z + G.T @ lam + A.T @ rng.standard_normal(n_eq))
    return q, G, h, A, A @ z, z


def _optnet_built(n: int, n_ineq: int, n_eq: int, equalities_first: bool = False) -> Built:
    """An OptNet QP, every datum a parameter: ½zᵀQz + qᵀz, Gz <= h, Az = b."""
    z = cp.Variable(n, name="z")
    Q = cp.Parameter((n, n), PSD=True, name="Q")
    q, G, h = cp.Parameter(n, name="q"), cp.Parameter((n_ineq, n), name="G"), \
        cp.Parameter(n_ineq, name="h")
    A, b = cp.Parameter((n_eq, n), name="A"), cp.Parameter(n_eq, name="b")
    ineq, eq = G @ z <= h, A @ z == b
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(z, Q) + q @ z),
                      [eq, ineq] if equalities_first else [ineq, eq])

    def sample(r):
        Q0 = spd(r, n, 0.5)
        return [Q0, *_optnet_data(r, Q0, n, n_ineq, n_eq)[:5]]

    return Built(prob, (Q, q, G, h, A, b), (z, ineq.dual_variables[0]), sample, ())


@family("qp_route_dense", group="qp_route", batches=("route",))
def _qp_route_dense(rng):
    """An OptNet QP (every datum a parameter, dense) of n + m >= 66: the dense route."""
    return _optnet_built(int(rng.integers(36, 45)), 24, 6)


@family("qp_route_equalities", group="qp_route", batches=("route",))
def _qp_route_equalities(rng):
    """An OptNet QP with 20-26 equality rows: the dense route eliminates them once per
    element by LAPACK (qp_systems.Equalities, of order >= LOOP_MIN_ORDER)."""
    return _optnet_built(int(rng.integers(40, 51)), 20, int(rng.integers(20, 27)),
                         equalities_first=True)


@family("lp_route_dense", group="qp_route", flip=False, batches=("route",))
def _lp_route_dense(rng):
    """An LP with 3n dense halfspaces (a parameter) in a box: the dense route's LP side."""
    n = int(rng.integers(16, 25))
    k = 3 * n
    x = cp.Variable(n, name="x")
    c, G, h = cp.Parameter(n, name="c"), cp.Parameter((k, n), name="G"), \
        cp.Parameter(k, name="h")
    prob = cp.Problem(cp.Minimize(c @ x), [G @ x <= h, x >= -1, x <= 1])

    def sample(r):
        G0 = r.standard_normal((k, n))
        return [r.standard_normal(n), G0, G0 @ r.uniform(-0.5, 0.5, n) + r.uniform(0.1, 1, k)]

    return Built(prob, (c, G, h), (x,), sample, ())


@family("qp_route_duplicated_rows", group="qp_route", batches=("route",))
def _qp_route_duplicated_rows(rng):
    """The dense route on a QP whose active row 0 appears three times (constant rows, one
    parameter bound: the copies stay copies): multipliers are not unique, x is."""
    n, n_ineq, n_eq = int(rng.integers(36, 45)), 24, 6
    z = cp.Variable(n, name="z")
    Q0 = spd(rng, n, 0.5)
    q, G, h = cp.Parameter(n, name="q"), cp.Parameter((n_ineq, n), name="G"), \
        cp.Parameter(n_ineq, name="h")
    A, b = cp.Parameter((n_eq, n), name="A"), cp.Parameter(n_eq, name="b")
    g, t = rng.standard_normal(n), cp.Parameter(name="t")
    rows = [g @ z <= t for _ in range(3)]
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(z, Q0) + q @ z),
                      [G @ z <= h, A @ z == b, *rows])

    def sample(r):  # the copies active at z0 with multipliers summing to mu
        q0, G0, h0, A0, b0, z0 = _optnet_data(r, Q0, n, n_ineq, n_eq)
        return [q0 - r.uniform(0.2, 1.0) * g, G0, h0, A0, b0, np.array(g @ z0)]

    return Built(prob, (q, G, h, A, b, t), (z,), sample, ())


@family("batch_partial_failure", group="batch", partial=True, flip=False)
def _batch_partial_failure(rng):
    """Batch element 1 infeasible: with on_failure="nan" it comes back NaN and the others
    keep exact values and derivatives."""
    n = int(rng.integers(2, 5))
    x = cp.Variable(n, name="x")
    p, s = cp.Parameter(n, name="p"), cp.Parameter(name="s")
    term = [0, cp.norm(x, 1), cp.sum(cp.exp(0.5 * x)), cp.norm(x, 2)][int(rng.integers(4))]
    prob = cp.Problem(cp.Minimize(reg(x, p) + term), [x >= -1, cp.sum(x) <= s])

    def spoil(inputs: list) -> list:
        s_values = np.array(inputs[1], dtype=float)
        s_values[1] = -n - 1.0  # below the least sum(x) can be
        return [inputs[0], s_values]

    return Built(prob, (p, s), (x,),
                 lambda r: [2 * r.standard_normal(n), np.array(r.uniform(0, 1))],
                 (0, 1), spoil)


@family("refuse_foreign_output", group="refusals", refuse=True, smooth=False, flip=False)
def _refuse_foreign_output(rng):
    x, p, obj = _qp(int(rng.integers(2, 4)))
    other = cp.Variable(x.shape, name="not_in_problem")
    outputs = [x, other] if rng.integers(2) else [other]
    return independent([p], [normal(x.shape)], outputs, cp.Problem(cp.Minimize(obj)))


# ------------------------------------------------------------------ scaling, outputs, duals' sides


@family("scaled_data", group="constraints")
def _scaled_data(rng):
    """Data of scale 1e-3 or 1e3: thresholds inside the derivative must be relative."""
    scale = float(rng.choice([1e-3, 1e3]))
    n, m = int(rng.integers(2, 5)), int(rng.integers(1, 4))
    x = cp.Variable(n, name="x")
    p, G, h = cp.Parameter(n, name="p"), cp.Parameter((m, n), name="G"), cp.Parameter(m)
    prob = cp.Problem(cp.Minimize(reg(x, p) + 0.1 * scale * cp.norm(x, 1)), [G @ x <= h])
    built = independent([p, G, h], [normal(n, 2 * scale), normal((m, n)),
                                    uniform(m, 0.1 * scale, scale)], [x], prob)
    return Built(built.problem, built.parameters, built.outputs, built.sample, built.free,
                 value_scale=scale)


@family("outputs_subset", group="attributes")
def _outputs_subset(rng):
    """Some variables only, one twice, or in another order than the problem's."""
    n = int(rng.integers(2, 4))
    x, y = cp.Variable(n, name="x"), cp.Variable((2, n), name="y")
    p, Q = cp.Parameter(n, name="p"), cp.Parameter((2, n), name="Q")
    con = cp.sum(y, axis=0) == x
    prob = cp.Problem(cp.Minimize(reg(x, p) + reg(y, Q)), [con])
    outputs = [[y], [y, x, y], [con.dual_variables[0], x], [x, x]][int(rng.integers(4))]
    return independent([p, Q], [normal(n), normal((2, n))], outputs, prob)


@family("dual_sides", group="duals")
def _dual_sides(rng):
    """Duals of ≥, ≤ written either way round, with parameters on both sides."""
    n = int(rng.integers(2, 4))
    x = cp.Variable(n, name="x")
    p, lo, hi = cp.Parameter(n, name="p"), cp.Parameter(n, name="lo"), cp.Parameter(n, name="hi")
    a = cp.Parameter(n, name="a")
    cons = [lo <= x, hi >= x, x - lo >= -1, a @ x == 0.1 * a[0]]
    prob = cp.Problem(cp.Minimize(reg(x, p)), cons)
    return independent([p, lo, hi, a], [normal(n, 2), uniform(n, -1, -0.3), uniform(n, 0.3, 1),
                                        uniform(n, 0.5, 1.5)],
                       [x, *[c.dual_variables[0] for c in cons]], prob)


@family("param_expressions", group="attributes")
def _param_expressions(rng):
    """Affine expressions of parameters: transpose, slices, reversal, stacking, sums."""
    n = int(rng.integers(2, 4))
    x = cp.Variable(n, name="x")
    p, q = cp.Parameter(n, name="p"), cp.Parameter(n, name="q")
    A = cp.Parameter((n, n), name="A")
    kind = int(rng.integers(4))
    target = [2 * p + 1 - q, p[::-1] + cp.sum(q), A.T @ p,
              cp.hstack([p[:1], q[1:]]) + A[0, :]][kind]
    obj = reg(x, target) + cp.norm(x - q, 1) + 0.1 * cp.sum(A @ x)
    prob = cp.Problem(cp.Minimize(obj), [cp.sum(x) <= cp.sum(p) + 3])
    return independent([p, q, A], [normal(n), normal(n), normal((n, n))], [x], prob)


@family("shape_edges", group="attributes")
def _shape_edges(rng):
    """Size-1 and column/row shapes: (1,), (1, 1), (n, 1), (1, n)."""
    n = int(rng.integers(2, 4))
    shape = [(1,), (1, 1), (n, 1), (1, n)][int(rng.integers(4))]
    x = cp.Variable(shape, name="x")
    p = cp.Parameter(shape, name="p")
    a = cp.Parameter(shape, nonneg=True, name="a")
    prob = cp.Problem(cp.Minimize(reg(x, p) + cp.sum(cp.multiply(a, cp.abs(x)))), [x <= 1])
    return independent([p, a], [normal(shape, 2), uniform(shape, 0.1, 0.5)], [x], prob)


@family("dual_psd_general", group="duals")
def _dual_psd_general(rng):
    """X >> 0 on a general (not declared symmetric) variable, and an LMI in a vector."""
    n = int(rng.integers(2, 4))
    X = cp.Variable((n, n), name="X")
    C = cp.Parameter((n, n), name="C")
    psd = X + X.T >> 0
    lmi_x = cp.Variable(n, name="y")
    lmi = cp.diag(lmi_x) + np.ones((n, n)) >> 0
    obj = cp.sum_squares(X - C) + cp.sum_squares(lmi_x + cp.diag(C))
    prob = cp.Problem(cp.Minimize(obj), [psd, lmi])
    return independent([C], [normal((n, n), 1.5)], [X, lmi_x, psd.dual_variables[0],
                                                   lmi.dual_variables[0]], prob)


@family("empty_batch", group="refusals", refuse=True, smooth=False, flip=False)
def _empty_batch(rng):
    """A batch of 0 elements: refused by name, or answered with empty outputs."""
    x, p, obj = _qp(int(rng.integers(2, 4)))
    u = cp.Parameter(pos=True, name="u")
    built = independent([p, u], [normal(x.shape), uniform((), 0.5, 1)], [x],
                        cp.Problem(cp.Minimize(obj + cp.norm(x, 1)), [x <= u]))
    def empty(values: list) -> list:
        return [np.zeros((0, *p.shape)) for p in built.parameters]

    return Built(built.problem, built.parameters, built.outputs, built.sample, built.free, empty)


@family("medium_mixed", group="constraints")
def _medium_mixed(rng):
    """30 variables, every cone at once: larger KKT systems than the small families."""
    n, m = 30, 20
    x = cp.Variable(n, name="x")
    p, G, h = cp.Parameter(n, name="p"), cp.Parameter((m, n), name="G"), cp.Parameter(m, name="h")
    C = cp.Parameter((4, 4), symmetric=True, name="C")
    r = cp.Parameter(pos=True, name="r")
    obj = (reg(x, p) + cp.sum(cp.exp(x / 5)) + cp.lambda_max(C + cp.diag(x[:4]))
           + cp.pnorm(x[4:10], 3) + cp.norm(x[10:], 1) / 10)
    prob = cp.Problem(cp.Minimize(obj), [G @ x <= h, cp.norm(x, 2) <= r])
    return independent([p, G, h, C, r], [normal(n, 2), normal((m, n)), uniform(m, 0.1, 1),
                                         lambda r_: sym(r_, 4), uniform((), 2, 4)], [x], prob)


@family("soc_projection_large", group="constraints")
def _soc_projection_large(rng):
    """Projection onto a second-order cone of dimension 18-30: cvxpy's sum_squares gives J
    a 2×2 pair per entry and S ≥ 16 leading diagonal pivots (the batched solve's diagonal
    elimination, ``pair_pivots.DIAGONAL_MIN``), and AᵀD of a cone block of order ≥ 6 as a
    dense product (``pattern.DENSE_BLOCK``)."""
    n = int(rng.integers(18, 31))
    x = cp.Variable(n, name="x")
    y = cp.Parameter(n, name="y")
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [cp.norm(x[1:], 2) <= x[0]])
    return independent([y], [normal(n, 1.0)], [x], prob)


def _soc_norm(rng, m: int, n: int):
    """‖F x − g‖₂ + ½‖x − p‖² with x ≤ 1.5, F m × n: one SOC of dimension m + 1."""
    F = sp.random_array((m, n), density=min(1.0, 30 / m), rng=rng,
                        data_sampler=rng.standard_normal).toarray() + 0.1
    x, g, p = cp.Variable(n, name="x"), cp.Parameter(m, name="g"), cp.Parameter(n, name="p")
    prob = cp.Problem(cp.Minimize(cp.norm(F @ x - g, 2) + 0.5 * cp.sum_squares(x - p)),
                      [x <= 1.5])  # rows the lifted ones do not meet: the update stops short
    return independent([g, p], [normal(m, 1.0), normal(n, 1.0)], [x], prob)


@family("soc_norm_large", group="constraints")
def _soc_norm_large(rng):
    """A second-order cone of dimension 41-61, lifted out of J (``lifting.LIFT_MIN_DIM``):
    its rows are divided out of the batched solve's S as leading diagonal pivots whose
    update reaches only x, t and the two extra unknowns (``pair_pivots``' reach)."""
    return _soc_norm(rng, int(rng.integers(40, 61)), int(rng.integers(6, 10)))


@family("soc_norm_huge", group="constraints")
def _soc_norm_huge(rng):
    """A second-order cone of dimension 31-41 meeting 210-230 variables: even with the
    lifted rows divided out, the batched solve's LU would be beyond its order
    (``plan.DENSE_ORDER``, on the LU's order), so Direct factorises J̃ (``LiftedDirect``)."""
    return _soc_norm(rng, int(rng.integers(30, 41)), int(rng.integers(210, 231)))


@family("simplex_projection", group="constraints")
def _simplex_projection(rng):
    """sparsemax: the projection of y onto the probability simplex, n of 20-40. After the
    x's are divided out, each bound x_i ≥ 0 meets only Σ x = 1: the batched solve divides
    those rows out too and factorises an LU of order 1 (``pair_pivots._solve_split``), up
    to n ≈ 24; from there J's band LU with Σ x = 1 as its border costs less (``banded``)."""
    n = int(rng.integers(20, 41))
    x = cp.Variable(n, name="x")
    y = cp.Parameter(n, name="y")
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [cp.sum(x) == 1, x >= 0])
    return independent([y], [normal(n, 1.0)], [x], prob)


@family("psd_projection_large", group="constraints")
def _psd_projection_large(rng):
    """Projection of a symmetric C onto {X ⪰ 0, tr X = 1} with X of order 11-13: the PSD
    block's derivative (svec order 66-91, above ``cones._operators.DENSE_MV_MAX``) is
    written out over the fewer of its columns with b ≠ 0 or b ≠ 1 (``_sum_over``)."""
    k = int(rng.integers(11, 14))
    X = cp.Variable((k, k), symmetric=True, name="X")
    C = cp.Parameter((k, k), symmetric=True, name="C")
    prob = cp.Problem(cp.Minimize(cp.sum_squares(X - C)), [X >> 0, cp.trace(X) == 1])
    return independent([C], [lambda r: sym(r, k) / np.sqrt(k)], [X], prob)


@family("psd_tiles", group="constraints")
def _psd_tiles(rng):
    """A PSD block of order d = 153-190 (X of order 17-19) whose rows of A hold one entry
    each, so that the batched derivative writes D's block and AᵀD as tiles at every batch
    size (2 d² ≥ ``tiles.TILE_MIN_ENTRIES``): a nearest correlation matrix, or a spectraplex
    projection whose PSD block has a constant border (rows with no entry of A)."""
    k = int(rng.integers(17, 20))
    X = cp.Variable((k, k), symmetric=True, name="X")
    C = cp.Parameter((k, k), symmetric=True, name="C")
    if rng.uniform() < 0.5:
        prob = cp.Problem(cp.Minimize(cp.sum_squares(X - C)), [X >> 0, cp.diag(X) == 1])
        return independent([C], [lambda r: np.eye(k) + 0.5 * sym(r, k) / np.sqrt(k)], [X],
                           prob)
    border = cp.bmat([[X, np.zeros((k, 1))], [np.zeros((1, k)), np.ones((1, 1))]])
    prob = cp.Problem(cp.Minimize(cp.sum_squares(X - C)), [border >> 0, cp.trace(X) == 1])
    return independent([C], [lambda r: sym(r, k) / np.sqrt(k)], [X], prob)


@family("lp_filled_basis", group="constraints", flip=False)
def _lp_filled_basis(rng):
    """A standard-form LP (1,000 variables, 500 rows, 1% random A plus a ±3 entry per row on
    a basis) at a non-degenerate vertex: its basis of order 500 fills SuperLU's factors, so
    the program's later factorisations are dense and in single precision, refined to double
    (``plan.DENSE_FRACTION``, ``linear_solvers.MIXED_MIN_ORDER``)."""
    n, m = 1000, 500
    basis = rng.permutation(n)[:m]
    A = (sp.random_array((m, n), density=0.01, format="csc", rng=rng,
                         data_sampler=rng.standard_normal)
         + sp.csc_array((3.0 * rng.choice([-1.0, 1.0], m), (np.arange(m), basis)),
                        shape=(m, n))).tocsc()
    x, c, b = cp.Variable(n, name="x"), cp.Parameter(n, name="c"), cp.Parameter(m, name="b")
    prob = cp.Problem(cp.Minimize(c @ x), [A @ x == b, x >= 0])

    def sample(r):
        x0 = np.zeros(n)
        x0[basis] = r.uniform(0.5, 1.5, m)
        slack = r.uniform(0.1, 1.0, n)
        slack[basis] = 0.0
        return [A.T @ r.standard_normal(m) + slack, A @ x0]

    return Built(prob, (c, b), (x,), sample, ())


@family("lasso_box", group="constraints")
def _lasso_box(rng):
    """A lasso with a box (F 100 × 50, every datum a parameter): J's order after pair
    elimination is 300 and a tenth full, above the batched solve's limit; each element's
    inactive box rows bring it below, so the batched solve drops them per element
    (``_derivative/inactive_rows.py``)."""
    m, n = 100, 50
    F, g = cp.Parameter((m, n), name="F"), cp.Parameter(m, name="g")
    lam = cp.Parameter(nonneg=True, name="lam")
    x = cp.Variable(n, name="x")
    prob = cp.Problem(cp.Minimize(cp.sum_squares(F @ x - g) + lam * cp.norm1(x)),
                      [x >= -1, x <= 1])
    return independent([F, g, lam], [normal((m, n)), normal(m, 3.0), uniform((), 0.5, 2.0)],
                       [x], prob)


@family("abs_box", group="constraints")
def _abs_box(rng):
    """Least squares in a box written ``abs(x) <= c`` (F 30 × 20, every datum a parameter):
    cvxpy's t with |x| ≤ t ≤ c is free wherever |x| < c, so J is singular there; the batched
    solve drops such t with the inactive rows (z_t = 0), as ``Direct`` does."""
    m, n = 30, 20
    F, g = cp.Parameter((m, n), name="F"), cp.Parameter(m, name="g")
    c = cp.Parameter(pos=True, name="c")
    x = cp.Variable(n, name="x")
    prob = cp.Problem(cp.Minimize(cp.sum_squares(F @ x - g) + 0.1 * cp.sum_squares(x)),
                      [cp.abs(x) <= c])
    return independent([F, g, c], [normal((m, n)), normal(m, 3.0), uniform((), 0.2, 0.5)],
                       [x], prob)


@family("abs_box_large", group="constraints")
def _abs_box_large(rng):
    """An MPC over 80 steps with |u| ≤ 1 written ``abs(u) <= 1`` (cvxpy's t free wherever
    |u| < 1): J's LU stays above the batched solve's limit once the inactive rows are
    dropped, so each element is ``Direct``'s, which leaves its free t out of the core
    before factorising."""
    nx, nu, T = 4, 2, 80
    A = np.eye(nx) + 0.1 * rng.standard_normal((nx, nx))
    B = rng.standard_normal((nx, nu))
    x, u = cp.Variable((nx, T + 1), name="x"), cp.Variable((nu, T), name="u")
    x0 = cp.Parameter(nx, name="x0")
    Q = rng.standard_normal((nx, nx))
    cost = cp.sum_squares(Q @ x) + 0.1 * cp.sum_squares(u)
    cons = [x[:, 0] == x0, x[:, 1:] == A @ x[:, :-1] + B @ u, cp.abs(u) <= 1]
    return independent([x0], [normal(nx, 3.0)], [u], cp.Problem(cp.Minimize(cost), cons))


def _box_mpc(rng, steps: tuple[int, int], repeat_x0: bool = False) -> Built:
    """An MPC (3 states, 2 inputs) over a horizon drawn from ``steps``, |u| ≤ 1 as two
    inequalities; with ``repeat_x0`` its initial condition stated a second time."""
    nx, nu, T = 3, 2, int(rng.integers(*steps))
    A = np.eye(nx) + 0.1 * rng.standard_normal((nx, nx))
    B = rng.standard_normal((nx, nu))
    x, u = cp.Variable((nx, T + 1), name="x"), cp.Variable((nu, T), name="u")
    x0 = cp.Parameter(nx, name="x0")
    cost = cp.sum_squares(x) + 0.1 * cp.sum_squares(u)
    cons = [x[:, 0] == x0, x[:, 1:] == A @ x[:, :-1] + B @ u, u <= 1, u >= -1]
    if repeat_x0:
        cons.append(x[:, 0] == x0)
    return independent([x0], [normal(nx, 3.0)], [u], cp.Problem(cp.Minimize(cost), cons))


@family("mpc_box", group="constraints")
def _mpc_box(rng):
    """An MPC over 8–15 steps with |u| ≤ 1 as two inequalities (every cone a 1×1 block, no
    auxiliary to leave free): J in stage order lies within a narrow band, the band LU
    (``_derivative/banded.py``)."""
    return _box_mpc(rng, (8, 16))


@family("mpc_repeated_x0", group="constraints")
def _mpc_repeated_x0(rng):
    """An MPC over 12–15 steps whose initial condition is stated twice (a constraint list
    built in a loop that adds it once more): the two copies' duals are not unique, so J is
    singular at every solution. J still lies within a narrow band, and the band LU declines
    each element (``_derivative/banded.py``); the minimum-norm answer gives u's derivative,
    which the repeated rows do not move."""
    return _box_mpc(rng, (12, 16), repeat_x0=True)


@family("tv_denoise", group="constraints", flip=False)
def _tv_denoise(rng):
    """1-D total-variation denoising of a noisy piecewise-constant signal of 20–49 points
    (a chain of differences: J within 7 diagonals, the band LU), the weight a parameter;
    steps of ~2 against noise of 0.05, so no two runs are nearly fused (a kink)."""
    n = int(rng.integers(20, 50))
    x, y = cp.Variable(n, name="x"), cp.Parameter(n, name="y")
    lam = cp.Parameter(nonneg=True, name="lam")
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - y) + lam * cp.norm1(cp.diff(x))))
    levels = np.repeat(2.0 * rng.standard_normal(5), -(-n // 5))[:n]

    def sample(r):
        return [levels + 0.05 * r.standard_normal(n), r.uniform(0.3, 0.7, ())]

    return Built(prob, (y, lam), (x,), sample, ())


@family("logistic_fit", group="constraints", flip=False)
def _logistic_fit(rng):
    """An L2-regularised logistic regression on 300 points with per-point weights (exponential
    cones; J of order ~3,000 whose coefficient rows and columns meet every point: the
    bordered LU, ``_derivative/bordered.py``)."""
    n, d = 300, int(rng.integers(5, 11))
    X = rng.standard_normal((n, d))
    labels = np.where(X @ rng.standard_normal(d) + 0.5 * rng.standard_normal(n) > 0, 1.0, -1.0)
    w = cp.Parameter(n, nonneg=True, name="w")
    mu = cp.Parameter(d, name="mu")
    beta = cp.Variable(d, name="beta")
    loss = w @ cp.logistic(-cp.multiply(labels, X @ beta))
    prob = cp.Problem(cp.Minimize(loss + 0.5 * cp.sum_squares(beta - mu)))
    return independent([w, mu], [uniform(n, 0.5, 2.0), normal(d, 0.5)], [beta], prob)


@family("refuse_duplicate_parameter", group="refusals", refuse=True, smooth=False, flip=False)
def _refuse_duplicate_parameter(rng):
    """The same parameter listed twice, given two different values: no exact meaning (today
    the two values are silently added)."""
    x, p, obj = _qp(int(rng.integers(2, 4)))
    u = cp.Parameter(pos=True, name="u")
    params = [p, u, p] if rng.integers(2) else [p, p, u]
    draws = [normal(x.shape) if q is p else uniform((), 0.5, 1) for q in params]
    return independent(params, draws, [x], cp.Problem(cp.Minimize(obj), [x <= u]))
