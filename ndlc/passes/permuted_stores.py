"""permuted stores: an elementwise kernel that reads a reduction's result in another order of its
axes (a convolution's output rows (N, Ho, Cout, Wo) permuted to the NCHW that nn.Conv returns,
with its bias) is folded into the reduction as its epilogue, over the reduction's loops: the
reduction's per-point stores then write the consumer's elements directly. Merging declines such
a consumer (it reads the result at other elements than the reduction's loops write them), and as
a kernel of its own it reads and writes the whole output once more, strided (3x3 32x16x32x32 ->
32: the permute was 19% of the forward).

The consumer folds where the result is a temporary that the reduction alone writes (once,
unguarded, per outer point) and the consumer alone reads; the consumer's loops match the
reduction's outer loops one for one (same extent, same stride into the result: each element
moves once) and its one store is contiguous along the reduction's last outer loop (which the
schedule vectorises), or strided where a tile's stores along it spread over the L1 cache's sets,
at most FEW_TO_A_SET to one (ir/tiles.py spread: an NHWC conv's channels written to NCHW planes of
LeNet conv2's 100, ResNet9's 16 or a k7 stride-2 conv's 256 pixels, whose forwards become one kernel
and two; a tile's 16 channels' stores 4 KiB apart, in one L1 set, ran the 3x3 forward kernel at half
speed); no kernel in between writes what
it reads or touches what it writes."""
from dataclasses import replace

from ..ir.kernel import BufferKind, Program
from ..ir.kernel_leaves import Load
from ..ir.scalar import ScalarExpr, map_leaves
from ..ir.tiles import FEW_TO_A_SET, STORED_AT_ONCE, spread
from ..ir.types import numpy_dtype


def fold_permuted_consumers(program: Program) -> Program:
    """`program` with each foldable consumer (see the module docstring) removed and its producer
    making the consumer's stores instead; the temporary between them is dropped."""
    kernels = list(program.kernels)
    for consumer in list(kernels):
        source = _elementwise_source(consumer, program)
        writers = [k for k in kernels if source in k.outputs()] if source else []
        if len(writers) != 1 or [k for k in kernels if source in k.reads()] != [consumer]:
            continue
        producer = writers[0]
        first, last = kernels.index(producer), kernels.index(consumer)
        touched = consumer.reads() | {consumer.stores[0].buffer}
        if first > last or any(touched & set(k.outputs()) or consumer.stores[0].buffer in k.buffers()
                               for k in kernels[first + 1:last]):
            continue
        folded = _folded(producer, consumer, source)
        if folded is not None:
            kernels[first] = folded
            kernels.remove(consumer)
            del program.buffers[source]
    program.kernels = kernels
    return program


def _elementwise_source(kernel, program):
    """The temporary an elementwise kernel of one store reads (the one it reads that some kernel
    with reductions writes: checked by _folded), or None where it is not such a kernel."""
    if kernel.gemm is not None or kernel.step or kernel.reductions or kernel.outer != len(kernel.extents) \
            or len(kernel.stores) != 1 or kernel.stores[0].access.guards \
            or any(isinstance(load, Load) and load.indirect for load in kernel.loads):  # its loads renumbered
        return None
    temps = {load.buffer for load in kernel.loads
             if isinstance(load, Load) and program.buffers[load.buffer].kind == BufferKind.TEMP}
    return temps.pop() if len(temps) == 1 else None


def _folded(producer, consumer, source):
    """`producer` making `consumer`'s store, its read of `source` replaced by the value stored
    there, or None where it cannot (see the module docstring)."""
    if producer.gemm is not None or producer.step or not producer.reductions \
            or set(producer.outputs()) & consumer.reads() != {source}:
        return None
    places = [(p, s) for p, phase in enumerate(producer.phases) for s, store in enumerate(phase.stores)
              if store.buffer == source]
    reads = [n for n, load in enumerate(consumer.loads) if isinstance(load, Load) and load.buffer == source]
    if len(places) != 1 or len(reads) != 1:
        return None
    p, s = places[0]
    stored = producer.phases[p].stores[s]
    read = consumer.loads[reads[0]].access
    if producer.phases[p].inner or stored.access.guards or read.guards or stored.access.step != 1 or read.step != 1:
        return None
    order = _loop_order(producer, stored.access.form, consumer, read.form)
    if order is None:
        return None
    def moved(access):  # over the producer's loops
        return access.specialised(consumer.extents).permuted(order).specialised(producer.extents)
    store = consumer.stores[0]
    access = moved(store.access)
    along = access.form.coeffs[producer.outer - 1]
    itemsize = numpy_dtype(store.dtype).itemsize
    if along != 1 and not (along > 1 and spread(STORED_AT_ONCE, along, itemsize, FEW_TO_A_SET)):
        return None
    loads = list(producer.loads)
    numbers = {}
    for n, load in enumerate(consumer.loads):
        if n == reads[0]:
            continue
        load = load.with_access(moved(load.access))
        if load not in loads:
            loads.append(load)
        numbers[n] = loads.index(load)

    def leaf(payload):
        return stored.value if payload == reads[0] else ScalarExpr("arg", payload=numbers[payload])
    stores = list(producer.phases[p].stores)
    stores[s] = replace(store, access=access, value=map_leaves(store.value, leaf))
    phases = list(producer.phases)
    phases[p] = replace(phases[p], stores=stores)
    how = f"%{store.buffer} ({', '.join(consumer.fused)}) read %{source} in another order: its stores"
    return replace(producer, loads=loads, phases=phases, fused=producer.fused + consumer.fused,
                   merged=producer.merged + (how,), lowered=producer.lowered + tuple(
                       r for r in consumer.lowered if r not in producer.lowered))


def _loop_order(producer, written, consumer, read):
    """order[m]: the consumer loop that is the producer's outer loop m (Access.permuted's), each
    consumer loop of extent > 1 matched to the one producer outer loop of that extent writing
    the result at the stride the consumer reads it, those of extent 1 in turn; None where the
    loops do not match one for one (then the consumer would not move each element once)."""
    outer = producer.outer
    written, read = written.padded(len(producer.extents)), read.padded(len(consumer.extents))
    if len(consumer.extents) != outer or written.const != read.const or any(written.coeffs[outer:]):
        return None
    order = [None] * outer
    for j, n in enumerate(consumer.extents):
        if n == 1:
            continue
        found = [m for m in range(outer) if order[m] is None and producer.extents[m] == n
                 and written.coeffs[m] == read.coeffs[j] != 0]
        if len(found) != 1:
            return None
        order[found[0]] = j
    units = iter(j for j, n in enumerate(consumer.extents) if n == 1)
    for m in range(outer):
        if order[m] is None:
            if producer.extents[m] != 1:
                return None
            order[m] = next(units)
    return order
