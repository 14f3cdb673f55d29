"""An optional compiled form of the booster: lleaves turns the trees into machine code with LLVM.

Compiled for a portable CPU ("x86-64" on x86_64, "generic" elsewhere), not the host's, so the
object file built here also runs in a container on another machine of the same triple. It is
optional: without lleaves/llvmlite, with `LIFECYCLE_COMPILED=off`, or on another platform, the
booster serves. lleaves loads an object file without any check, so every load here checks the
file's sha256 and the booster's against those recorded when it was compiled.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from ctypes import CFUNCTYPE, c_int32, c_void_p
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from tasks.core.errors import DataError, ModelIntegrityError

SWITCH = "LIFECYCLE_COMPILED"  # "off": never compile or load, the booster serves
SMALL_BATCH = 2048  # below it one thread: thread start-up and contention cost more than the rows take
CHUNKS_PER_THREAD = 8  # big inputs are split this many times a thread, for the threads to balance
PARITY_ATOL = 1e-9  # compiled and booster outputs may differ by this much, no more
ENTRY = "forest_root"  # lleaves' entry point: (rows in, outputs out, first row, end row)
# the entry with plain addresses: cheaper per call than lleaves' POINTER(c_double) arguments
ENTRY_TYPE = CFUNCTYPE(None, c_void_p, c_void_p, c_int32, c_int32)


class CompiledUnavailable(RuntimeError):
    """The compiled form cannot run here (switched off, no lleaves, another platform or version):
    the booster serves instead. Unlike ModelIntegrityError, nothing is wrong with the files."""


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def portable_cpu(machine: str | None = None) -> str:
    """The CPU to compile for: baseline x86-64 (runs on any x86_64), else LLVM's generic one."""
    return "x86-64" if (machine or platform.machine()).lower() in ("x86_64", "amd64") else "generic"


def switched_off() -> bool:
    return os.environ.get(SWITCH, "").strip().lower() == "off"


def toolchain() -> dict[str, str]:
    """This process's lleaves and llvmlite versions and LLVM triple; raises CompiledUnavailable."""
    if switched_off():
        raise CompiledUnavailable(f"switched off by {SWITCH}=off")
    try:
        import llvmlite.binding as llvm

        return {"lleaves": version("lleaves"), "llvmlite": version("llvmlite"), "triple": llvm.get_process_triple()}
    except (ImportError, PackageNotFoundError) as exc:
        raise CompiledUnavailable(f"lleaves/llvmlite cannot be imported: {exc}") from exc


def object_name(booster_sha256: str, tools: dict[str, str], cpu: str) -> str:
    return f"{booster_sha256[:16]}-lleaves{tools['lleaves']}-{tools['triple']}-{cpu}.o"


def compile_booster(booster_text: str, cache_dir: Path) -> tuple[dict | None, str]:
    """(info, "") for the object file of `booster_text` in `cache_dir`, compiled unless already
    there (cached by the booster's hash); (None, why) when it cannot be compiled here."""
    try:
        tools = toolchain()
    except CompiledUnavailable as exc:
        return None, str(exc)
    booster_sha256 = hashlib.sha256(booster_text.encode()).hexdigest()
    cpu = portable_cpu()
    path = Path(cache_dir) / object_name(booster_sha256, tools, cpu)
    recorded = path.with_name(f"{path.name}.sha256")  # written once compiled: a damaged cache file is redone
    if not (path.exists() and recorded.exists() and recorded.read_text() == sha256_of(path)):
        try:
            _compile(booster_text, path, cpu)
            recorded.write_text(sha256_of(path))
        except Exception as exc:  # optional: any failure means the booster serves
            return None, f"lleaves could not compile the booster: {type(exc).__name__}: {exc}"
    info = {"file": path.name, "sha256": recorded.read_text(), "booster_sha256": booster_sha256, **tools, "cpu": cpu}
    return info, ""


def _compile(booster_text: str, path: Path, cpu: str) -> None:
    """Compile into a temporary name, then rename: a half-written object file is never used."""
    import lleaves

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
    booster_file = partial.with_name(f"{partial.name}.txt")
    try:
        booster_file.write_text(booster_text)
        lleaves.Model(model_file=str(booster_file)).compile(cache=str(partial), target_cpu=cpu, target_cpu_features="")
        if not partial.exists():
            raise RuntimeError("lleaves wrote no object file")
        os.replace(partial, path)
    finally:
        booster_file.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)


