"""LAPACK's Cholesky factorisation and solve, and its band LU, solve and condition
estimate, on a stack of matrices, called so that other threads run meanwhile.

scipy's Python wrappers ``lapack.dpotrf`` and ``dpotrs`` (and ``dgbtrf``: two threads
factorising an MPC's band J 300 times each took 1.2–1.3× one thread's 600) hold the GIL
for the whole call, so
the dense QP route's chunks, each factorising its elements one by one, took turns on the
cores: 32 factorisations of order 200 with solves of 151 columns took 25 ms on one thread
and 27 ms on two. The same LAPACK routines reached through scipy's Cython exports
(``scipy.linalg.cython_lapack``) by ctypes release it for the call: 25.6 ms on one thread,
14.4 ms on two (2026-12-07, OpenBLAS one thread per call). Reading an array's address costs
~0.8 µs, so a stack's is read once and each element's found by its stride.

Each element of a C-ordered stack is read as its transpose in Fortran order (no copy): the
symmetric matrices here are their own transposes, and a right-hand side stored as bᵀ (q, n)
per element is b (n, q) to LAPACK.

The exports' C signatures are checked when this module is imported (32-bit ``int`` sizes,
double-precision arrays, the argument count) and the routines tried on a small system with
a known answer; should a scipy build differ, scipy's Python wrappers do the same work (one
thread at a time), never a call with the wrong arguments.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
from scipy.linalg import cython_lapack, lapack

FloatArray = npt.NDArray[np.float64]

_get_name = ctypes.pythonapi.PyCapsule_GetName
_get_name.restype, _get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.restype, _get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object,
                                                                  ctypes.c_char_p]


def _routine(name: str, kinds: str) -> ctypes._CFuncPtr | None:
    """scipy's exported LAPACK routine ``name``, every argument a pointer (Fortran's
    convention), or None where its C signature is not ``kinds`` (c: char *, i: int *, d:
    double *); ctypes releases the GIL around a call through a CFUNCTYPE pointer."""
    capsule = getattr(cython_lapack, "__pyx_capi__", {}).get(name)
    if capsule is None:
        return None
    signature = _get_name(capsule)
    words = {"c": b"char *", "i": b"int *", "d": b"_d *"}
    arguments = signature[signature.index(b"(") + 1 : signature.rindex(b")")].split(b", ")
    if len(arguments) != len(kinds) or not all(
            a == words[k] if k != "d" else a.endswith(words[k])
            for a, k in zip(arguments, kinds)):
        return None
    address = _get_pointer(capsule, signature)
    return ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * len(kinds))(address)


_DPOTRF = _routine("dpotrf", "cidii")  # uplo, n, a, lda, info
_DPOTRS = _routine("dpotrs", "ciididii")  # uplo, n, nrhs, a, lda, b, ldb, info
_DGBTRF = _routine("dgbtrf", "iiiidiii")  # m, n, kl, ku, ab, ldab, ipiv, info
_DGBTRS = _routine("dgbtrs", "ciiiidiidii")  # trans, n, kl, ku, nrhs, ab, ldab, ipiv, b, ldb, info
_DGBCON = _routine("dgbcon", "ciiidiidddii")  # norm, n, kl, ku, ab, ldab, ipiv, anorm, rcond,
# work, iwork, info
_CHARS = {c: ctypes.c_char(c.encode()) for c in "LNT1"}
_LOWER = ctypes.addressof(_CHARS["L"])


def _stack(a: FloatArray, ndim: int) -> None:
    if (a.dtype != np.float64 or a.ndim != ndim or not a.flags.c_contiguous
            or not a.flags.writeable):
        raise ValueError(f"LAPACK in place needs a writeable C-ordered float64 stack of "
                         f"{ndim} dimensions, not {a.dtype} {a.shape}")


def potrf(a: FloatArray) -> npt.NDArray[np.bool_]:
    """Cholesky factors of the symmetric matrices a (B, n, n), in place: each element's
    Fortran-ordered lower triangle (its C-ordered upper one) becomes L with a_k = L Lᵀ, the
    rest is left as it was. Returns which elements are positive definite (the others are
    partly overwritten)."""
    _stack(a, 3)
    return (_potrf_exports if NATIVE else _potrf_wrappers)(a)


def potrs(factors: FloatArray, b: FloatArray, which: npt.NDArray[np.intp] | None = None
          ) -> FloatArray:
    """Solve a_k x = b_k in place for factors :func:`potrf` wrote, b (B, n) or (B, q, n)
    (each element bᵀ), b_i against factor ``which[i]`` (default i); returns b."""
    _stack(factors, 3)
    _stack(b, b.ndim if b.ndim in (2, 3) else 3)
    if b.shape[-1] != factors.shape[1]:
        raise ValueError(f"right-hand sides of {b.shape[-1]} rows for factors of order "
                         f"{factors.shape[1]}")
    elements = range(b.shape[0]) if which is None else which.tolist()
    (_potrs_exports if NATIVE else _potrs_wrappers)(factors, b, elements)
    return b


def _potrf_exports(a: FloatArray) -> npt.NDArray[np.bool_]:
    definite = np.empty(a.shape[0], bool)
    n, info = ctypes.c_int(a.shape[1]), ctypes.c_int(0)
    at_n, at_info = ctypes.addressof(n), ctypes.addressof(info)
    base, step = a.ctypes.data, a.strides[0]
    for k in range(a.shape[0]):
        _DPOTRF(_LOWER, at_n, base + k * step, at_n, at_info)
        definite[k] = info.value == 0
    return definite


def _potrs_exports(factors: FloatArray, b: FloatArray, elements: Iterable[int]) -> None:
    n = ctypes.c_int(factors.shape[1])
    q, info = ctypes.c_int(1 if b.ndim == 2 else b.shape[1]), ctypes.c_int(0)
    at_n, at_q, at_info = ctypes.addressof(n), ctypes.addressof(q), ctypes.addressof(info)
    base, step = factors.ctypes.data, factors.strides[0]
    b_base, b_step = b.ctypes.data, b.strides[0]
    for i, k in enumerate(elements):
        _DPOTRS(_LOWER, at_n, at_q, base + k * step, at_n, b_base + i * b_step, at_n, at_info)


def gbtrf(ab: FloatArray, kl: int, ku: int) -> tuple[npt.NDArray[np.int32],
                                                    npt.NDArray[np.bool_]]:
    """Band LU with partial pivoting of each element of ab (B, N, ldab), in place: element
    k, C-ordered, is LAPACK's band storage (ldab, N) in Fortran order, ldab = 2 kl + ku + 1,
    A[i, j] at row kl + ku + i − j of column j (the first kl rows are the LU's room for
    its pivoting). Returns LAPACK's pivots (B, N), 1-based as :func:`gbtrs` and
    :func:`gbcon` take them, and which elements are nonsingular."""
    _stack(ab, 3)
    if ab.shape[2] != 2 * kl + ku + 1:
        raise ValueError(f"band storage of {ab.shape[2]} rows for kl={kl}, ku={ku}")
    piv = np.zeros(ab.shape[:2], np.int32)
    return piv, (_gbtrf_exports if NATIVE else _gbtrf_wrappers)(ab, kl, ku, piv)


def gbtrs(ab: FloatArray, piv: npt.NDArray[np.int32], b: FloatArray, kl: int, ku: int,
          transpose: bool) -> FloatArray:
    """Solve A_k x = b_k (A_kᵀ x = b_k with ``transpose``) in place for the factors
    :func:`gbtrf` wrote, b (B, q, N) with each element bᵀ; returns b."""
    _stack(ab, 3)
    _stack(b, 3)
    if b.shape[0] != ab.shape[0] or b.shape[2] != ab.shape[1]:
        raise ValueError(f"right-hand sides {b.shape} for factors {ab.shape}")
    (_gbtrs_exports if NATIVE else _gbtrs_wrappers)(ab, piv, b, kl, ku, transpose)
    return b


def gbcon(ab: FloatArray, piv: npt.NDArray[np.int32], kl: int, ku: int, anorm: float) -> float:
    """LAPACK's reciprocal cond₁ estimate of one band matrix from its :func:`gbtrf`
    factors ab (N, ldab) and pivots (N,), given its 1-norm ``anorm``."""
    if NATIVE:
        n, rcond = ab.shape[0], ctypes.c_double(0.0)
        ints = [ctypes.c_int(v) for v in (n, kl, ku, ab.shape[1], 0)]
        at = [ctypes.addressof(v) for v in ints]
        norm, work, iwork = ctypes.c_double(anorm), np.empty(3 * n), np.empty(n, np.int32)
        piv = np.ascontiguousarray(piv, np.int32)
        _DGBCON(ctypes.addressof(_CHARS["1"]), at[0], at[1], at[2], ab.ctypes.data, at[3],
                piv.ctypes.data, ctypes.addressof(norm), ctypes.addressof(rcond),
                work.ctypes.data, iwork.ctypes.data, at[4])
        return rcond.value if ints[4].value == 0 else 0.0
    rcond, info = lapack.dgbcon(kl, ku, ab.T, piv - 1, anorm, norm="1")
    return float(rcond) if info == 0 else 0.0


def _gbtrf_exports(ab: FloatArray, kl: int, ku: int,
                   piv: npt.NDArray[np.int32]) -> npt.NDArray[np.bool_]:
    ints = [ctypes.c_int(v) for v in (ab.shape[1], kl, ku, ab.shape[2], 0)]
    n, k_l, k_u, ld, info = (ctypes.addressof(v) for v in ints)
    base, step = ab.ctypes.data, ab.strides[0]
    p_base, p_step = piv.ctypes.data, piv.strides[0]
    ok = np.empty(ab.shape[0], bool)
    for k in range(ab.shape[0]):
        _DGBTRF(n, n, k_l, k_u, base + k * step, ld, p_base + k * p_step, info)
        ok[k] = ints[4].value == 0
    return ok


def _gbtrs_exports(ab: FloatArray, piv: npt.NDArray[np.int32], b: FloatArray, kl: int,
                   ku: int, transpose: bool) -> None:
    ints = [ctypes.c_int(v) for v in (ab.shape[1], kl, ku, b.shape[1], ab.shape[2], 0)]
    n, k_l, k_u, q, ld, info = (ctypes.addressof(v) for v in ints)
    trans = ctypes.addressof(_CHARS["T" if transpose else "N"])
    base, step = ab.ctypes.data, ab.strides[0]
    p_base, p_step = piv.ctypes.data, piv.strides[0]
    b_base, b_step = b.ctypes.data, b.strides[0]
    for k in range(ab.shape[0]):
        _DGBTRS(trans, n, k_l, k_u, q, base + k * step, ld, p_base + k * p_step,
                b_base + k * b_step, n, info)


def _gbtrf_wrappers(ab: FloatArray, kl: int, ku: int,
                    piv: npt.NDArray[np.int32]) -> npt.NDArray[np.bool_]:
    ok = np.empty(ab.shape[0], bool)
    for k in range(ab.shape[0]):
        _, p, info = lapack.dgbtrf(ab[k].T, kl, ku, overwrite_ab=1)
        piv[k] = p + 1  # scipy's wrapper gives them 0-based
        ok[k] = info == 0
    return ok


def _gbtrs_wrappers(ab: FloatArray, piv: npt.NDArray[np.int32], b: FloatArray, kl: int,
                    ku: int, transpose: bool) -> None:
    for k in range(ab.shape[0]):
        b[k] = lapack.dgbtrs(ab[k].T, kl, ku, b[k].T, piv[k] - 1, trans=int(transpose))[0].T


def _potrf_wrappers(a: FloatArray) -> npt.NDArray[np.bool_]:
    return np.array([lapack.dpotrf(ak.T, lower=1, clean=0, overwrite_a=1)[1] == 0
                     for ak in a], bool).reshape(a.shape[0])


def _potrs_wrappers(factors: FloatArray, b: FloatArray, elements: Iterable[int]) -> None:
    for i, k in enumerate(elements):
        b[i] = lapack.dpotrs(factors[k].T, b[i].T, lower=1)[0].T


def _exports_work() -> bool:
    """Whether the exports were found with the expected signatures and solve a small
    system right: [[4, 2], [2, 3]] x = [2, 1] has x = [0.5, 0]."""
    if None in (_DPOTRF, _DPOTRS, _DGBTRF, _DGBTRS, _DGBCON):
        return False
    a, b = np.array([[[4.0, 2.0], [2.0, 3.0]]]), np.array([[2.0, 1.0]])
    if not _potrf_exports(a).all():
        return False
    _potrs_exports(a, b, [0])
    if not np.allclose(b, [[0.5, 0.0]], atol=1e-14):
        return False
    # the same matrix in band storage (kl = ku = 1, ldab = 4; C-ordered rows are columns):
    # pivoting swaps nothing; Aᵀ = A, so the transposed solve gives the same x
    ab = np.array([[[0.0, 0.0, 4.0, 2.0], [0.0, 2.0, 3.0, 0.0]]])
    piv = np.zeros((1, 2), np.int32)
    if not _gbtrf_exports(ab, 1, 1, piv).all():
        return False
    b = np.array([[[2.0, 1.0]]])
    _gbtrs_exports(ab, piv, b, 1, 1, True)
    return bool(np.allclose(b, [[[0.5, 0.0]]], atol=1e-14))


#: Whether the GIL-free exports are used (else scipy's Python wrappers: the same results).
NATIVE = _exports_work()
