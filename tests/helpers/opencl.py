"""Run TVM's OpenCL kernels on PoCL (a CPU OpenCL implementation: work-groups, local memory and
barriers behave as on a GPU), launched as the compiled host code would launch them.

TVM 0.26's wheel has no OpenCL runtime, so the host side is replayed here: :func:`build_opencl`
compiles PrimFuncs with ``tvm.compile`` for an OpenCL target and keeps, beside the OpenCL C, the
module right after TVM's ``tirx.SplitHostDevice`` pass.  There each host function is a short list
of statements (``Bind``, ``DeclBuffer``, ``AllocBuffer`` for workspaces, ``AssertStmt``) and
``T.call_packed(kernel, args..., launch extents...)`` calls: the kernel's arguments, then one extent
per entry of the kernel's ``tirx.kernel_launch_params`` (``blockIdx.*`` = work-groups,
``threadIdx.*`` = work-group size).
:func:`plan_launches` evaluates those statements for concrete arrays, so launch sizes and scalar
arguments come from the compiled function, never from hand-written formulas.
"""

from __future__ import annotations

import dataclasses
import math
import operator

import numpy as np
import tvm


def pocl_missing() -> str:
    """Why PoCL cannot run here, or ``""``."""
    try:
        import pyopencl as cl
    except ImportError:
        return "pyopencl is not installed"
    try:
        platforms = [p for p in cl.get_platforms() if "Portable Computing Language" in p.name]
    except cl.Error as err:  # no ICD loader or no platform
        return f"no OpenCL platform ({err})"
    return "" if platforms else "PoCL (pocl-opencl-icd) is not installed"


@dataclasses.dataclass
class OpenCLBuild:
    """``source``: the OpenCL C of every kernel; ``host``/``kernels``: host PrimFuncs by name and
    device kernels by kernel name, as ``tirx.SplitHostDevice`` left them."""

    source: str
    host: dict
    kernels: dict


@dataclasses.dataclass
class Launch:
    """One kernel launch: ``args`` holds ``("buffer", array name)`` or a numpy scalar per kernel
    parameter; sizes are in OpenCL's convention (global = work-groups x work-group size)."""

    kernel: str
    args: list
    global_size: tuple
    local_size: tuple

    @property
    def work_group_size(self) -> int:
        """Work-items per work-group."""
        return math.prod(self.local_size)


def compile_split(mod, target, **kwargs) -> tuple:
    """``tvm.compile(mod, target, **kwargs)`` and the module as ``tirx.SplitHostDevice`` left it:
    returns ``(executable, host PrimFuncs by name, device kernels by name)``."""
    captured = {}

    @tvm.instrument.pass_instrument
    class _AfterSplit:
        def run_after_pass(self, mod, info):
            if info.name == "tirx.SplitHostDevice":
                captured["mod"] = mod

    with tvm.transform.PassContext(instruments=[_AfterSplit()]):
        executable = tvm.compile(mod, target=target, **kwargs)
    host, kernels = {}, {}
    for gv, func in captured["mod"].functions.items():
        if isinstance(func, tvm.tirx.PrimFunc):
            (kernels if func.attrs.get("calling_conv") == 2 else host)[gv.name_hint] = func
    return executable, host, kernels


def device_source(executable, kinds=("cuda", "metal", "webgpu", "opencl", "vulkan")) -> str:
    """The device code (CUDA C, MSL, WGSL, OpenCL C) of every module of a kind in ``kinds`` in
    ``executable``'s import tree."""
    pending, sources = [executable.mod], []
    while pending:
        module = pending.pop()
        if module.kind in kinds:
            sources.append(module.inspect_source())
        pending.extend(module.imports)
    return "\n".join(sources)


def build_opencl(funcs: dict, target) -> OpenCLBuild:
    """Compile ``funcs`` (name -> scheduled PrimFunc) for ``target`` (an ``opencl`` TVM target)."""
    executable, host, kernels = compile_split(tvm.IRModule(funcs), target)
    return OpenCLBuild(device_source(executable, ("opencl",)), host, kernels)


_BINARY = {
    "Add": operator.add, "Sub": operator.sub, "Mul": operator.mul, "FloorDiv": operator.floordiv,
    "FloorMod": operator.mod, "Min": min, "Max": max, "EQ": operator.eq, "NE": operator.ne,
    "LT": operator.lt, "LE": operator.le, "GT": operator.gt, "GE": operator.ge,
    "And": lambda a, b: a and b, "Or": lambda a, b: a or b,
}


def _is_var(node) -> bool:
    return type(node).__name__ == "Var"


