"""Run SCS or Clarabel on canonical cone-program data; map statuses; reuse workspaces.

The canonical data is SCS's form (``min ½xᵀPx + cᵀx, Ax + s = b, s ∈ K``, cones in the
order zero, nonnegative, SOC, PSD, exp, power, PSD blocks as lower triangles). Clarabel
solves the same program; its PSD blocks are upper triangles, so rows of A and b (and the
returned y, s) are permuted on the way in and out.

When A and P do not depend on the parameters, a solver workspace (SCS's factorised KKT
system, Clarabel's solver) is kept per settings and thread and only b and c are updated;
for SCS only while that costs no iterations (see SCS._checked_reuse).
"""

from __future__ import annotations

import abc
import enum
import functools
import importlib
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import clarabel
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import scs

from ..cones import ConeDims, scs_to_clarabel_permutation
from .solver_args import valid_keys_text

FloatArray = npt.NDArray[np.float64]


class Status(enum.Enum):
    """Outcome of one solve; each value says what happened and what to try."""

    OPTIMAL = "solved"
    INACCURATE = "solved to reduced accuracy only; values and gradients are approximate"
    INFEASIBLE = "infeasible: no point satisfies the constraints for these parameter values"
    UNBOUNDED = "unbounded: the objective decreases without limit for these parameter values"
    ITERATION_LIMIT = ("hit the iteration limit (or time limit) before reaching the "
                       "tolerances; the last iterate is approximate")
    FAILED = "numerical failure in the solver; rescale the data or try the other solver"

    @property
    def ok(self) -> bool:
        """The solver returned a usable point (accurate or not), as CVXPY's
        SOLUTION_PRESENT: solved, solved inaccurately, or stopped at a limit."""
        return self in (Status.OPTIMAL, Status.INACCURATE, Status.ITERATION_LIMIT)

    @property
    def accurate(self) -> bool:
        """Solved to the requested tolerances."""
        return self is Status.OPTIMAL

    def usable(self, accept_inaccurate: bool) -> bool:
        """Whether this element's point is returned (``inaccurate="warn"``: every point
        the solver returned; ``"fail"``: accurate ones only)."""
        return self.accurate or (accept_inaccurate and self.ok)


class ConeData:
    """One element's cone program. P (the upper triangle, or None) and A are built on first
    use: a reused workspace needs only b and c. Built once per element and solve, so a
    plain slotted class (a frozen dataclass's initialiser costs several times as much)."""

    __slots__ = ("_built", "b", "c", "matrices")

    def __init__(self, matrices: Callable[[], tuple[sp.csc_matrix | None, sp.csc_matrix]],
                 b: FloatArray, c: FloatArray) -> None:
        self.matrices, self.b, self.c = matrices, b, c
        self._built: tuple[sp.csc_matrix | None, sp.csc_matrix] | None = None

    def _pair(self) -> tuple[sp.csc_matrix | None, sp.csc_matrix]:
        if self._built is None:
            self._built = self.matrices()
        return self._built

    @property
    def P(self) -> sp.csc_matrix | None:
        return self._pair()[0]

    @property
    def A(self) -> sp.csc_matrix:
        return self._pair()[1]


class RawSolution(NamedTuple):
    """A solver's answer in canonical (SCS) order. Immutable; a NamedTuple because one is
    built per element and solve, and a frozen dataclass's initialiser (an
    ``object.__setattr__`` per field) costs six times as much (3 µs)."""

    x: FloatArray
    y: FloatArray
    s: FloatArray
    status: Status
    solver_status: str
    iterations: int
    seconds: float  # the solve itself
    setup_seconds: float = 0.0  # building the workspace (scaling, KKT factorisation); 0 if reused
    detail: str = ""  # where it stopped (residuals vs tolerances), for inaccurate statuses
    reused: bool = False  # solved on a workspace kept from an earlier solve (b, c updated)
    scale: float | None = None  # SCS's step scale when it stopped
    kept: Any = None  # the dense QP route's factorisations of this element's data, for the
    # derivative (qp_systems.KeptFactors and the element's place there), else None


