"""The user's parameters: their layout in θ̃, validation of values, batching, the GP log.

θ̃ = [θ; 1] stacks every parameter's entries (column-major, as cvxpy flattens) in the
order the user listed them, then a constant 1. The compiler's maps C act on θ̃, so this
module is the one place where user values become θ̃ (forward) and where cotangents on θ
become per-parameter arrays (backward).

With ``gp=True`` the cone program is in log space, and cvxpy's Dgp2Dcp enters a
parameter there through its log where it is a coefficient (a·x ↦ log a + log x) but as
itself where it is an exponent (x**c ↦ c·log x); one parameter may do both. θ then holds
log(p) for the first use and p for the second: a parameter used both ways gets a log copy,
rows after all the user's entries (θ̃ = [θ_user; log copies; 1]). Only the logged entries
must be positive, and the chain rule divides their cotangents by p (done in
:meth:`ParameterLayout.pull_back`).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import cvxpy as cp
import numpy as np
import numpy.typing as npt
from scipy.linalg import lapack

from .. import _lapack
from .._sparse import copy_tiled
from ..errors import ParameterError, given_name

FloatArray = npt.NDArray[np.float64]

#: Tolerance (relative to the largest entry) for the symmetric and PSD attribute checks.
ATTRIBUTE_TOL = 1e-8
#: Batched PSD/NSD values of at least this order are factorised one by one by LAPACK
#: (:mod:`dpplayers._lapack`), smaller ones by numpy's batched Cholesky, whose per-element
#: cost is less there. Measured, one thread, minimum of 20 (2026-12-07): order 200, 32
#: matrices 3.7 ms against numpy's 5.3 (128: 20 against 34 ms); order 100 0.85 against 1.06;
#: order 50 0.23 against 0.23; order 30 0.11 against 0.06.
DEFINITE_EACH_MIN_ORDER = 50
#: Asymmetry (relative to the largest entry) of a symmetric/PSD/NSD value above which the
#: layer warns (once) that it uses the symmetric part: clearly more than rounding.
ASYMMETRY_WARN_TOL = 1e-6
#: How far a value may sit on the wrong side of 0 for a sign attribute: CVXPY's own rule
#: (a value is accepted where its projection onto the closed orthant moves it at most this).
SIGN_TOL = cp.settings.GENERAL_PROJECTION_TOL


@dataclass(frozen=True)
class ParameterSpec:
    """One user parameter: its name, shape, offset in θ and declared attributes.

    ``name`` is the user's name, or (``named`` False) its position "#i", given by
    :class:`ParameterLayout`: cvxpy's generated names (``param61``) mean nothing to a user.
    """

    name: str
    shape: tuple[int, ...]
    offset: int
    log: bool  # θ's rows at offset hold log(value): a gp=True coefficient
    log_copy: int | None = None  # rows holding log(value) where the rows at offset hold it
    # as is (a gp=True parameter that is both an exponent and a coefficient)
    nonneg: bool = False
    nonpos: bool = False
    pos: bool = False
    neg: bool = False
    symmetric: bool = False
    psd: bool = False
    nsd: bool = False
    named: bool = True

    @functools.cached_property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @classmethod
    def of(cls, param: cp.Parameter, offset: int, log: bool,
           log_copy: int | None = None) -> ParameterSpec:
        attrs = param.attributes
        name = given_name(param)
        return cls(
            name=name or "",
            named=name is not None,
            shape=tuple(int(d) for d in param.shape),
            offset=offset,
            log=log,
            log_copy=log_copy,
            nonneg=bool(attrs.get("nonneg")),
            nonpos=bool(attrs.get("nonpos")),
            pos=bool(attrs.get("pos")),
            neg=bool(attrs.get("neg")),
            symmetric=bool(attrs.get("symmetric")),
            psd=bool(attrs.get("PSD")),
            nsd=bool(attrs.get("NSD")),
        )

    @functools.cached_property
    def display(self) -> str:
        """The name in lists: "A", or "#1 (shape (3,))" for an unnamed parameter."""
        return self.name if self.named else f"{self.name} (shape {self.shape})"

    @functools.cached_property
    def label(self) -> str:
        """How messages name this parameter: "parameter 'A'" or "parameter #1 (shape (3,))"."""
        return f"parameter '{self.name}'" if self.named else f"parameter {self.display}"

    @functools.cached_property
    def logged(self) -> bool:
        """Whether the cone program reads log(value) (so the value must be positive)."""
        return self.log or self.log_copy is not None

    @functools.cached_property
    def log_offset(self) -> int | None:
        """First row of θ holding log(value), None if the value enters only as itself."""
        return self.offset if self.log else self.log_copy

    @functools.cached_property
    def constrained(self) -> bool:
        """Whether any attribute is declared (values need checking)."""
        return (self.nonneg or self.nonpos or self.pos or self.logged or self.neg
                or self.symmetric or self.psd or self.nsd)

    @functools.cached_property
    def _sign_rules(self) -> tuple[tuple[np.ufunc, float, str], ...]:
        """The declared sign rules: (comparison marking a bad entry, bound, word)."""
        # CVXPY's rule: pos/neg values may be 0 (only gp=True needs them > 0, for the log)
        rules = (
            (self.nonneg, np.less, -SIGN_TOL, "nonnegative"),
            (self.pos and not self.logged, np.less, -SIGN_TOL, "positive"),
            (self.nonpos, np.greater, SIGN_TOL, "nonpositive"),
            (self.neg, np.greater, SIGN_TOL, "negative"),
            (self.logged, np.less_equal, 0.0, "positive"),
        )
        return tuple((compare, bound, word) for declared, compare, bound, word in rules
                     if declared)

    def check_attributes(self, value: FloatArray, batched: bool) -> bool:
        """Raise ParameterError if ``value`` breaks a declared attribute (first bad element).

        A symmetric/PSD/NSD parameter is defined on every square matrix through its
        symmetric part sym(X) = (X + Xᵀ)/2 (the compiled maps read only that, so gradients
        are sym of the gradient); PSD/NSD is checked on sym(X). Returns whether X is
        asymmetric beyond rounding (ASYMMETRY_WARN_TOL), for the caller to warn once."""
        if not self.constrained:
            return False
        v = value if batched else value[None]
        for compare, bound, word in self._sign_rules:
            bad = compare(v, bound)
            if bad.any():
                k = int(np.argwhere(bad.reshape(len(v), -1).any(axis=1))[0, 0])
                why = (" (with gp=True it enters the problem through its log, as a coefficient; "
                       "only an exponent may have any sign)"
                       if self.logged and word == "positive" else "")
                where = _element_finder(self.label, batched)
                raise ParameterError(f"{where(k)} must be {word}{why}, but has entries {v[k][bad[k]][:3]}.")
        if not (self.symmetric or self.psd or self.nsd):
            return False
        # max |entry| as max(max, −min): two reductions and no |v| temporary; d = X − Xᵀ is
        # antisymmetric, so max |d| = max d. One matrix takes whole-array reductions and
        # Python floats (numpy's axis-tuple reductions cost twice as much).
        if not batched:
            big = max(1.0, float(value.max()), -float(value.min()))
            asym = float((value - value.T).max())
            if self.psd or self.nsd:  # on sym(X); a copy only where X is not symmetric
                matrix = value if asym <= ATTRIBUTE_TOL * big else 0.5 * (value + value.T)
                self._check_definite(matrix[None], np.array([big]),
                                     _element_finder(self.label, batched))
            return asym > ASYMMETRY_WARN_TOL * big
        scale = np.maximum(1.0, np.maximum(v.max(axis=(-2, -1)), -v.min(axis=(-2, -1))))
        asym = (v - np.swapaxes(v, -1, -2)).max(axis=(-2, -1))
        if self.psd or self.nsd:  # on sym(X); a copy only where X is not symmetric
            rounding = bool((asym <= ATTRIBUTE_TOL * scale).all())
            self._check_definite(v if rounding else 0.5 * (v + np.swapaxes(v, -1, -2)),
                                 scale, _element_finder(self.label, batched))
        return bool((asym > ASYMMETRY_WARN_TOL * scale).any())

    def _check_definite(self, v: FloatArray, scale: FloatArray, where) -> None:
        """PSD/NSD up to a relative tolerance: Cholesky of the shifted matrix (symmetric up
        to ATTRIBUTE_TOL, symmetrised by the caller otherwise) exists iff it is positive
        definite, the cheap common case; eigenvalues only name the culprit."""
        sign = 1.0 if self.psd else -1.0
        shift = ATTRIBUTE_TOL * 1e2 * scale
        if len(v) == 1:  # LAPACK directly: numpy's wrapper costs more than a 50×50 factor
            a = sign * v[0].T  # Fortran order: potrf factorises it in place, no copy
            a.T.reshape(-1)[:: a.shape[0] + 1] += shift[0]  # the diagonal, through a view
            if lapack.dpotrf(a, lower=1, clean=0, overwrite_a=1)[1] == 0:
                return
        else:
            shifted = sign * v
            diagonal = np.arange(v.shape[-1])
            shifted[:, diagonal, diagonal] += shift[:, None]
            if v.shape[-1] >= DEFINITE_EACH_MIN_ORDER:
                if _lapack.potrf(shifted).all():
                    return
            else:
                try:
                    np.linalg.cholesky(shifted)
                    return
                except np.linalg.LinAlgError:
                    pass
        eig = np.linalg.eigvalsh((0.5 * sign) * (v + np.swapaxes(v, -1, -2)))[..., 0]
        bad = eig < -shift
        if bad.any():
            k = int(np.argmax(bad))
            kind = "PSD" if self.psd else "NSD"
            raise ParameterError(
                f"{where(k)} is declared {kind} but its extreme eigenvalue is "
                f"{sign * eig[k]:.3g}; pass a {kind} matrix (e.g. L @ L.T + eps*I)."
            )


def _element_finder(label: str, batched: bool):
    return (lambda k: f"{label} (batch element {k})") if batched else (lambda k: label)


@dataclass(frozen=True)
class ParameterLayout:
    """How the user's parameters sit in θ, and conversion of values to and from it."""

    specs: tuple[ParameterSpec, ...]
    #: parameters already warned about asymmetric values (once per layer and parameter)
    warned: set[str] = field(default_factory=set, compare=False, repr=False)

    def __post_init__(self) -> None:
        """Name each unnamed parameter "#i" by its position in the call."""
        named = tuple(s if s.named else replace(s, name=f"#{i}") for i, s in enumerate(self.specs))
        object.__setattr__(self, "specs", named)

    @functools.cached_property
    def size(self) -> int:
        """Number of the user's parameter entries (cached: read on every forward pass)."""
        return sum(s.size for s in self.specs)

    @functools.cached_property
    def theta_size(self) -> int:
        """Number of rows of θ (θ̃ without the constant): the user's entries, then the log
        copies of gp parameters that enter both as themselves and through their log."""
        return self.size + sum(s.size for s in self.specs if s.log_copy is not None)

    @property
    def names(self) -> tuple[str, ...]:
        """The parameters as messages list them (see :attr:`ParameterSpec.display`)."""
        return tuple(s.display for s in self.specs)

    def stack(self, values: Sequence[npt.ArrayLike]) -> tuple[FloatArray, FloatArray, int | None]:
        """Validate values and return (θ̃ of shape (q+1, B), raw values (p, B), batch size
        or None), q = ``theta_size``, p = ``size``.

        Any value may carry one leading batch axis; unbatched values broadcast. The raw
        values (before the GP logs) are returned for the GP chain rule. Values are written
        straight into θ̃, then checked: one finite test on all of them (their sum of
        squares, one BLAS call, is finite; else each is tested), one test per sign
        rule on all the rows it covers (:attr:`_sign_checks`; only where one fails are the
        parameters checked one by one, for the message), then the matrix attributes
        (symmetric, PSD, NSD) per parameter. This runs on every forward pass, so it avoids
        copies and per-parameter tests.
        """
        self.check_given(values)
        shapes = tuple([v.shape if isinstance(v, _ARRAY_TYPES) else np.shape(v) for v in values])
        batch = None if shapes == self._shapes else self.batch_size(shapes)
        nb = 1 if batch is None else batch
        theta = np.empty((self.theta_size + 1, nb))
        arrays = []
        for spec, value in zip(self.specs, values):
            arr = (value if isinstance(value, np.ndarray) and value.dtype == _FLOAT64
                   else _real_array(value, spec.label))  # (float64 arrays as they are)
            is_batched = arr.ndim != len(spec.shape)  # batch_size checked the shapes
            if arr.ndim:
                _write_fortran(theta[spec.offset : spec.offset + spec.size], arr, is_batched)
            else:  # an unbatched scalar: its row, broadcast over the columns
                theta[spec.offset] = arr
            arrays.append((arr, is_batched))
        theta[-1] = 1.0
        entries = theta[: self.size].reshape(-1)  # a view: θ̃ is C-ordered
        if not math.isfinite(entries @ entries):  # NaN or ±Inf anywhere (or a huge value)
            self._raise_not_finite(arrays)
        for rows, use_min, bound, strict in self._sign_checks:
            block = theta[rows]
            if (block.min() < bound if strict else block.min() <= bound) if use_min else (
                    block.max() > bound):
                for spec, (arr, is_batched) in zip(self.specs, arrays):  # raises, naming it
                    if spec.check_attributes(arr, is_batched):
                        self._warn_asymmetric(spec)
        for i in self._matrix_checked:
            arr, is_batched = arrays[i]
            if self.specs[i].check_attributes(arr, is_batched):
                self._warn_asymmetric(self.specs[i])
        log_rows = self._log_rows
        if not log_rows.size:
            return theta, theta[:-1], batch
        raw = theta[: self.size].copy()
        rows, sources = self._log_slices
        if rows is None:
            theta[log_rows] = np.log(raw[self._log_sources])
        else:  # one run of rows from one run of entries (the usual gp=True case): views
            np.log(raw[sources], out=theta[rows])
        return theta, raw, batch

    @functools.cached_property
    def _log_slices(self) -> tuple[slice | None, slice | None]:
        """(:attr:`_log_rows`, :attr:`_log_sources`) as slices where both are one run."""
        rows, sources = _as_slice(self._log_rows), _as_slice(self._log_sources)
        if isinstance(rows, slice) and isinstance(sources, slice):
            return rows, sources
        return None, None

    @functools.cached_property
    def _shapes(self) -> tuple[tuple[int, ...], ...]:
        """Every parameter's shape: values of exactly these shapes are one unbatched call."""
        return tuple(s.shape for s in self.specs)

    @functools.cached_property
    def _sign_checks(self) -> tuple[tuple[slice | npt.NDArray[np.intp], bool, float, bool], ...]:
        """The sign rules of :meth:`ParameterSpec.check_attributes`, each over all the rows
        of θ it covers: (rows, test the minimum (else the maximum), bound, strict). A value
        passes all of them iff it passes them parameter by parameter."""
        rules = ((lambda s: s.nonneg, True, -SIGN_TOL, True),
                 (lambda s: s.pos and not s.logged, True, -SIGN_TOL, True),
                 (lambda s: s.nonpos, False, SIGN_TOL, True),
                 (lambda s: s.neg, False, SIGN_TOL, True),
                 (lambda s: s.logged, True, 0.0, False))
        out = []
        for declared, use_min, bound, strict in rules:
            rows = [np.arange(s.offset, s.offset + s.size) for s in self.specs if declared(s)]
            if rows:
                out.append((_as_slice(np.concatenate(rows)), use_min, bound, strict))
        return tuple(out)

    @functools.cached_property
    def _matrix_checked(self) -> tuple[int, ...]:
        """The parameters declared symmetric, PSD or NSD (checked one by one)."""
        return tuple(i for i, s in enumerate(self.specs) if s.symmetric or s.psd or s.nsd)

    def restack(self, raw: FloatArray) -> FloatArray:
        """Raw values (p, B) → θ̃ (q+1, B) as :meth:`stack` builds it (GP logs included)."""
        theta = np.empty((self.theta_size + 1, raw.shape[1]))
        theta[: self.size] = raw[: self.size]
        theta[-1] = 1.0
        if self._log_rows.size:
            theta[self._log_rows] = np.log(raw[self._log_sources])
        return theta

    def _raise_not_finite(self, arrays: list[tuple[FloatArray, bool]]) -> None:
        """Name the first parameter (and batch element) with a NaN or Inf entry (none: the
        sum of squares that sent here overflowed on finite values, which pass)."""
        for spec, (arr, is_batched) in zip(self.specs, arrays):
            finite = np.isfinite(arr)
            if finite.all():
                continue
            if is_batched:
                k = int(np.argwhere(~finite.reshape(len(arr), -1).all(axis=1))[0, 0])
                raise ParameterError(f"{spec.label} has NaN or Inf entries in batch element {k}.")
            raise ParameterError(f"{spec.label} has NaN or Inf entries.")

    def batch_size(self, shapes: Sequence[tuple[int, ...]]) -> int | None:
        """Check the number and shapes of parameter values; return the batch size (None if
        no value is batched). Shapes only, so adapters can call it while tracing."""
        self.check_count(len(shapes))
        batch, batch_from = None, None
        for spec, shape in zip(self.specs, shapes):
            shape = tuple(shape)
            if shape == spec.shape:
                continue
            if len(shape) != len(spec.shape) + 1 or shape[1:] != spec.shape:
                raise ParameterError(
                    f"Invalid parameter shape: {spec.label} expects shape {spec.shape} "
                    f"(or (batch, *{spec.shape})), got shape {shape}."
                )
            if batch is not None and shape[0] != batch:
                raise ParameterError(
                    f"Inconsistent batch sizes: {spec.label} has batch size "
                    f"{shape[0]} but {batch_from.label} has {batch}."
                )
            if shape[0] == 0:
                raise ParameterError(
                    f"{spec.label} has batch size 0 (shape {shape}): there is nothing to "
                    "solve; pass at least one batch element or leave out the batch axis."
                )
            batch, batch_from = shape[0], spec
        return batch

    def _warn_asymmetric(self, spec: ParameterSpec) -> None:
        """Say once per layer and parameter that an asymmetric value is symmetrised."""
        if spec.name in self.warned:
            return
        self.warned.add(spec.name)
        kind = "PSD" if spec.psd else "NSD" if spec.nsd else "symmetric"
        warnings.warn(
            f"{spec.label} is declared {kind} but its value is not symmetric (beyond "
            f"rounding); the layer uses its symmetric part (X + X^T)/2, and the gradient "
            f"with respect to X is the symmetric part of the gradient. (Warned once per layer.)",
            UserWarning, stacklevel=4)

    def check_count(self, count: int) -> None:
        """Raise ParameterError unless ``count`` values were passed (one per parameter)."""
        if count != len(self.specs):
            raise ParameterError(
                f"A tensor must be provided for each CVXPY parameter: expected "
                f"{len(self.specs)} parameter values ({', '.join(self.names)}), got {count}."
            )

    def check_given(self, values: Sequence[object]) -> None:
        """Raise ParameterError for a wrong count or a missing (None) value, naming it:
        before any conversion, which would fail on None without saying which."""
        self.check_count(len(values))
        for spec, value in zip(self.specs, values):
            if value is None:
                raise ParameterError(f"{spec.label} has no value (None); pass an array of "
                                     f"shape {spec.shape} (or (batch, *{spec.shape})).")

    def log_rows(self) -> npt.NDArray[np.int64]:
        """Rows of θ that hold log(value) (gp=True coefficients and log copies)."""
        return self._log_rows

    @functools.cached_property
    def _log_rows(self) -> npt.NDArray[np.int64]:
        rows = [np.arange(s.log_offset, s.log_offset + s.size) for s in self.specs if s.logged]
        return np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)

    @functools.cached_property
    def _log_sources(self) -> npt.NDArray[np.int64]:
        """For each of ``_log_rows``, the user's entry whose log it holds (distinct)."""
        rows = [np.arange(s.offset, s.offset + s.size) for s in self.specs if s.logged]
        return np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)

    @functools.cached_property
    def _log_only_rows(self) -> npt.NDArray[np.int64]:
        """The user's entries that θ holds only as a log (no row holds the value itself)."""
        rows = [np.arange(s.offset, s.offset + s.size) for s in self.specs if s.log]
        return np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)

    def to_user(self, g: FloatArray, raw: FloatArray) -> FloatArray:
        """Cotangents on θ's rows (q, B, ...) → on the user's entries (p, B, ...): a log
        row's cotangent is divided by the value (d log p = dp / p) and added to its entry's
        (a parameter used both ways sums both)."""
        rows = self._log_rows
        if not rows.size:
            return g
        sources = self._log_sources
        scale = raw[sources].reshape(raw[sources].shape + (1,) * (g.ndim - 2))
        from_logs = g[rows] / scale
        out = g[: self.size].copy()
        out[self._log_only_rows] = 0.0
        out[sources] += from_logs
        return out

    def stack_tangents(self, tangents: Sequence[npt.ArrayLike | None], batch: int | None,
                       raw: FloatArray) -> FloatArray:
        """Tangents per parameter → dθ (q, B), applying the GP chain rule d log p = dp / p."""
        if len(tangents) != len(self.specs):
            raise ParameterError(
                f"expected {len(self.specs)} tangents ({', '.join(self.names)}), got {len(tangents)}."
            )
        nb = 1 if batch is None else batch
        dtheta = np.zeros((self.theta_size, nb))
        for spec, t in zip(self.specs, tangents):
            if t is None:
                continue
            arr = _real_array(t, f"the tangent for {spec.label}")
            batched = batch is not None and arr.shape == (nb, *spec.shape)
            if arr.shape != spec.shape and not batched:
                raise ParameterError(
                    f"tangent for {spec.label} expects shape "
                    f"{spec.shape if batch is None else (batch, *spec.shape)}, got {arr.shape}."
                )
            _write_fortran(dtheta[spec.offset : spec.offset + spec.size], arr, batched)
        rows = self._log_rows
        if rows.size:
            sources = self._log_sources
            dtheta[rows] = dtheta[sources] / raw[sources]
        return dtheta

    def pull_back(self, gtheta: FloatArray, batch: int | None, raw: FloatArray) -> tuple[FloatArray, ...]:
        """Cotangent on θ (q, B) → one array per parameter (batched iff the call was)."""
        g = self.to_user(gtheta, raw)
        if batch is None:  # column-major order is the order itself
            flat = g[:, 0]
            return tuple(flat[s.offset : s.offset + s.size].reshape(s.shape, order="F")
                         for s in self.specs)
        out = []
        for spec in self.specs:
            block = g[spec.offset : spec.offset + spec.size]  # (size, B)
            arr = block.T.reshape((block.shape[1], *spec.shape[::-1])).transpose(
                (0, *range(len(spec.shape), 0, -1))
            )
            out.append(arr)
        return tuple(out)