def evaluate(expr, env: dict):
    """Value of a host expression: ints, floats, or ``("buffer", name)`` for a buffer's data."""
    kind = type(expr).__name__
    if kind in ("IntImm", "FloatImm"):
        return expr.value
    if kind == "Var":
        if expr not in env:
            raise KeyError(f"host variable {expr.name} has no value")
        return env[expr]
    if kind in _BINARY:
        return _BINARY[kind](evaluate(expr.a, env), evaluate(expr.b, env))
    if kind in ("Div", "Mod"):  # truncating, as in C
        a, b = evaluate(expr.a, env), evaluate(expr.b, env)
        if isinstance(a, float) or isinstance(b, float):
            return a / b if kind == "Div" else math.fmod(a, b)
        quotient = abs(a) // abs(b) * (1 if (a >= 0) == (b >= 0) else -1)
        return quotient if kind == "Div" else a - b * quotient
    if kind == "Not":
        return not evaluate(expr.a, env)
    if kind == "Cast":
        value = evaluate(expr.value, env)
        return float(value) if "float" in str(expr.dtype) else int(value)
    if kind == "Select":
        return evaluate(expr.true_value if evaluate(expr.condition, env) else expr.false_value, env)
    if kind == "Call" and expr.op.name == "tirx.buffer_data":
        return env[expr.args[0]]
    if kind == "Call" and expr.op.name == "tirx.tvm_thread_invariant":
        return evaluate(expr.args[0], env)
    raise NotImplementedError(f"host expression {kind}: {expr}")


def param_keys(func) -> list[str]:
    """One key per parameter of ``func`` for the ``arrays``/``scalars`` dicts: its name, or
    ``<name>_<position>`` when an earlier parameter has the same name (TVM's ``topk`` names both of
    its outputs ``T_dynamic_strided_slice``)."""
    keys = []
    for position, param in enumerate(func.params):
        keys.append(param.name if param.name not in keys else f"{param.name}_{position}")
    return keys


def _bind_params(func, arrays: dict, scalars: dict) -> dict:
    """Host environment from the arrays (by parameter name) and scalars: buffers, shape variables
    (checked against every dimension), element offsets 0 (arrays are passed whole)."""
    env = {}
    buffers = [(p, k) for p, k in zip(func.params, param_keys(func)) if not isinstance(p.ty, tvm.ir.PrimType)]
    for param, key in zip(func.params, param_keys(func)):
        if isinstance(param.ty, tvm.ir.PrimType):
            env[param] = scalars[key]
    for param, key in buffers:
        array = arrays[key]
        env[param] = ("buffer", key)
        if str(param.dtype) != str(array.dtype) or len(param.shape) != array.ndim:
            raise ValueError(f"{key}: expected {param.dtype}{list(param.shape)}, got {array.dtype}{array.shape}")
        for dim, size in zip(param.shape, array.shape):
            if _is_var(dim) and dim not in env:
                env[dim] = size
        if _is_var(param.elem_offset):
            env[param.elem_offset] = 0
        if len(param.strides):
            raise NotImplementedError(f"{param.name}: strided buffers")
    for param, key in buffers:
        for dim, size in zip(param.shape, arrays[key].shape):
            if evaluate(dim, env) != size:
                raise ValueError(f"{key}: dimension {dim} is {evaluate(dim, env)}, array has {size}")
    return env


def plan_launches(build: OpenCLBuild, name: str, arrays: dict, scalars: dict) -> tuple[list[Launch], dict]:
    """The kernel launches host function ``name`` makes for ``arrays`` and ``scalars`` (by
    :func:`param_keys`), and the workspaces it allocates between them (``{key: (shape, dtype)}``,
    keys ``workspace:<name>`` in the launches' arguments).

    Raises:
        ValueError: an array's dtype or shape does not fit the function.
        AssertionError: the host code's own assertion fails.
        NotImplementedError: a host statement this replay does not know.
    """
    func = build.host[name]
    env = _bind_params(func, arrays, scalars)
    launches, workspaces = [], {}
    pending = [func.body]
    while pending:
        stmt = pending.pop(0)
        kind = type(stmt).__name__
        if kind == "SeqStmt":
            pending[:0] = list(stmt.seq)
        elif kind == "AttrStmt":  # an annotation around launches (e.g. "hand_threaded")
            pending.insert(0, stmt.body)
        elif kind == "Bind":
            env[stmt.var] = evaluate(stmt.value, env)
        elif kind == "DeclBuffer":
            env[stmt.buffer] = evaluate(stmt.data, env)
        elif kind == "AllocBuffer":  # global memory the kernels share
            key = f"workspace:{stmt.buffer.name}"
            workspaces[key] = (tuple(int(evaluate(n, env)) for n in stmt.buffer.shape), str(stmt.buffer.dtype))
            env[stmt.buffer] = ("buffer", key)
        elif kind == "AssertStmt":
            assert evaluate(stmt.condition, env), f"{name}: host assertion {stmt.condition} fails"
        elif kind == "IfThenElse":  # a kernel chosen by a size (LowBatchDispatch's row count)
            branch = stmt.then_case if evaluate(stmt.condition, env) else stmt.else_case
            if branch is not None:
                pending.insert(0, branch)
        elif kind == "Evaluate" and getattr(getattr(stmt.value, "op", None), "name", "") == "tirx.tvm_call_packed":
            launches.append(_launch(build, stmt.value, env))
        else:
            raise NotImplementedError(f"{name}: host statement {kind}")
    return launches, workspaces