class AbstractConeSolver(abc.ABC):
    """A conic solver behind one interface: set up a workspace, update b/c, run."""

    name: ClassVar[str]
    DEFAULTS: ClassVar[dict[str, Any]]

    def __init__(self, cones: ConeDims, n: int = 0) -> None:
        self.cones = cones
        self.kkt_order = n + cones.size  # of the KKT system the solver factorises
        self._local = threading.local()
        self._settings_cache: dict[tuple, Mapping[str, Any]] = {}
        self._not_updatable: set[tuple] = set()  # settings never solved on a kept workspace
        self._warned: set[str] = set()  # solver_args keys already warned about
        self._others: dict[str, AbstractConeSolver] = {}  # solve_method's other solvers

    def warn_once(self, key: str, message: str) -> None:
        """Warn about a solver_args key once per compiled problem (one layer)."""
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, UserWarning, stacklevel=5)

    def for_method(self, solve_method: Any) -> AbstractConeSolver:
        """The solver a call's ``solve_method`` (cvxpylayers' key) names: this one, the
        other solver on the same canonical program (built once), or, for a solver
        dpplayers does not have, this one with a warning."""
        if solve_method is None:
            return self
        name = str(solve_method).upper()
        if name == self.name:
            return self
        if name not in SOLVER_CLASSES:
            self.warn_once("solve_method", f"solve_method={solve_method!r} is not available "
                                           f"(dpplayers has {sorted(SOLVER_CLASSES)}); solving "
                                           f"with {self.name}, the compiled solver.")
            return self
        if name not in self._others:
            self._others[name] = make_solver(name, self.cones, self.kkt_order - self.cones.size)
            self._others[name]._warned = self._warned  # one layer: one set of warnings
        return self._others[name]

    #: Attributes left out of pickles and copies (native solver objects, caches).
    _TRANSIENT: ClassVar[tuple[str, ...]] = ("_local", "_settings_cache", "_chosen_here",
                                             "_fresh_iterations", "_reused_iterations",
                                             "_scale_trials")

    def __getstate__(self) -> dict[str, Any]:
        """Pickle/copy without the per-thread workspaces (native solver objects, not
        picklable) and caches; all are rebuilt on first use."""
        return {k: v for k, v in self.__dict__.items() if k not in self._TRANSIENT}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()
        self._settings_cache = {}

    def settings_for(self, solver_args: dict[str, Any]) -> Mapping[str, Any]:
        """:meth:`settings`, remembered for the last few argument sets (a training loop
        passes the same ones on every call); a read-only :class:`Settings`, as it is
        shared, carrying its key so that a solve does not rebuild it."""
        try:
            key = tuple(sorted(solver_args.items()))
            hash(key)
        except TypeError:  # an unhashable value: translate afresh
            return self.settings(solver_args)
        cache = self._settings_cache
        if key not in cache:
            if len(cache) >= 8:
                cache.clear()
            cache[key] = Settings(self.settings(solver_args))
        return cache[key]

    @abc.abstractmethod
    def settings(self, solver_args: dict[str, Any]) -> dict[str, Any]:
        """Translate user arguments (cvxpylayers spellings included) into solver settings."""

    @abc.abstractmethod
    def _setup(self, data: ConeData, settings: dict[str, Any]) -> Any:
        """Build a workspace (factorisation) for ``data``."""

    @abc.abstractmethod
    def _update(self, workspace: Any, data: ConeData) -> None:
        """Replace b and c in a workspace built for the same A and P; raise
        :class:`UpdateRefused` where the workspace does not allow it."""

    @abc.abstractmethod
    def _run(self, workspace: Any, settings: dict[str, Any], warm: RawSolution | None,
             setup_seconds: float, reused: bool = False) -> RawSolution:
        """Solve with a prepared workspace (``setup_seconds``: what preparing it took;
        ``reused``: it was kept from an earlier solve)."""

    def solve(self, data: ConeData, settings: dict[str, Any], reuse: bool,
              warm: RawSolution | None = None) -> RawSolution:
        """Solve one element; with ``reuse`` keep the workspace and only update b and c."""
        start = time.perf_counter()
        key = _settings_key(settings) if reuse else None
        reused = False
        if not reuse or key in self._not_updatable:
            workspace = self._setup(data, settings)
        else:
            cache = getattr(self._local, "cache", None)
            if cache is None:
                cache = self._local.cache = {}
            workspace = cache.get(key)
            if workspace is None:
                workspace = cache[key] = self._setup(data, settings)
            else:
                try:
                    self._update(workspace, data)
                    reused = True
                except UpdateRefused:  # remembered: later solves build their own workspace
                    self.stop_reuse(key)
                    workspace = self._setup(data, settings)
        return self._run(workspace, settings, warm, time.perf_counter() - start, reused)

    def stop_reuse(self, key: tuple) -> None:
        """Build a fresh workspace for every later solve with these settings (key)."""
        self._not_updatable.add(key)
        self.drop_workspace(key)

    def drop_workspace(self, key: tuple) -> None:
        """Forget this thread's kept workspace for these settings (the next solve builds one)."""
        self._local.__dict__.get("cache", {}).pop(key, None)


class UpdateRefused(Exception):
    """A solver workspace that cannot take new b and c (Clarabel with chordal
    decomposition or presolve active): the caller builds a fresh one instead."""