_FLOAT64 = np.dtype(np.float64)
#: Values whose ``shape`` is read directly (numpy's ``np.shape`` converts the rest).
_ARRAY_TYPES = (np.ndarray, np.generic)
#: Real scalar types taken as they are (any other value is checked for complex entries).
_REAL_SCALARS = (float, int, np.float64, np.float32, np.int64, np.int32)


def _as_slice(rows: npt.NDArray[np.intp]) -> slice | npt.NDArray[np.intp]:
    """Sorted distinct rows as a slice where they are one run (a view, no gather)."""
    if rows.size and rows[-1] - rows[0] + 1 == rows.size and np.all(np.diff(rows) == 1):
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


def _real_array(value: npt.ArrayLike, what: str) -> FloatArray:
    """``value`` as float64; a complex value with a nonzero imaginary part is refused by name
    (numpy's cast would drop it with only a ComplexWarning: a silently wrong answer)."""
    if type(value) in _REAL_SCALARS:  # a scalar value: no complex part to look for
        return np.array(value, dtype=np.float64)
    arr = np.asarray(value)
    if np.iscomplexobj(arr):
        if np.any(arr.imag != 0):
            raise ParameterError(
                f"{what} has complex entries (e.g. {arr.reshape(-1)[np.flatnonzero(arr.imag)[0]]}), "
                "but the parameter is real; pass real values (complex parameters are not "
                "supported: split them into real and imaginary parameters).")
        arr = arr.real
    return arr.astype(np.float64, copy=False)


def _write_fortran(dest: FloatArray, arr: FloatArray, batched: bool) -> None:
    """Write (B, *shape) or shape into ``dest`` (size, nb), column-major, with one copy
    (an unbatched value broadcasts over the nb columns). Runs per parameter on every
    forward pass, so scalars and vectors take the short way (array methods, not numpy's
    Python-level wrappers)."""
    ndim = arr.ndim - 1 if batched else arr.ndim
    if ndim <= 1:  # column-major order is the order itself
        if batched:
            copy_tiled(dest, arr.T, (0,))
        else:
            dest[...] = arr.reshape(-1, 1)
        return
    if batched:  # a transposition: by tiles over the entries' two outer axes
        src = arr.transpose((*range(arr.ndim - 1, 0, -1), 0))
        copy_tiled(dest.reshape(*src.shape[:-1], dest.shape[1]), src, (0, 1))
    else:
        dest.reshape(*arr.shape[::-1], dest.shape[1])[...] = arr.T[..., None]
