"""The compiled-program disk cache: ``compile(..., cache=True | path)``.

An entry is keyed by a fingerprint of the problem's *structure* — its expression tree with
every leaf replaced by its position of first appearance (shape, attributes and the name the
user gave; never cvxpy's ids or a parameter's value), every constant by a hash of its
value, every atom's and constraint's own data (axis, p, ...) — together with the
parameter/variable request (as positions), the compile options and this format's version.
Parameter values never enter it; two problems that differ anywhere in structure or
constants get different keys. An unknown kind of atom data makes the problem uncacheable
(compiled as usual), never a guess.

A file holds two pickles: a header (magic, format version, the dpplayers/cvxpy/numpy/scipy
versions and a hash of dpplayers' source, the fingerprint, the payload's SHA-256) and the payload (the program's state
without its ``cp.Problem``). A header that does not match — another version, another key,
a damaged payload — means the entry is rebuilt and overwritten, never used. Files are
written to a temporary name and renamed, so a reader never sees half a file. Only point
the cache at a directory you trust: loading an entry unpickles it.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import io
import os
import pickle
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cvxpy as cp
import numpy as np
import scipy
import scipy.sparse as sp

from ._version import __version__
from .errors import given_name

#: Bumped whenever the file layout or the pickled program's fields change.
FORMAT_VERSION = 1
MAGIC = b"dpplayers-compiled-program"
#: The default directory when ``cache=True``; ``$DPPLAYERS_CACHE`` overrides it.
DEFAULT_DIR = Path("~/.cache/dpplayers")


class Uncacheable(Exception):
    """The problem holds something the fingerprint cannot describe exactly."""


def cache_dir(cache: bool | str | os.PathLike[str]) -> Path:
    """``cache=True`` → ``$DPPLAYERS_CACHE`` or ``~/.cache/dpplayers``; a path → itself."""
    if cache is True:
        return Path(os.environ.get("DPPLAYERS_CACHE") or DEFAULT_DIR).expanduser()
    return Path(cache).expanduser()


@functools.cache
def source_digest() -> str:
    """A hash of dpplayers' own source files: a program pickled by other code (a checkout
    between releases: the version number alone does not change) is never loaded."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\x00" + path.read_bytes())
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """The versions an entry is valid for (a pickle from another may not even load)."""
    return {"format": str(FORMAT_VERSION), "dpplayers": __version__, "source": source_digest(),
            "cvxpy": cp.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "python": f"{sys.version_info.major}.{sys.version_info.minor}"}


def fingerprint(problem: cp.Problem, parameters: Sequence[cp.Parameter] | None,
                variables: Sequence[cp.Variable] | None, options: dict[str, Any]) -> str:
    """The SHA-256 key of (structure, request, options); raises :class:`Uncacheable`."""
    walker = _Walker()
    walker.add("objective", type(problem.objective).__name__)
    walker.expression(problem.objective.expr)
    duals: dict[int, tuple[int, int]] = {}
    for i, con in enumerate(problem.constraints):
        walker.add("constraint", i, type(con).__name__)
        # cvxpy's constraint data ends with the constraint's id (what copies keep): drop it
        data = list(con.get_data() or [])
        if data and type(data[-1]) is int and data[-1] == con.id:
            data = data[:-1]
        walker.value(data)
        for arg in con.args:
            walker.expression(arg)
        duals.update({dv.id: (i, k) for k, dv in enumerate(con.dual_variables)})
    params = problem.parameters() if parameters is None else list(parameters)
    walker.add("parameters", [walker.position(p) for p in params])
    if variables is None:
        walker.add("variables", None)
    else:
        walker.add("variables", [("dual", *duals[v.id]) if v.id in duals else walker.position(v)
                                 for v in variables])
    walker.add("options", sorted((k, repr(v)) for k, v in options.items()))
    return walker.digest()