class SCS(AbstractConeSolver):
    """SCS 3 (splitting conic solver): first-order, warm-startable."""

    name = "SCS"
    DEFAULTS: ClassVar[dict[str, Any]] = {"verbose": False, "eps_abs": 1e-8, "eps_rel": 1e-8,
                                          "max_iters": 100_000}
    STATUS_MAP: ClassVar[dict[int, Status]] = {
        1: Status.OPTIMAL, 2: Status.INACCURATE, -1: Status.UNBOUNDED, -6: Status.UNBOUNDED,
        -2: Status.INFEASIBLE, -7: Status.INFEASIBLE, -3: Status.FAILED, -4: Status.FAILED,
        -5: Status.FAILED, 0: Status.FAILED,  # 0: "unfinished", never a returned answer
    }

    def settings(self, solver_args: dict[str, Any]) -> dict[str, Any]:
        out = dict(self.DEFAULTS)
        for key, value in solver_args.items():
            if key == "eps":
                out["eps_abs"] = out["eps_rel"] = value
            elif key == "max_iter":
                out["max_iters"] = value
            elif key == "use_indirect":  # SCS 2's and cvxpy's spelling
                kinds = getattr(scs, "LinearSolver", None)  # scs < 3.2.8: its own keyword
                if value:
                    out.update({"linear_solver": kinds.CPU_INDIRECT} if kinds
                               else {"use_indirect": True})
            elif key in SCS_SETTINGS:
                out[key] = value
            else:
                raise ValueError(f"SCS rejected the setting {key!r} in solver_args: it is not "
                                 f"an SCS setting; {valid_keys_text(SCS_KEYS)}.")
        if not {"linear_solver", "use_indirect"} & out.keys():  # the user's choice is kept
            eps = min(float(out.get("eps_abs", 1e-4)), float(out.get("eps_rel", 1e-4)))
            choice = _scs_linear_solver(self.kkt_order, eps)
            if choice is not None:
                out["linear_solver"] = choice
                if choice is not _scs_refined_linear_solver(self.kkt_order):
                    self._remember_choice(out)
        return out

    def solve(self, data: ConeData, settings: dict[str, Any], reuse: bool,
              warm: RawSolution | None = None) -> RawSolution:
        """As the base class; where dpplayers picked QDLDL itself and SCS stops short of
        its tolerances, solve again with a back end that refines its linear solves, so
        that the faster choice never costs convergence (its iterations and time count)."""
        # _initial_scale, called where a fresh workspace is set up, records in
        # _local.carried which start it gave (True / False); None: no fresh workspace, or
        # one outside the trials (the user's scale, unhashable settings)
        self._local.carried = None
        raw = super().solve(data, settings, reuse, warm)
        self._count_scale_trial(settings, raw)
        if reuse:
            raw = self._checked_reuse(data, settings, warm, raw)
        if raw.status not in RETRY_STATUSES or not self._chose_linear_solver(settings):
            return raw
        fallback = _scs_refined_linear_solver(self.kkt_order)
        if fallback is None:
            return raw
        return _after(raw, super().solve(data, {**settings, "linear_solver": fallback}, reuse,
                                         warm))

    def _checked_reuse(self, data: ConeData, settings: dict[str, Any],
                       warm: RawSolution | None, raw: RawSolution) -> RawSolution:
        """Keep reusing workspaces with these settings only while it does not cost
        convergence. SCS 3's workspace carries its adapted scale (with the KKT system
        factorised at it) and its Anderson memory from one solve to the next, and its
        Python interface cannot reset either. Where the problems' best scale is stable
        that halves the iterations; where it varies from one parameter value to the next
        (LPs) the scale drifts and solves take 2-4 times as many. So the iterations of
        fresh solves are recorded, and those of reused solves. A reused solve that takes
        clearly more than the fresh mean ends reuse for these settings (a fresh workspace
        per solve from then on) unless reused solves have so far taken no more than the
        fresh mean on average; then it only drops this thread's workspace, so the next
        solve is a fresh one, which adds to the fresh mean (the first draw's alone, until
        then) and restarts SCS's scale. A reused solve that stopped short is repeated on a
        fresh one (its iterations and time count).

        Without the excuse, one slow reused solve ended reuse for good: gp_box (reused
        solves 83-100 iterations on average, fresh 158-175, one reused in a few hundred
        225-375) lost its workspace in most runs of the benchmarks' sequence, which made
        its forward 2.5 times slower (B = 8: 5.9 against 2.4 ms a solve; B = 1: 0.80
        against 0.28). Without the fresh solve, a baseline of the first draw's solves alone
        excused too much: sparsemax's first draw takes 225 fresh, the others ~170, and its
        reused solves 218, which cost it ~20% at batch 8. The random LPs (reused 2-4 times
        the fresh iterations) still stop at their first reused solve.

        While fewer than REUSE_BASELINE_MIN fresh solves make the mean, a slow reused solve
        within twice it is excused too: one draw's fresh iterations vary 2x from the next's.
        gp_box at the default eps 1e-8 lost its workspace after 12 reused solves against its
        first draw's 125 (fresh mean ~150); excused, the next workspace starts from the
        carried scale and its reused solves take 75-100 (0.82 of CVXPY's fresh iterations
        over 42 solves of 7 draws, 1.20 before)."""
        try:
            key = _settings_key(settings)
        except TypeError:  # unhashable settings are never reused (the cache needs a key)
            return raw
        if not raw.reused:
            count, total = self._fresh_iterations.get(key, (0, 0))
            if len(self._fresh_iterations) >= 64 and not count:  # bounded, as caches are
                self._fresh_iterations.clear()
                self._reused_iterations.clear()
            self._fresh_iterations[key] = (count + 1, total + raw.iterations)
            return raw
        count, total = self._fresh_iterations.get(key, (0, 0))
        reused_count, reused_total = self._reused_iterations.get(key, (0, 0))
        reused_count, reused_total = reused_count + 1, reused_total + raw.iterations
        self._reused_iterations[key] = (reused_count, reused_total)
        fresh = REUSE_ITERATION_FACTOR * total / max(count, 1)
        stopped_short = raw.status in RETRY_STATUSES
        if not stopped_short and (not count
                                  or raw.iterations <= fresh + REUSE_ITERATION_MARGIN):
            return raw
        if not stopped_short and (reused_total <= fresh * reused_count
                                  or (count < REUSE_BASELINE_MIN and raw.iterations <= 2 * fresh)):
            self.drop_workspace(key)  # the next solve: fresh
            return raw
        self.stop_reuse(key)
        if not stopped_short:
            return raw
        return _after(raw, super().solve(data, settings, True, warm))

    def _initial_scale(self, settings: Mapping[str, Any]) -> float | None:
        """The step scale a fresh workspace starts from: None (SCS's default) or the scale
        this thread's last solve with these settings ended at. SCS adapts its scale during
        a solve; started from the last one, the benchmarks' solves take 0.4-0.7 times the
        iterations where A changes from one parameter value to the next (a fresh workspace
        per solve), and where reuse stopped (``benchmarks/README.md``), but on LPs with many
        inactive rows 1.2-1.3 times. So both starts are tried SCALE_TRIALS times each,
        alternately; then the carried one is used while its mean iterations stay at most
        SCALE_GAIN times the default's (the means go on as solves come in). A scale the
        user set is left alone."""
        if "scale" in settings:
            return None
        try:
            key = _settings_key(settings)
        except TypeError:
            return None
        last = self._local.__dict__.get("scales", {}).get(key)
        if last is None:
            self._local.carried = False
            return None
        default, carried = self._scale_trials.get(key, ((0, 0), (0, 0)))
        if min(default[0], carried[0]) < SCALE_TRIALS:
            carry = carried[0] < default[0]
        else:  # the carried start's mean iterations clearly below the default's
            carry = carried[1] * default[0] <= SCALE_GAIN * default[1] * carried[0]
        self._local.carried = carry
        return last if carry else None

    def _count_scale_trial(self, settings: Mapping[str, Any], raw: RawSolution) -> None:
        """Remember the scale this solve ended at (this thread's next fresh workspace may
        start there) and, for a fresh workspace, its iterations under the start it had."""
        try:
            key = _settings_key(settings)
        except TypeError:
            return
        local = self._local.__dict__
        carried = local.get("carried")
        if raw.scale is not None:
            local.setdefault("scales", {})[key] = raw.scale
        if carried is None:
            return
        trials = self._scale_trials
        if len(trials) >= 64 and key not in trials:  # bounded, as the settings cache is
            trials.clear()
        default, from_last = trials.get(key, ((0, 0), (0, 0)))
        if carried:
            from_last = (from_last[0] + 1, from_last[1] + raw.iterations)
        else:
            default = (default[0] + 1, default[1] + raw.iterations)
        trials[key] = (default, from_last)

    @functools.cached_property
    def _scale_trials(self) -> dict[tuple, tuple[tuple[int, int], tuple[int, int]]]:
        """Per settings (as keys): fresh solves from SCS's default scale and from the carried
        one, each as (how many, their iterations)."""
        return {}

    @functools.cached_property
    def _fresh_iterations(self) -> dict[tuple, tuple[int, int]]:
        """Per settings (as keys): how many fresh-workspace solves, and their iterations."""
        return {}

    @functools.cached_property
    def _reused_iterations(self) -> dict[tuple, tuple[int, int]]:
        """Per settings (as keys): how many solves on a kept workspace, and their iterations."""
        return {}

    @functools.cached_property
    def _chosen_here(self) -> set[tuple]:
        """The settings (as keys) whose linear solver dpplayers chose, not the user."""
        return set()

    def _remember_choice(self, settings: Mapping[str, Any]) -> None:
        if len(self._chosen_here) >= 64:  # bounded, as the settings cache is
            self._chosen_here.clear()
        try:
            self._chosen_here.add(_settings_key(settings))
        except TypeError:  # an unhashable setting: no repeat for these settings
            pass

    def _chose_linear_solver(self, settings: Mapping[str, Any]) -> bool:
        try:
            return _settings_key(settings) in self._chosen_here
        except TypeError:  # an unhashable setting: never chosen here (nor cached)
            return False

    @functools.cached_property
    def _cone_dict(self) -> dict[str, Any]:
        k = self.cones
        return {"z": k.zero, "l": k.nonneg, "q": list(k.soc), "s": list(k.psd), "ep": k.exp,
                "ed": k.exp_dual, "p": list(k.power)}

    def _setup(self, data: ConeData, settings: dict[str, Any]) -> Any:
        """A workspace: SCS's C extension for the chosen linear solver directly where
        :func:`_scs_extension` knows it (the data is already what the Python wrapper
        makes of it: CSC, sorted, P's upper triangle, so its checks and copies, ~25 µs,
        are skipped), else through the wrapper. Both take solve/update positionally."""
        extension = _scs_extension(settings.get("linear_solver"))
        scale = self._initial_scale(settings)
        try:
            if extension is not None:
                A, P = data.A, data.P
                Pd, Pi, Pp = (P.data, P.indices, P.indptr) if P is not None else (None,) * 3
                rest = (settings.without_solver if isinstance(settings, Settings)
                        else {k: v for k, v in settings.items() if k != "linear_solver"})
                if scale is not None:
                    rest = {**rest, "scale": scale}
                return extension.SCS(A.shape, A.data, A.indices, A.indptr, Pd, Pi, Pp, data.b,
                                     data.c, self._cone_dict, **rest)
            problem = {"A": data.A, "b": data.b, "c": data.c}
            if data.P is not None:
                problem["P"] = data.P
            return scs.SCS(problem, self._cone_dict,
                           **(settings if scale is None else {**settings, "scale": scale}))
        except (TypeError, ValueError) as err:
            raise ValueError(f"SCS rejected the problem or its settings {dict(settings)}: {err}") from None

    def _update(self, workspace: Any, data: ConeData) -> None:
        workspace.update(data.b, data.c)  # positional: the extension's update(b, c)

    def _run(self, workspace: Any, settings: dict[str, Any], warm: RawSolution | None,
             setup_seconds: float, reused: bool = False) -> RawSolution:
        start = time.perf_counter()
        # positional: the extension's solve(warm_start, x, y, s), as the wrapper's
        if warm is not None:
            out = workspace.solve(True, warm.x, warm.y, warm.s)
        else:
            out = workspace.solve(False, None, None, None)
        info = out["info"]
        status = self.STATUS_MAP.get(int(info["status_val"]), Status.FAILED)
        if status is Status.INACCURATE and (info["iter"] >= settings.get("max_iters", 100_000)
                                            or "time_limit" in str(info["status"])):
            status = Status.ITERATION_LIMIT
        detail = "" if status is Status.OPTIMAL else self._detail(info, settings)
        return RawSolution(out["x"], out["y"], out["s"], status, str(info["status"]),
                           int(info["iter"]), time.perf_counter() - start, setup_seconds, detail,
                           reused, info.get("scale"))

    @staticmethod
    def _detail(info: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
        """Where SCS stopped: its residuals against the tolerances, its final step scale
        and its linear-system back end (QDLDL's unrefined solves stall SCS at tight
        tolerances; more iterations do not help there)."""
        return (f"after {info['iter']} iterations: primal residual {info['res_pri']:.1e}, "
                f"dual residual {info['res_dual']:.1e}, gap {info['gap']:.1e} (tolerances "
                f"eps_abs {settings.get('eps_abs', 1e-4):.0e}, eps_rel "
                f"{settings.get('eps_rel', 1e-4):.0e}); scale {info['scale']:.1e}, "
                f"linear solver {info.get('lin_sys_solver', '?')}")


#: The settings SCS 3.3's Python interface takes (its C extension's keyword list, and
#: ``linear_solver``); others make SCS raise a bare TypeError, so they are refused first.
SCS_SETTINGS = frozenset({
    "verbose", "normalize", "adaptive_scale", "adaptive_diag_scale", "scale", "max_iters",
    "eps_abs", "eps_rel", "eps_infeas", "alpha", "rho_x", "time_limit_secs",
    "acceleration_lookback", "acceleration_interval", "acceleration_type_1",
    "acceleration_regularization", "acceleration_relaxation", "write_data_filename",
    "log_csv_filename", "linear_solver"})
#: What SCS.settings accepts: SCS's settings and the spellings it translates.
SCS_KEYS = (*sorted(SCS_SETTINGS), "eps", "max_iter", "use_indirect")

#: SCS factorises a KKT system of order n + m. Up to this order its bundled QDLDL sets up
#: and solves faster than MKL's Pardiso, which SCS's "auto" prefers wherever it is
#: installed (measured, batch 1: 50-variable QP 0.60 vs 0.92 ms, SOC projection 0.28 vs
#: 0.77 ms, 200-variable QP 16 vs 21 ms); Pardiso wins on large sparse systems (2,000-variable
#: LP, order 5,000: 92 vs 225 ms). QDLDL is also single-threaded, so it does not fight
#: the batch thread pool. Below QDLDL_MIN_EPS, QDLDL's solves (no iterative refinement)
#: are not accurate enough for SCS to converge, so SCS's default is kept there. Measured on
#: the 29 problems of tests/helpers.py, 3 samples each: at eps 1e-8 and 1e-9 QDLDL took
#: the same iteration counts as Pardiso on all 87; at eps 1e-10 it took 2-150 times as many
#: on 16 of 87 and ran to max_iters (20,000) on 7 (exp and SOC cones), where Pardiso and
#: dense LAPACK took 50-125. Should QDLDL still stop short, SCS.solve repeats the solve
#: with the refined back end (see _scs_refined_linear_solver).
QDLDL_MAX_ORDER = 2000
QDLDL_MIN_EPS = 1e-9
#: A reused SCS workspace is kept while its solves take at most this many times the mean
#: iterations of fresh solves with the same settings, plus the margin (two of SCS's
#: convergence checks, one every 25 iterations); a solve beyond that is excused (and the
#: next solve made a fresh one) while reused solves take no more than the fresh mean on
#: average (SCS._checked_reuse). Measured, 8 parameter values each: on the benchmarks'
#: constant-matrix workloads reused solves took 0.4-0.6 times the fresh iterations
#: (sigmoid 50-75 vs 125-150, ncm 50 vs 100-125, sparse_lp 75-100 vs 175; gp_box 83-90 vs
#: 158 on average over 360 solves); on random LPs with 120 variables and 300 rows
#: (inequalities, equalities, duplicated or badly scaled rows), 1.1-4.5 times. A family
#: where reuse is neutral may lose it to unlucky draws; that costs a factorisation per
#: solve, never iterations.
REUSE_ITERATION_FACTOR = 1.0
REUSE_ITERATION_MARGIN = 50
#: While fewer fresh solves than this make the mean, a slow reused solve within twice it is
#: excused too (one draw's iterations vary 2x from the next's: gp_box's first draw took 125,
#: its mean is ~150, and a reused 200 ended reuse that settles at 75).
REUSE_BASELINE_MIN = 3
#: Fresh solves from SCS's default scale and from the carried one, each, before the two
#: starts' means are compared (SCS._initial_scale) ...
SCALE_TRIALS = 4
#: ... and the carried start is kept only while its mean is at most this fraction of the
#: default's: a fresh solve's iterations vary by 2x from one parameter value to the next,
#: so four trials each could pick a start that costs iterations.
SCALE_GAIN = 0.9
#: Statuses after which a solve with dpplayers' own QDLDL choice is repeated.
RETRY_STATUSES = (Status.INACCURATE, Status.ITERATION_LIMIT, Status.FAILED)


def _settings_key(settings: Mapping[str, Any]) -> tuple:
    """Settings as a hashable key (TypeError where a value is unhashable); a
    :class:`Settings` carries its own, built once."""
    key = getattr(settings, "key", None)
    return key if key is not None else _key_of(settings)


def _key_of(settings: Mapping[str, Any]) -> tuple:
    """The sorted items, an enum (SCS's LinearSolver) as (its type's name, its value): a
    tuple of strings and numbers hashes in C, where an enum member's ``__hash__`` is Python
    code run on every lookup (three per solve)."""
    key = tuple(sorted((k, (type(v).__qualname__, v.value) if isinstance(v, enum.Enum) else v)
                       for k, v in settings.items()))
    hash(key)
    return key


class Settings(dict):
    """A solver's settings as :meth:`AbstractConeSolver.settings_for` shares them between
    calls: read-only, with their hashable ``key`` (None where a value is unhashable) and
    the SCS settings without ``linear_solver`` (what SCS's C extension takes) built once,
    where every solve used to rebuild them. A dict (so ``**settings`` stays fast)."""

    __slots__ = ("key", "without_solver")

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        try:
            key: tuple | None = _key_of(settings)
        except TypeError:
            key = None
        self.key = key
        self.without_solver = {k: v for k, v in settings.items() if k != "linear_solver"}

    def __reduce__(self) -> tuple:  # pickle/copy rebuild it (item assignment is refused)
        return (Settings, (dict(self),))

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("solver settings are shared between calls and read-only")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _read_only


#: SCS's linear-system back ends and the C extension module each is compiled into (SCS's
#: Python wrapper picks the module on every construction; it is picked once here).
_SCS_EXTENSIONS = {"qdldl": "_scs_direct", "mkl": "_scs_mkl", "cpu_dense": "_scs_dense",
                   "cpu_indirect": "_scs_indirect"}


@functools.cache
def _scs_extension(linear_solver: Any) -> Any:
    """SCS's C extension module for a ``LinearSolver`` choice, where this SCS is one whose
    wrapper calls it as :meth:`SCS._setup` does (SCS 3 with ``LinearSolver``, 3.2.8 on) and
    the module imports; None otherwise (a string, "auto", a GPU back end: the wrapper
    decides)."""
    kinds = getattr(scs, "LinearSolver", None)
    if kinds is None or not isinstance(linear_solver, kinds) or not scs.__version__.startswith("3."):
        return None
    name = _SCS_EXTENSIONS.get(linear_solver.value)
    try:
        return importlib.import_module(f"scs.{name}") if name else None
    except ImportError:
        return None


def _after(first: RawSolution, retry: RawSolution) -> RawSolution:
    """``retry``'s answer, charged with both solves' iterations and time."""
    return retry._replace(iterations=first.iterations + retry.iterations,
                          seconds=first.seconds + retry.seconds,
                          setup_seconds=first.setup_seconds + retry.setup_seconds)


def _scs_linear_solver(kkt_order: int, eps: float) -> Any:
    """SCS's linear-system back end for a KKT system of this order solved to this
    tolerance (None: SCS's default)."""
    kinds = getattr(scs, "LinearSolver", None)  # scs < 3.2.8 has one back end, no choice
    if kinds is None:
        return None
    if kkt_order <= QDLDL_MAX_ORDER and eps >= QDLDL_MIN_EPS:
        return kinds.QDLDL
    return _scs_auto_linear_solver()


@functools.cache
def _scs_refined_linear_solver(kkt_order: int) -> Any:
    """A back end whose solves stay accurate where QDLDL's do not: MKL's Pardiso
    (iterative refinement) where installed, else dense LAPACK for systems up to
    QDLDL_MAX_ORDER; None where neither is available."""
    kinds = getattr(scs, "LinearSolver", None)
    if kinds is None:
        return None
    for kind, module, max_order in ((kinds.MKL, "scs._scs_mkl", None),
                                    (kinds.CPU_DENSE, "scs._scs_dense", QDLDL_MAX_ORDER)):
        if max_order is not None and kkt_order > max_order:
            continue
        try:
            importlib.import_module(module)
            return kind
        except ImportError:
            continue
    return None


@functools.cache
def _scs_auto_linear_solver() -> Any:
    """What SCS's ``linear_solver="auto"`` picks, decided once: SCS's wrapper decides on
    every construction by trying to import its MKL module, which costs ~0.25 ms where the
    module is absent."""
    kinds = scs.LinearSolver
    if sys.platform == "darwin":  # SCS prefers its bundled QDLDL there
        return kinds.QDLDL
    try:
        importlib.import_module("scs._scs_mkl")
        return kinds.MKL
    except ImportError:
        return kinds.QDLDL


class Clarabel(AbstractConeSolver):
    """Clarabel (interior point): accurate; cannot be warm-started (seeds are ignored)."""

    name = "CLARABEL"
    DEFAULTS: ClassVar[dict[str, Any]] = {"verbose": False, "presolve_enable": False}
    STATUS_MAP: ClassVar[dict[str, Status]] = {
        "Solved": Status.OPTIMAL, "AlmostSolved": Status.INACCURATE,
        "PrimalInfeasible": Status.INFEASIBLE, "AlmostPrimalInfeasible": Status.INFEASIBLE,
        "DualInfeasible": Status.UNBOUNDED, "AlmostDualInfeasible": Status.UNBOUNDED,
        "MaxIterations": Status.ITERATION_LIMIT, "MaxTime": Status.ITERATION_LIMIT,
    }

    _TRANSIENT: ClassVar[tuple[str, ...]] = (*AbstractConeSolver._TRANSIENT, "_cones")

    def __init__(self, cones: ConeDims, n: int = 0) -> None:
        super().__init__(cones, n)
        self._perm = scs_to_clarabel_permutation(cones)
        self._inverse = np.argsort(self._perm)
        if cones.exp_dual:
            raise ValueError("Clarabel has no dual exponential cone; use SCS.")

    @functools.cached_property
    def _cones(self) -> list[Any]:
        """Clarabel's cone objects (native, not picklable: built on first use)."""
        cones = self.cones
        return (
            ([clarabel.ZeroConeT(cones.zero)] if cones.zero else [])
            + ([clarabel.NonnegativeConeT(cones.nonneg)] if cones.nonneg else [])
            + [clarabel.SecondOrderConeT(d) for d in cones.soc]
            + [clarabel.PSDTriangleConeT(d) for d in cones.psd]
            + [clarabel.ExponentialConeT() for _ in range(cones.exp)]
            + [clarabel.PowerConeT(a) for a in cones.power]
        )

    def settings(self, solver_args: dict[str, Any]) -> dict[str, Any]:
        out = dict(self.DEFAULTS)
        known = _clarabel_settings()
        for key, value in solver_args.items():
            if key == "eps":
                out["tol_gap_abs"] = out["tol_gap_rel"] = out["tol_feas"] = value
            elif key in ("max_iters", "max_iter"):
                out["max_iter"] = int(value)
            elif key == "time_limit_secs":
                out["time_limit"] = float(value)
            elif key in known:
                out[key] = value
            elif key in SCS_KEYS:  # cvxpylayers code passes SCS's settings routinely
                self.warn_once(key, f"solver_args key {key!r} is an SCS setting; Clarabel "
                                    "has no counterpart and ignores it.")
            else:
                raise ValueError(f"unknown Clarabel setting {key!r} in solver_args; "
                                 f"{valid_keys_text(sorted(known) + ['eps', 'max_iters'])}.")
        return out

    def _setup(self, data: ConeData, settings: dict[str, Any]) -> Any:
        s = clarabel.DefaultSettings()
        for key, value in settings.items():
            setattr(s, key, value)
        P = data.P if data.P is not None else sp.csc_matrix(data.A.shape[1:] * 2)
        A = sp.csc_matrix(data.A[self._perm]) if self._perm is not None else data.A
        b = data.b[self._perm] if self._perm is not None else data.b
        return clarabel.DefaultSolver(P, data.c, A, b, self._cones, s)

    def _update(self, workspace: Any, data: ConeData) -> None:
        b = data.b[self._perm] if self._perm is not None else data.b
        try:
            workspace.update(q=data.c, b=b)
        except Exception as err:  # Clarabel raises a bare Exception
            if "updates are not allowed" in str(err):  # chordal decomposition or presolve
                raise UpdateRefused(str(err)) from None
            raise

    def _run(self, workspace: Any, settings: dict[str, Any], warm: RawSolution | None,
             setup_seconds: float, reused: bool = False) -> RawSolution:
        start = time.perf_counter()
        sol = workspace.solve()
        name = str(sol.status)
        status = self.STATUS_MAP.get(name, Status.FAILED)
        y, s = np.asarray(sol.z), np.asarray(sol.s)
        if self._perm is not None:
            y, s = y[self._inverse], s[self._inverse]
        detail = "" if status is Status.OPTIMAL else (
            f"after {sol.iterations} iterations: primal residual {sol.r_prim:.1e}, dual "
            f"residual {sol.r_dual:.1e} (tol_feas {settings.get('tol_feas', 1e-8):.0e})")
        return RawSolution(np.asarray(sol.x), y, s, status, name, int(sol.iterations),
                           time.perf_counter() - start, setup_seconds, detail, reused)


@functools.cache
def _clarabel_settings() -> frozenset[str]:
    defaults = clarabel.DefaultSettings()
    return frozenset(k for k in dir(defaults)
                     if not k.startswith("_") and not callable(getattr(defaults, k)))


SOLVER_CLASSES: dict[str, type[AbstractConeSolver]] = {"SCS": SCS, "CLARABEL": Clarabel}


def make_solver(name: str, cones: ConeDims, n: int = 0) -> AbstractConeSolver:
    """The solver object for a compiled problem with n variables."""
    return SOLVER_CLASSES[name](cones, n)
