"""`ndlc.compile`: a needle program compiled to native code.

`compile(fn)` captures `fn` (with the parameters, running statistics and optimizer state of the
modules and optimizers it uses as persistent state: jit/capture.py), lowers it with the
pipeline and runs it natively, one specialisation per list of input types and train/eval modes.
`compile(module)` does the same for `module(*inputs)`. After a call, the state tensors hold the
new values (the runtime writes them into the tensors' own storage).
"""
import collections
import logging
import threading

from ..env import flag, warn_unknown_names
from ..errors import NdlcError, ShapeError
from ..ir.types import TensorType
from .pipeline import compile_graph as _compile_graph
from ..runtime.check import CheckError
from .arguments import Parameters
from .entry import MISS, build_entry, retire
from .capture import capture, find_function_numbers, find_hyperparameters, is_runtime_number
from .reads import SETTINGS, STATEFUL, referenced_numbers, referenced_objects, referenced_values
from .exchange import SplitSpecialisation
from .guards import Guards
from ..frontend.nn.module import Module, is_switch
from .resident import ResidentState
from ..frontend.tensor import Tensor
from ..frontend.trace import graph_name

log = logging.getLogger("ndlc.compile")
DEVICES = ("cpu", "cuda")
MANY = 8  # compilations of one compiled function after which it warns of a recompile storm
MISSES = 4  # calls the full path ran unchanged after a specialisation's entry missed them, after
# which it builds that entry no more (a step that rebinds an object it reaches on every call)


def compile(obj, device="cpu", state=None, check=None, static_hyperparameters=False, max_specialisations=8,
            debug=None):
    """A callable running `obj` (a Module, or a function of Tensors) natively on `device`.
    `state`: the Modules, Optimizers and Tensors whose tensors the function reads and updates,
    when they cannot be found through its closure, globals and bound object. `check` (default:
    NDLC_CHECK=1): every call also compares each kernel with the interpreter and raises CheckError
    naming the first that computes a wrong value (slow: a debugging mode).
    Optimizers' numbers (lr, momentum, betas, eps, weight decay) and the floats of the function's
    own globals and closure are runtime arguments, so a schedule never recompiles;
    `static_hyperparameters=True` compiles them in as constants (each new value compiles again). At most `max_specialisations` programs are kept, the least
    recently used one dropped (and its memory freed) first. `debug` (default: NDLC_DEBUG=1): every
    load and store is checked against its buffer's bounds; a violation raises BoundsError naming the
    kernel, the graph nodes and the user's lines (slower: a mode for chasing compiler bugs)."""
    warn_unknown_names()
    check = flag("NDLC_CHECK") if check is None else check
    debug = flag("NDLC_DEBUG") if debug is None else debug
    name = device.name if hasattr(device, "name") else str(device)
    if name not in DEVICES:
        raise NdlcError(f"device {name!r} is not available to ndlc.compile (available: {', '.join(DEVICES)})")
    if name == "cuda":
        from ..runtime.cuda import require
        require()  # a missing GPU, pycuda or nvcc is named now, not at the first call
    if isinstance(max_specialisations, bool) or not isinstance(max_specialisations, int) or max_specialisations < 1:
        raise NdlcError(f"ndlc.compile: max_specialisations must be a positive integer, not {max_specialisations!r}")
    for option, value in (("check", check), ("debug", debug), ("static_hyperparameters", static_hyperparameters)):
        if not is_switch(value):
            raise NdlcError(f"ndlc.compile: {option} must be True or False, not {value!r}")
    if state is not None and not isinstance(state, (list, tuple)):
        raise NdlcError(f"ndlc.compile: state must be a list or tuple of Modules, Optimizers and Tensors, "
                        f"not {type(state).__name__}")
    options = dict(check=check, static=static_hyperparameters, limit=max_specialisations, debug=debug, device=name)
    if isinstance(obj, Module):
        return CompiledModule(obj, **options)
    if not callable(obj):
        raise NdlcError(f"ndlc.compile takes a Module or a function, not {type(obj).__name__}")
    if isinstance(obj, type):  # a class would be traced as its constructor, its arguments made tensors
        raise NdlcError(f"ndlc.compile takes a Module or a function, not the class {obj.__name__} "
                        f"(compile an instance: ndl.compile({obj.__name__}(...)))")
    roots = None if state is None else {f"{type(s).__name__.lower()}{i}": s for i, s in enumerate(state)}
    return CompiledFunction(obj, roots, **options)