def _launch(build: OpenCLBuild, call, env: dict) -> Launch:
    kernel_name = call.args[0].value
    kernel = build.kernels[kernel_name]
    values = [evaluate(arg, env) for arg in call.args[1:]]
    params, extents = values[: len(kernel.params)], values[len(kernel.params):]
    tags = list(kernel.attrs["tirx.kernel_launch_params"])
    if len(tags) != len(extents):
        raise NotImplementedError(f"{kernel_name}: launch parameters {tags} (dynamic shared memory?)")
    groups, local = [1, 1, 1], [1, 1, 1]
    for tag, extent in zip(tags, extents):
        scope, axis = tag.split(".")
        (local if scope == "threadIdx" else groups)["xyz".index(axis)] = int(extent)
    args = []
    for param, value in zip(kernel.params, params):
        if isinstance(param.ty, tvm.ir.PrimType):
            args.append(np.dtype(str(param.ty)).type(value))
        else:
            assert isinstance(value, tuple), f"{kernel_name}: {param.name} is not a buffer"
            args.append(value)
    return Launch(kernel_name, args, tuple(g * t for g, t in zip(groups, local)), tuple(local))


class PoCL:
    """One PoCL context with ``build``'s OpenCL program compiled."""

    def __init__(self, build: OpenCLBuild):
        import pyopencl as cl

        platform = next(p for p in cl.get_platforms() if "Portable Computing Language" in p.name)
        self.cl, self.build = cl, build
        self.device = platform.get_devices()[0]
        self.context = cl.Context([self.device])
        self.queue = cl.CommandQueue(self.context)
        program = cl.Program(self.context, build.source).build()
        self.kernels = {kernel.function_name: kernel for kernel in program.all_kernels()}

    def run(self, name: str, arrays: dict, scalars: dict) -> tuple[dict, list[Launch]]:
        """Run host function ``name`` on copies of ``arrays`` (workspaces start as zeros); returns
        (every array after the launches, the launches)."""
        cl = self.cl
        launches, workspaces = plan_launches(self.build, name, arrays, scalars)
        flags = cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR
        device = {key: cl.Buffer(self.context, flags, hostbuf=np.ascontiguousarray(a)) for key, a in arrays.items()}
        for key, (shape, dtype) in workspaces.items():
            device[key] = cl.Buffer(self.context, flags, hostbuf=np.zeros(shape, dtype))
        for launch in launches:
            args = [device[a[1]] if isinstance(a, tuple) else a for a in launch.args]
            self.kernels[launch.kernel](self.queue, launch.global_size, launch.local_size, *args)
        results = {key: np.empty_like(a) for key, a in arrays.items()}
        for key, result in results.items():
            cl.enqueue_copy(self.queue, result, device[key])
        self.queue.finish()
        return results, launches

    def local_memory_bytes(self, kernel: str) -> int:
        """Local memory one work-group of ``kernel`` takes, as PoCL reports it."""
        info = self.cl.kernel_work_group_info.LOCAL_MEM_SIZE
        return self.kernels[kernel].get_work_group_info(info, self.device)


def call_tvm(function, func, arrays: dict, scalars: dict) -> dict:
    """Call a compiled PrimFunc (``function``; ``func`` gives the parameters) on copies of
    ``arrays`` (keyed by :func:`param_keys`); returns every array after the call."""
    tensors = {key: tvm.runtime.tensor(np.ascontiguousarray(a)) for key, a in arrays.items()}
    args = [tensors[key] if key in tensors else scalars[key] for key in param_keys(func)]
    function(*args)
    return {key: t.numpy() for key, t in tensors.items()}