def _threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class CompiledModel:
    """The compiled trees: feature matrix in, the booster's outputs out (its objective applied: a
    binary objective's sigmoid; a regression objective's value as it is)."""

    def __init__(self, engine, n_features: int, info: dict):
        self.info = dict(info)
        self._engine = engine  # the machine code lives as long as its execution engine
        self.n_features = n_features
        self._entry = ENTRY_TYPE(engine.get_function_address(ENTRY))

    @property
    def description(self) -> str:
        return f"compiled (lleaves {self.info['lleaves']}, {self.info['cpu']})"

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """The outputs for the rows of `matrix`: one thread below SMALL_BATCH rows, else one per core."""
        data = np.ascontiguousarray(matrix, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != self.n_features:  # the machine code reads n_features a row
            raise DataError(f"the compiled model takes (rows, {self.n_features}) matrices, not {data.shape}")
        rows = data.shape[0]
        if rows >= 2**31 - 1:
            raise DataError(f"{rows} rows is over the compiled model's limit of 2^31-2 a call")
        out = np.empty(rows, dtype=np.float64)
        source, target = data.ctypes.data, out.ctypes.data
        threads = 1 if rows < SMALL_BATCH else _threads()
        if threads == 1:
            self._entry(source, target, 0, rows)
            return out
        # several chunks a thread: a core busy with other work (the log's writer, another request)
        # holds up one small chunk, not half the rows
        step = max(SMALL_BATCH, math.ceil(rows / (threads * CHUNKS_PER_THREAD)))

        def part(start: int) -> None:
            self._entry(source, target, start, min(start + step, rows))

        with ThreadPoolExecutor(threads) as pool:  # the entry releases the GIL
            list(pool.map(part, range(0, rows, step)))
        return out


def load_compiled(booster_file: Path, object_file: Path, info: dict) -> CompiledModel:
    """The compiled model from `object_file`, once both files are those `info` recorded.

    Raises ModelIntegrityError when a file's sha256 differs (tampered or mixed up: refused), and
    CompiledUnavailable when this process cannot run it (switched off, no lleaves, another triple
    or lleaves/llvmlite version): the caller serves the booster then, never recompiles — what
    serves is what the gate checked, or the booster."""
    tools = toolchain()
    for path, key in ((object_file, "sha256"), (booster_file, "booster_sha256")):
        digest = sha256_of(path)
        if digest != info.get(key):
            raise ModelIntegrityError(
                f"{path}: sha256 {digest[:16]}… differs from the recorded {str(info.get(key))[:16]}…; "
                "refusing to load the compiled model"
            )
    differ = [
        f"{k} {info.get(k)} (here {tools[k]})" for k in ("triple", "lleaves", "llvmlite") if info.get(k) != tools[k]
    ]
    if differ:
        raise CompiledUnavailable(f"{object_file} was compiled for another platform: {', '.join(differ)}")
    n_features, outputs = booster_shape(booster_file.read_text())
    if outputs != 1:
        raise CompiledUnavailable("only single-output boosters (binary, regression) are compiled")
    return CompiledModel(_load_object(object_file.read_bytes(), info["cpu"]), n_features, info)


def booster_shape(booster_text: str) -> tuple[int, int]:
    """(features, outputs per iteration) from a LightGBM text model's header."""
    header = dict(line.split("=", 1) for line in booster_text.split("\n\n", 1)[0].splitlines() if "=" in line)
    return int(header["max_feature_idx"]) + 1, int(header.get("num_tree_per_iteration", "1"))


def _load_object(data: bytes, cpu: str):
    """An LLVM execution engine holding the object file's machine code: what lleaves does with a cached
    object, without importing lleaves (and pandas with it) into a serving worker."""
    import llvmlite.binding as llvm

    llvm.initialize()
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    machine = llvm.Target.from_triple(llvm.get_process_triple()).create_target_machine(
        cpu=cpu, features="", reloc="pic", codemodel="large"
    )
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), machine)
    engine.set_object_cache(getbuffer_func=lambda _module: data)
    engine.finalize_object()
    engine.run_static_constructors()
    return engine


def verified_compiled(
    booster_file: Path, object_file: Path, info: dict, booster, matrix: np.ndarray
) -> tuple[CompiledModel | None, str]:
    """`load_compiled`, kept only if it scores `matrix` as `booster` does; else (None, why not).
    ModelIntegrityError (a file differs from `info`) is raised, never turned into a fallback."""
    try:
        compiled = load_compiled(booster_file, object_file, info)
    except CompiledUnavailable as exc:
        return None, str(exc)
    difference = max_abs_difference(compiled, booster, matrix)
    if not difference <= PARITY_ATOL:
        return None, f"max |compiled − booster| = {difference:.3g} on {len(matrix)} rows, over {PARITY_ATOL:g}"
    return compiled, ""


def compiled_for(booster_text: str, cache_dir: Path) -> tuple[CompiledModel | None, str]:
    """The compiled model of `booster_text` (compiled into `cache_dir` or found there), or (None, why not)."""
    info, reason = compile_booster(booster_text, cache_dir)
    if info is None:
        return None, reason
    with tempfile.TemporaryDirectory(prefix="compiled-") as tmp:  # lleaves reads the booster from a file
        booster_file = Path(tmp) / "booster.txt"
        booster_file.write_text(booster_text)
        try:
            return load_compiled(booster_file, Path(cache_dir) / info["file"], info), ""
        except CompiledUnavailable as exc:
            return None, str(exc)


def max_abs_difference(compiled: CompiledModel, booster, matrix: np.ndarray) -> float:
    """max |compiled − booster| over the rows of `matrix` (inf where only one of them is NaN)."""
    if len(matrix) == 0:
        return 0.0
    ours = compiled.predict(matrix)
    theirs = booster.predict(matrix)
    diff = np.abs(ours - theirs)
    diff[np.isnan(ours) & np.isnan(theirs)] = 0.0
    return float(np.nan_to_num(diff, nan=np.inf).max())