class _Walker:
    """Feeds a canonical description of a problem into one hash."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._leaves: dict[int, int] = {}

    def add(self, *items: Any) -> None:
        self._hash.update(repr(items).encode() + b"\x00")

    def digest(self) -> str:
        return self._hash.hexdigest()

    def position(self, leaf: Any) -> int:
        if not isinstance(leaf, cp.Variable | cp.Parameter) or leaf.id not in self._leaves:
            raise Uncacheable(f"{leaf} is not a leaf of the problem")
        return self._leaves[leaf.id]

    def expression(self, expr: Any) -> None:
        if isinstance(expr, cp.Variable | cp.Parameter):
            if expr.id not in self._leaves:
                self._leaves[expr.id] = len(self._leaves)
                self.add("new leaf", type(expr).__name__, expr.shape, given_name(expr))
                self.value(sorted(expr.attributes.items()))
            self.add("leaf", self._leaves[expr.id])
            return
        if isinstance(expr, cp.Constant):
            self.add("constant", expr.shape)
            self.value(expr.value)
            return
        if not isinstance(expr, cp.Expression):
            raise Uncacheable(f"unexpected node {type(expr).__name__}")
        self.add("atom", type(expr).__module__, type(expr).__qualname__, expr.shape,
                 len(expr.args))
        self.value(expr.get_data())
        for arg in expr.args:
            self.expression(arg)

    def value(self, value: Any) -> None:
        """Atom data, attributes, constants: exactly, by type, or Uncacheable."""
        if value is None or isinstance(value, bool | int | float | complex | str | np.generic):
            self.add(type(value).__name__, value.item() if isinstance(value, np.generic) else value)
        elif isinstance(value, enum.Enum):
            self.add("enum", type(value).__qualname__, value.name)
        elif isinstance(value, np.ndarray):
            arr = np.ascontiguousarray(value)
            if arr.dtype == object:
                self.add("object array", arr.shape)
                for v in arr.ravel():
                    self.value(v)
                return
            self.add("array", arr.dtype.str, arr.shape, hashlib.sha256(arr.tobytes()).hexdigest())
        elif sp.issparse(value):
            csc = sp.csc_array(value)
            csc.sort_indices()
            self.add("sparse", csc.shape)
            for part in (csc.data, csc.indices, csc.indptr):
                self.value(np.asarray(part))
        elif isinstance(value, slice):
            self.add("slice")
            self.value([value.start, value.stop, value.step])
        elif isinstance(value, list | tuple):
            self.add(type(value).__name__, len(value))
            for v in value:
                self.value(v)
        elif isinstance(value, dict):
            self.add("dict", len(value))
            for k, v in value.items():
                self.value(k)
                self.value(v)
        elif isinstance(value, cp.Expression):
            self.expression(value)
        else:
            raise Uncacheable(f"cannot describe {type(value).__name__} exactly")


def load(path: Path, key: str, expected: dict[str, str]) -> dict[str, Any] | None:
    """The stored state at ``path`` if its header matches, else None (missing, stale,
    another key or damaged: the caller rebuilds and overwrites it)."""
    try:
        with open(path, "rb") as f:
            header = pickle.load(f)
            payload = f.read()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, MemoryError):
        return None
    if not (isinstance(header, dict) and header.get("magic") == MAGIC
            and header.get("versions") == expected and header.get("key") == key
            and header.get("sha256") == hashlib.sha256(payload).hexdigest()):
        return None
    try:
        state = pickle.loads(payload)
    except Exception:  # a payload that matched its hash yet fails to load: rebuild
        return None
    return state if isinstance(state, dict) else None


def store(path: Path, key: str, expected: dict[str, str], state: dict[str, Any]) -> None:
    """Write header + payload to a temporary file beside ``path``, then rename it there."""
    payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    header = {"magic": MAGIC, "versions": expected, "key": key,
              "sha256": hashlib.sha256(payload).hexdigest()}
    buffer = io.BytesIO()
    pickle.dump(header, buffer, protocol=pickle.HIGHEST_PROTOCOL)
    buffer.write(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getvalue())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached(cache: bool | str | os.PathLike[str], key: str,
           build: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """(state, loaded): the entry for ``key`` if valid, else ``build()`` stored there."""
    path = cache_dir(cache) / f"{key}.pkl"
    expected = versions()
    state = load(path, key, expected)
    if state is not None:
        return state, True
    state = build()
    try:
        store(path, key, expected, state)
    except OSError:  # a read-only or full cache directory costs the cache, not the compile
        pass
    return state, False
