"""The steady run of a program: `run(*arrays, update_state=True)` for a call that repeats the last,
as straight-line generated code with no loop, look-up or method call per input or output, either
as a function of its own (`Program.steady`) or written into a compiled call's entry (jit/entry.py),
which then calls no function but the native entry between its checks and its results. A call that
needs any decision `Program._run` makes raises Slow and takes `_run` instead: an input other than
the array bound last, or with another shape or dtype; a state update that cannot be written in
place; an output whose two spare arrays are both still referenced.
"""
import sys

import numpy as np

from . import libraries
from .generated import SourceWriter

_SPARE_FREE = "rc({x}) == 3 and rc({x}.base) == 2"  # Program._unreferenced's test, for `x`


class Slow(Exception):
    """A steady run's assumptions do not hold for this call: Program._run decides instead."""


def build_steady(program, counter):
    """The steady function of `program` (one that ran once, so each output has a spare array);
    `counter`: the ctypes i64 the process's native calls are counted in (where a run counts them)."""
    inputs = [f"a{i}" for i in range(len(program.input_slots))]
    writer = SourceWriter({"rc": sys.getrefcount, "CALLS": counter, "program": program, "Slow": Slow})
    fallback = f"return {writer.const(program._run)}(arrays, True, {{}})"
    writer.line(f"with {writer.const(program.lock)}:")
    writer.indent = 2
    writer.line(f"if len(arrays) != {len(inputs)}: {fallback}")
    if inputs:
        writer.line(f"{', '.join(inputs)}, = arrays")
    writer.line("try:")
    writer.indent = 3
    write_steady(writer, program, inputs, (), counter)
    writer.indent = 2
    writer.line("except Slow:")
    writer.line(f"    {fallback}")
    writer.line(f"return [{', '.join(result_names(program))}]")
    return writer.function(f"steady_{program.kernels.name}", "*arrays")


def result_names(program) -> list:
    """The names write_steady's lines give the items of what program.run returns: each a local
    of its own (a list built and indexed cost 0.05 us of a tiny call)."""
    return [f"r{i}" for i in range(len(program.kernels.outputs))]


def write_steady(writer, program, inputs, checked, counter):
    """Lines that set `result_names(program)` to the items of what program.run(*inputs,
    update_state=True) returns, or raise Slow before the native call where `_run` must decide.
    `inputs`: the names of the input arrays; `checked`: the positions among them whose shape and
    dtype the caller checked already. The caller holds `program.lock` and names `rc`, `CALLS`
    (`counter`), `program` and `Slow`."""
    kernels = program.kernels
    if program.stamps is not None or program.violation is not None:  # profiles and bounds checks: run reads them
        writer.line("raise Slow")
        return
    bound = writer.const(program.bound)
    for i, (a, (_, _, shape, dtype)) in enumerate(zip(inputs, program.input_slots)):
        same = f"{a} is not {bound}[{i}]"
        writer.line(f"if {same}: raise Slow" if i in checked else
                    f"if {same} or {a}.shape != {shape!r} or {a}.dtype is not {writer.const(dtype)}: raise Slow")
    pointers, arrays, fixed = writer.const(program.pointers), {}, []
    in_place = {out: (i, state) for out, i, state in program.in_place}
    if in_place:  # Program._state_arrays: the state input's own array, writeable, shared with no other
        writer.line("if not program.distinct_inputs: raise Slow")
    addresses = writer.const(program.input_addresses)
    for j, name in enumerate(dict.fromkeys(kernels.outputs)):
        o, slot = f"o{j}", program.slots[name]
        arrays[name] = o
        if name in in_place:
            i, state = in_place[name]
            writer.line(f"if not {inputs[i]}.flags.writeable: raise Slow")
            writer.line(f"{o} = {inputs[i]}")
            fixed.append(f"{pointers}[{slot}] = {addresses}[{state!r}]")
        elif name in program.reused:
            writer.line(f"{o} = {writer.const(program.reused[name])}")
            fixed.append(f"{pointers}[{slot}] = {program.reused_addresses[name]}")
        else:
            fixed.append(_spare(writer, program.spare[name], o, f"{pointers}[{slot}]"))
    results, copies = _results(writer, program, inputs, arrays)
    if fixed:  # the same in every steady run while the inputs stay bound and no spare switches: after a full run
        writer.line("if not program.steady_table:")
        for line in fixed + ["program.steady_table = True"]:
            writer.line(f"    {line}")
    call = writer.const(program.native_call)
    if program.team.candidates == [1]:  # no split kernel: no team to set, no call to time for its choice
        runs = [call]  # (Team.run: 0.4 us of a tiny program's 4 us call)
    else:
        runs = [f"{writer.const(program.team)}.call", call]  # timed once in team.EVERY calls when settled
    if program.calls_blas:  # BLAS on its calling thread (Program._run)
        writer.line(f"{writer.const(libraries.single_threaded_blas)}({', '.join(runs)})")
    else:
        writer.line(f"{runs[0]}({', '.join(runs[1:])})")
    if not program.counts_itself:  # the trampoline counts its calls (runtime/trampoline.py)
        writer.line(f"{writer.const(program.counted)}.value += 1")
        writer.line("CALLS.value += 1")
    for line in copies:
        writer.line(line)
    for name, result in zip(result_names(program), results):
        writer.line(f"{name} = {result}")


def _results(writer, program, inputs, arrays):
    """The results' expressions and the copies made after the run. An output listed twice is
    copied (Program._run); where the second is a state's new value (BatchNorm's running mean,
    also returned), it is copied into the state's own array, as CapturedStep.write_back would
    copy it, which the caller then finds written: its array stays the one bound."""
    kernels = program.kernels
    split = len(kernels.outputs) - kernels.updates
    results, copies, seen = [], [], set()
    for k, name in enumerate(kernels.outputs):
        if name not in seen:
            results.append(arrays[name])
        elif k >= split:
            state = inputs[kernels.inputs.index(kernels.updated[k - split])]
            writer.line(f"if not {state}.flags.writeable: raise Slow")
            copies.append(f"{writer.const(np.copyto)}({state}, {arrays[name]})")
            results.append(state)
        else:
            results.append(f"{arrays[name]}.copy()")
        seen.add(name)
    for i, shape in program.views.items():  # Program._run: a read-only broadcast view
        results[i] = f"{writer.const(np.broadcast_to)}({results[i]}, {shape!r})"
    return results, copies


def _spare(writer, spare, o, pointer):
    """`o`: the newest of an output's two spare arrays that nothing else references (the other
    first when it is the one free, as Program._unreferenced orders them), its address written to
    the table where that switched it; the line writing the newest's (after a full run, which may
    have written another)."""
    s = writer.const(spare)
    writer.line(f"{o} = {s}[0][0]")
    writer.line(f"if not ({_SPARE_FREE.format(x=o)}):")
    writer.line(f"    if len({s}) < 2: raise Slow")
    writer.line(f"    e = {s}[1]; {o} = e[0]")
    writer.line(f"    if not ({_SPARE_FREE.format(x=o)}): raise Slow")
    writer.line(f"    {s}.reverse()")
    writer.line(f"    {pointer} = e[1]")
    return f"{pointer} = {s}[0][1]"