def compile_graph(graph, forward=None, device="cpu", debug=False, cached=True):
    """A graph lowered and compiled for `device`, ready to `run`; its last outputs are the
    new values of its state inputs, in `graph.updates` order. NDLC_PROFILE=1 adds per-kernel
    timing (`Program.profile()`, CPU); `debug`, bounds checks (CPU); `cached=False`: every pass
    runs, whatever the program cache holds."""
    profile = flag("NDLC_PROFILE")
    return _compile_graph(graph, forward, profile, device, debug=debug, cached=cached)


class Specialisation:
    """One compiled program of a captured step, and how to run it against the step's state."""

    def __init__(self, captured, check=False, device="cpu", debug=False, lock=None):
        """`lock`: the compiled function's, which its CPU program then shares (a call holding it
        runs the program without taking another: entry.py)."""
        self.captured, self.check = captured, check
        if check and device != "cpu":
            raise NdlcError("check mode compares kernels on the CPU backend: compile with device='cpu' to use it")
        self.program = compile_graph(captured.graph, captured.forward, device, debug=debug,
                                     cached=not check)  # check mode is for chasing compiler bugs: every pass runs
        self.num_outputs = len(captured.graph.outputs)
        self.resident = ResidentState(self.program, captured) if device == "cuda" else None
        if lock is not None and self.resident is None:
            self.program.lock = lock
        self.misses = 0  # calls its entry missed that the full path ran unchanged (CompiledFunction._call)

    def plain(self) -> bool:
        """Whether a call entry can run it: on the CPU, not in check mode."""
        return self.resident is None and not self.check

    def run(self, arrays):
        if self.resident is not None:
            return self.resident.run(arrays)
        state = self.captured.state_arrays()
        arguments = self.captured.inputs(arrays) + state
        if self.check:
            divergence = self.program.check(*[a.copy() for a in arguments])
            if divergence is not None:
                raise CheckError(f"{self.program.kernels.name}: {divergence}")
        results = self.program.run(*arguments, update_state=True)
        outputs, new_state = results[:self.num_outputs], results[self.num_outputs:]
        self.captured.write_back(dict(zip(self.captured.graph.updates, new_state)), state)
        return [Tensor.make_const(out) for out in outputs]


