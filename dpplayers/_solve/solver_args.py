"""``solver_args`` as users write them, cvxpylayers' spellings included.

cvxpylayers passes its ``solver_args`` to diffcp's ``solve_and_derivative_batch``, whose own
keywords (``n_jobs_forward``, ``n_jobs_backward``, ``mode``, ``solve_method``,
``warm_starts``, ...) sit beside SCS's settings. Code written for cvxpylayers passes them
routinely, so each is mapped to dpplayers' counterpart or, where there is none, ignored
with one warning per layer naming it (:func:`translate`). The solvers' own settings are
translated and checked by each solver class (``SCS.settings``, ``Clarabel.settings``);
a key nobody knows is refused there with the list of valid keys.
"""

from __future__ import annotations

from typing import Any

#: diffcp/cvxpylayers keys with no dpplayers counterpart, and why ignoring them is safe.
IGNORED_CVXPYLAYERS_KEYS: dict[str, str] = {
    "n_jobs_backward": "dpplayers' derivative solves the whole batch in batched LAPACK "
                       "calls in the calling thread",
    "warm_starts": "pass warm_start= (a previous Solution; layers: warm_start=True) instead",
    "derivative_kwargs": "it configures diffcp's LPGD derivative, which dpplayers does not use",
    "raise_on_error": "pass on_failure='nan' to get NaN for failed elements instead",
    "warm_start": "pass warm_start= to the call instead of solver_args",
}
#: diffcp's LPGD modes (informative approximate gradients); dpplayers' are exact.
LPGD_MODES = ("lpgd", "lpgd_right", "lpgd_left")
#: Every cvxpylayers/diffcp key accepted here (for the list of valid keys in errors).
CVXPYLAYERS_KEYS = ("n_jobs_forward", "solve_method", *IGNORED_CVXPYLAYERS_KEYS)
#: dpplayers' own options read before the solver's settings.
OWN_KEYS = ("n_jobs", "mode", "atol", "btol", "iter_lim", "refine", "inaccurate", "on_failure")


def translate(args: dict[str, Any], default_mode: str, backend) -> dict[str, Any]:
    """``args`` with cvxpylayers' keys mapped to dpplayers' (``n_jobs_forward`` →
    ``n_jobs``, diffcp's "all cores" -1 → the default) and the ones without a counterpart
    dropped, each with one warning per ``backend`` (one layer or compiled problem)."""
    if not any(k in args for k in CVXPYLAYERS_KEYS) and args.get("mode") not in LPGD_MODES:
        return args
    out = dict(args)
    if "n_jobs_forward" in out:
        n_jobs = out.pop("n_jobs_forward")
        if n_jobs not in (-1, None):
            out.setdefault("n_jobs", n_jobs)
    for key, why in IGNORED_CVXPYLAYERS_KEYS.items():
        if key in out:
            del out[key]
            backend.warn_once(key, f"solver_args key {key!r} (a cvxpylayers/diffcp option) "
                                   f"is ignored: {why}.")
    if out.get("mode") in LPGD_MODES:
        backend.warn_once("mode", f"mode={out.pop('mode')!r} (diffcp's LPGD, approximate "
                                  "gradients) is not available; dpplayers computes exact "
                                  f"derivatives with mode={default_mode!r}.")
    return out


def valid_keys_text(solver_keys: tuple[str, ...] | list[str]) -> str:
    """The valid keys, for an error message that refuses an unknown one."""
    return (f"valid keys are the solver's {sorted(solver_keys)}, dpplayers' "
            f"{sorted(OWN_KEYS)} and cvxpylayers' {sorted(CVXPYLAYERS_KEYS)}")


#: cvxpylayers 1.2's layer ``solver=`` names with a dpplayers counterpart: its default,
#: DIFFCP, solves with SCS; CUCLARABEL is Clarabel on a GPU (here: on the CPU).
CVXPYLAYERS_SOLVERS = {"DIFFCP": "SCS", "CUCLARABEL": "CLARABEL"}


def layer_solver(solver: str | None) -> str:
    """The solver a layer compiles for from its ``solver=`` argument (None: SCS, as
    cvxpylayers' default diffcp); :func:`dpplayers.compile` refuses names it lacks."""
    if solver is None:
        return "SCS"
    return CVXPYLAYERS_SOLVERS.get(str(solver).upper(), solver)