class CompiledFunction:
    """The compiled form of `fn`; state is what `fn` reaches (or `roots` names). Specialisations
    are kept by (input types, settings), at most `limit`, the least recently used dropped first;
    each keeps the Guards of its trace, and one whose guards fail is compiled again."""

    def __init__(self, fn, roots=None, name=None, check=False, static=False, limit=8, device="cpu", debug=False,
                 signature=None):
        self.fn, self.check, self.static, self.limit, self.device = fn, check, static, limit, device
        self.debug = debug
        self.lock = threading.RLock()
        self.fixed = roots is not None
        self.name = graph_name(name or fn)
        self.parameters = Parameters(signature or fn, self.name)
        self.roots = roots
        self._find_state()
        self.specialisations = collections.OrderedDict()
        self.compilations = 0
        self.signatures, self.last_types, self.last_structure = {}, None, None
        self.last = self.last_key = None
        self.entry = None  # the last specialisation's call entry (entry.py), once it ran twice in a row

    def _find_state(self):
        """The modules and optimizers the step reaches now (its roots again, unless named), and
        the optimizers' numbers, which the guards watch rather than the settings."""
        if not self.fixed:
            self.roots = referenced_objects(self.fn)
        self.stateful = _stateful(self.roots)
        self.hyperparameters = find_hyperparameters(self.roots)
        self.guarded = {(id(h.owner), h.name) for h in self.hyperparameters}
        # each Module's and Optimizer's position and the names of its attributes read as runtime numbers
        self.attribute_settings = [(i, obj, {name for owner, name in self.guarded if owner == id(obj)})
                                   for i, obj in enumerate(self.stateful)]

    def __call__(self, *args, **kwargs):
        """Run (tracing and compiling first where needed) on the arguments as Python binds them and
        eager needle converts them (arguments.py). Calls from several threads take turns: a call
        reads and updates the step's state as one transaction, in some serial order."""
        entry = self.entry  # it takes the lock itself, and misses once it is no longer self.entry
        if entry is not None:
            result = entry(args, kwargs)
            if result is not MISS:
                return result
        with self.lock:
            arrays, structure = self.parameters.arrays(args, kwargs)
            return self._call(arrays, None if kwargs or structure else len(args),
                              entry is not None and entry is self.entry, structure)

    def _call(self, arrays, count=None, missed=False, structure=None):
        """The full path: the arguments' types and the step's settings and guards read and checked,
        the specialisation found or compiled and run; the second run in a row of one specialisation
        on `count` positional arguments builds its call entry (`missed`: the last one's missed this
        call), until MISSES calls it ran unchanged had missed its entry. `structure`: that of the
        arguments (arguments.structure_of), None where all are tensors; no entry takes one."""
        types = tuple([TensorType.of(a) for a in arrays])
        if types != self.last_types or structure != self.last_structure:  # one shape and dtype: one object
            self._check_signature(types, structure)
            self.last_types, self.last_structure = types, structure
        values = referenced_values(self.fn)  # what the step reaches now, read once for settings and guards
        key = (types, self._settings(values), structure)
        repeated = key == self.last_key  # the most recently used specialisation again: no reordering
        kept = self.last if repeated else self.specialisations.get(key)
        stale = kept and _failure(kept, values)
        if kept is None or stale:
            self._find_state()  # what the step reaches may have been replaced
            key = (types, self._settings(), structure)
            self._specialise(key, stale)
            repeated = False
        if not repeated:
            self.specialisations.move_to_end(key)
            self.last, self.last_key = self.specialisations[key], key
        self.last.captured.check_indices(arrays)
        outputs = self.last.run(arrays)
        self.last.captured.check_computed(outputs)
        outputs = outputs[:self.last.captured.returned]
        self.last.captured.drop_gradients()
        if self.entry is not None:
            retire(self.entry)
            self.entry = None
        if (repeated and count == len(arrays) and isinstance(self.last, Specialisation) and self.last.plain()
                and self.last.captured.flat_results):
            self.last.misses += missed
            if self.last.misses < MISSES:
                self.entry = build_entry(self, self.last, count)
        return self.last.captured.result(outputs)

    def _specialise(self, key, stale):
        """Make sure a specialisation for `key` is kept: the one there if its guards hold, else
        a new one, traced and compiled (logged with the reason), evicting the least recently used."""
        kept = self.specialisations.get(key)
        if kept is not None and not _failure(kept):
            return
        if self.compilations:
            log.info("%s: compiling a new specialisation for (%s)%s", self.name,
                     ", ".join(map(str, key[0])), f" after {stale}" if stale else self._changed(key))
        captured = self._capture(key[0], key[2])
        if captured.exchanges and self.device != "cpu":
            raise NdlcError(f"{self.name}: a distributed step (an all-reduce of gradients between ranks) "
                            "runs on the CPU backend; compile it with device='cpu'")
        runtime = {h.path for h in captured.hyperparameters}
        compiled = [h for h in self.hyperparameters + find_function_numbers(self.fn) if h.path not in runtime]
        guards = Guards(self.fn, self.roots, captured.hyperparameters, compiled, self.fixed)
        specialisation = (SplitSpecialisation(captured, self.check, compile_graph, self.device) if captured.exchanges
                          else Specialisation(captured, self.check, self.device, debug=self.debug, lock=self.lock))
        specialisation.guards = guards
        self.specialisations[key] = specialisation
        self.compilations += 1
        if self.compilations == MANY:
            log.warning("%s has been compiled %d times: input shapes or the Python numbers it reads "
                        "(its globals and closure, its modules' attributes) keep changing, and each "
                        "is compiled into the program; keep changing numbers out of them, or pass "
                        "them as tensors", self.name, MANY)
        while len(self.specialisations) > self.limit:
            evicted, _ = self.specialisations.popitem(last=False)
            log.info("%s: dropped the least recently used specialisation, for (%s), keeping %d",
                     self.name, ", ".join(map(str, evicted[0])), self.limit)

    def _capture(self, types, structure=None):
        """The step traced for `types`, its floats and optimizers' numbers as runtime inputs
        (unless static); a step that cannot trace its floats as tensors (Python arithmetic or
        control flow on them) has them compiled in instead, logged."""
        try:
            return capture(self.fn, types, self.roots, self.name, hyperparameters=not self.static,
                           numbers=not self.static, structure=structure)
        except Exception as e:
            if self.static or not find_function_numbers(self.fn):
                raise
            log.info("%s: its floats %s cannot be runtime inputs (%s: %s); compiling them in", self.name,
                     ", ".join(n.path for n in find_function_numbers(self.fn)), type(e).__name__, e)
            return capture(self.fn, types, self.roots, self.name, numbers=False, structure=structure)

    def _settings(self, values=None):
        """The plain Python values the step reads (its own globals and closure, and the train/eval
        flags, eps, p, ... of its modules): a trace bakes them in, so a change recompiles. Its own
        floats and the optimizers' numbers are runtime inputs or, compiled in, guarded by value.
        `values`: reads.referenced_values of the step, read here if None."""
        found = [(-1, name, value) for name, value in referenced_numbers(self.fn, values).items()
                 if self.static or not is_runtime_number(name, value)]
        for i, obj, runtime in self.attribute_settings:  # asked on every call: plain loops
            for name, value in vars(obj).items():
                if isinstance(value, SETTINGS) and name not in runtime:
                    found.append((i, name, value))
        return tuple(found)

    def _changed(self, key):
        """' after <attribute> changed' when `key` differs from the last run's only in settings."""
        if self.last is None:
            return ""
        last_types, last, last_structure = self.last_key
        if (last_types, last_structure) != (key[0], key[2]):
            return ""
        names = [f"{type(self.stateful[i]).__name__}.{name}" if i >= 0 else name
                 for (i, name, value), (_, _, old) in zip(key[1], last) if value != old]
        return f" after {', '.join(names)} changed" if names else ""

    def ir(self, stage="planned", format="text") -> str:
        """The text of `stage` (one of ndlc.jit.pipeline.STAGES: traced ... planned, then llvm, llvm_opt,
        asm on the CPU or cuda on the GPU) for the most recently run specialisation; format="dot":
        Graphviz dot of a graph or kernel stage."""
        if self.last is None:
            raise NdlcError(f"{self.name} has not been compiled yet: call it first")
        return self.last.program.ir(stage, format=format)

    def profile(self, top=None) -> str:
        """Per-kernel times of the most recently run specialisation (compile with NDLC_PROFILE=1)."""
        if self.last is None:
            raise NdlcError(f"{self.name} has not been compiled yet: call it first")
        return self.last.program.profile(top)

    @property
    def native_calls(self):
        return sum(s.program.calls for s in self.specialisations.values())

    def _check_signature(self, types, structure=None):
        """A new shape (or structure of tuple arguments) is a new specialisation; a new number of
        inputs, rank or dtype for a structure seen before is refused."""
        signature = tuple((t.ndim, t.dtype) for t in types)
        known = self.signatures.setdefault(structure, signature)
        if len(signature) != len(known):
            raise ShapeError(f"{self.name} was compiled for {len(known)} inputs, got {len(signature)}")
        for i, ((ndim, dtype), (want_ndim, want_dtype)) in enumerate(zip(signature, known)):
            if (ndim, dtype) != (want_ndim, want_dtype):
                raise ShapeError(f"{self.name}: input {i} has type {types[i]}, but it was compiled for "
                                 f"rank-{want_ndim} {want_dtype} tensors (a new shape compiles a new "
                                 "specialisation; a new rank or dtype needs its own ndlc.compile)")


class CompiledModule(CompiledFunction):
    """`module(*inputs)` compiled; train() and eval() each get their own specialisation."""

    def __init__(self, module, **options):
        self.module = module
        super().__init__(lambda *inputs: module(*inputs), roots={"model": module},
                         name=type(module).__name__, signature=module.forward, **options)

    def train(self):
        self.module.train()
        return self

    def eval(self):
        self.module.eval()
        return self

    def parameters(self):
        return self.module.parameters()

    def state_dict(self):
        return self.module.state_dict()


def _failure(specialisation, values=None):
    """Why a kept specialisation no longer fits the step's objects (its `guards`, the types of
    its state), a sentence, or None; `values` as for Guards.failure."""
    return specialisation.guards.failure(values) or specialisation.captured.changed_state()


def _stateful(roots):
    """Every Module and Optimizer reachable from `roots`, in a fixed order."""
    found, stack, seen = [], list(roots.values())[::-1], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, STATEFUL):
            found.append(obj)
            stack.extend(list(vars(obj).values())[::-1])
        elif isinstance(obj, (list, tuple)):
            stack.extend(list(obj)[::-1])
        elif isinstance(obj, dict):
            stack.extend(list(obj.values())[::-1])
    return found
