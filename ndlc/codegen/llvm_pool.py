"""ndlc's thread team in LLVM IR (runtime/pool.py compiles it once per process): `ndlc_parallel`
runs a split kernel's outlined function on the caller and the pool's workers, `ndlc_done` counts
a piece done, `ndlc_wait` waits for a count, `ndlc_pool_worker` is a worker thread's loop.

Why not libgomp: its `GOMP_parallel` returns only when every thread of the team has run the
region, so a worker whose core another process holds kept the whole call waiting for a scheduler
tick (8-16 ms on the shared 2-core machine) even when the threads on their cores had taken all
its pieces. Here a region is open only while the caller runs it: a worker joins it only if it is
still open when the worker arrives (counted in `active`), and the caller, its own pieces done,
closes it and waits only for the workers that joined, each of which holds at most a piece. The
work is claimed from counters in the kernels (codegen/llvm_calls.py), so the results do not
depend on which thread ran a piece, nor on how many joined. The handshakes are sequentially
consistent on both sides (a worker counts itself in `active`, then reads `open`; the caller
clears `open`, then reads `active`; a worker counts itself in `sleepers`, then reads `gen`; the
caller writes `gen`, then reads `sleepers`; a waiter counts itself in `waiters`, then reads its
count; `ndlc_done` counts, then reads `waiters`), so neither side misses the other. A waiter
polls SPIN times, then sleeps on its count's low half (futex): its core idle, the scheduler may
move the thread it waits for there (a yield would hand the core to another process for a time
slice instead, and under load waiting threads yielded ~50 times a call). Where the other cores are
busy, the scheduler wakes a worker on its caller's core; there a spinning thread only takes the
turn of the one it waits for. So the caller records its core (`cpu`) when it opens a region, a
worker that joins on that core marks the region `crowded` (no wait in it spins) and gives its
pieces back: it leaves at once without taking one, as on one core the two threads would only take
turns and the caller would wait for the worker's last piece through two context switches; an idle
worker looks at its core every LOOK_EVERY polls and sleeps at once when it is the caller's. There
it cannot help, and waking it costs a futex call and two context switches a region (15 us of a
50 us call), so after a crowded region the caller opens the next `quiet` ones without waking a
sleeping worker (a spinning one still joins): 1, then twice as many after each crowded region that
follows, at most QUIET_MOST, until a worker joins one uncrowded (`backoff`: the current length).
A scheduler that packs wakeups onto busy vCPUs (this VM's, `kernel.sched_vcpu_pack`) keeps waking
the worker on its caller's core even when the other core idles, so the team stuck at one thread
(sweep LayerNorm 33x4097 0.83-1.25x PyTorch, 11-21 of 60 blocks crowded): a worker that finds itself
there while nothing but the caller and itself is runnable (`ndlc_pool_runnable`: /proc/loadavg's
count) moves off the core (`move_off`: sched_setaffinity to its other allowed cores, then back;
after it has left its region, which its caller waits for), so it sleeps, and is next woken, on
another; where other threads are runnable the crowding is real and
it stays (moving then cost two copies of the MLP step 10-35% in benchmarks/contention.py).

The state is one array of i64 words, each field on a cache line of its own but `cpu`, beside `fn`
(both the caller's), and `crowded`, beside `active` (both a joining worker's) (`FIELDS`): `gen` the
number of the last region opened (an i32: the word idle workers sleep on with futex), `open` the
number of the region running (0: none), `fn` and `data` its function and argument, `wanted` how
many workers it may take (its team but the caller), `cpu` the core its caller opened it on,
`active` the workers inside it, `crowded` whether a worker joined it on the caller's core, `sleepers`
the workers asleep on `gen`, `busy` whether a region runs (a second caller runs its region alone),
`started` the workers started (each takes its index from it), `waiters` the threads asleep on a
count (`ndlc_wait`), and the counts `regions`,
`joined` (regions a worker ran pieces of), `late` (a worker came after its region closed), `crowded_joins`
(a worker joined on its caller's core) and `moves` (a worker moved off it)."""
FIELDS = {"gen": 0, "open": 8, "fn": 16, "data": 17, "wanted": 18, "cpu": 19, "active": 24, "crowded": 25,
          "sleepers": 32, "busy": 40, "quiet": 41, "backoff": 42, "started": 48, "waiters": 52, "regions": 56, "joined": 57, "late": 58,
          "crowded_joins": 59, "moves": 60}
WORDS = 64
STATE = "ndlc_pool_state"
FUNCTIONS = ("ndlc_parallel", "ndlc_wait", "ndlc_done", "ndlc_pool_worker")
FUTEX = {"x86_64": 202, "aarch64": 98}  # SYS_futex by machine (Linux): the machines the pool runs on
AFFINITY = {"x86_64": (203, 204), "aarch64": (122, 123)}  # SYS_sched_setaffinity, SYS_sched_getaffinity
FILES = {"x86_64": (257, 0, 3), "aarch64": (56, 63, 57)}  # SYS_openat, SYS_read, SYS_close
LOADAVG = "/proc/loadavg"  # its fourth field, "runnable/total", counts the runnable threads now
FUTEX_WAIT, FUTEX_WAKE = 128, 129  # the _PRIVATE operations (one process's threads)
SPIN = 30000  # polls (a pause each) before a worker or a waiter sleeps: ~0.8 ms, libgomp's GOMP_SPINCOUNT as
# ndlc set it (docs/ARCHITECTURE.md: long enough to bridge the gaps between one step's kernels)
LOOK_EVERY = 64  # an idle worker's polls between two looks at whether it shares the caller's core
QUIET_MOST = 64  # the most regions opened without waking a sleeping worker after crowded ones

_TEMPLATE = """@{state} = global [{words} x i64] zeroinitializer, align 64
declare i64 @syscall(i64, ...)
declare i32 @sched_getcpu()
{pause_declaration}
define internal void @relax() alwaysinline {{
{pause}  ret void
}}

@loadavg = private constant [{loadavg_size} x i8] c"{loadavg}\\00"

define i64 @ndlc_pool_runnable() {{
entry:
  %text = alloca [64 x i8], align 8
  %fd = call i64 (i64, ...) @syscall(i64 {openat}, i64 -100, ptr @loadavg, i64 0)
  %opened = icmp sge i64 %fd, 0
  br i1 %opened, label %read, label %unknown
read:
  %got = call i64 (i64, ...) @syscall(i64 {read}, i64 %fd, ptr %text, i64 64)
  %closed = call i64 (i64, ...) @syscall(i64 {close}, i64 %fd)
  br label %scan
scan:
  %i = phi i64 [0, %read], [%i.next, %next]
  %spaces = phi i64 [0, %read], [%spaces.next, %next]
  %count = phi i64 [0, %read], [%count.next, %next]
  %inside = icmp slt i64 %i, %got
  br i1 %inside, label %char, label %unknown
char:
  %at = getelementptr inbounds i8, ptr %text, i64 %i
  %c = load i8, ptr %at, align 1
  %in.field = icmp eq i64 %spaces, 3
  %slash = icmp eq i8 %c, 47
  %end = and i1 %in.field, %slash
  br i1 %end, label %found, label %next
next:
  %space = icmp eq i8 %c, 32
  %space.wide = zext i1 %space to i64
  %spaces.next = add i64 %spaces, %space.wide
  %digit = sub i8 %c, 48
  %digit.wide = zext i8 %digit to i64
  %times = mul i64 %count, 10
  %plus = add i64 %times, %digit.wide
  %count.next = select i1 %in.field, i64 %plus, i64 %count
  %i.next = add i64 %i, 1
  br label %scan
found:
  ret i64 %count
unknown:
  ret i64 1099511627776
}}

define internal void @move_off(i64 %caller) {{
entry:
  %set = alloca i64, align 8
  store i64 0, ptr %set, align 8
  %runnable = call i64 @ndlc_pool_runnable()
  %alone = icmp ule i64 %runnable, 2
  br i1 %alone, label %look, label %out
look:
  %got = call i64 (i64, ...) @syscall(i64 {getaffinity}, i64 0, i64 8, ptr %set)
  %known = icmp sgt i64 %got, 0
  %fits = icmp ult i64 %caller, 64
  %both = and i1 %known, %fits
  br i1 %both, label %mask, label %out
mask:
  %allowed = load i64, ptr %set, align 8
  %bit = shl i64 1, %caller
  %others = xor i64 %bit, -1
  %elsewhere = and i64 %allowed, %others
  %some = icmp ne i64 %elsewhere, 0
  br i1 %some, label %move, label %out
move:
  %moves = atomicrmw add ptr {at_moves}, i64 1 monotonic
  store i64 %elsewhere, ptr %set, align 8
  %moved = call i64 (i64, ...) @syscall(i64 {setaffinity}, i64 0, i64 8, ptr %set)
  store i64 %allowed, ptr %set, align 8
  %back = call i64 (i64, ...) @syscall(i64 {setaffinity}, i64 0, i64 8, ptr %set)
  br label %out
out:
  ret void
}}

define void @ndlc_wait(ptr %counter, i64 %value) {{
entry:
  br label %poll
poll:
  %n = phi i32 [0, %entry], [%n.next, %spin], [0, %awake]
  %now = load atomic i64, ptr %counter seq_cst, align 8
  %done = icmp eq i64 %now, %value
  br i1 %done, label %out, label %idle
idle:
  %crowded = load atomic i64, ptr {at_crowded} monotonic, align 8
  %alone = icmp eq i64 %crowded, 0
  %spins = select i1 %alone, i32 {spin}, i32 0
  %polling = icmp ult i32 %n, %spins
  br i1 %polling, label %spin, label %sleep
spin:
  call void @relax()
  %n.next = add nuw i32 %n, 1
  br label %poll
sleep:
  %waiters = getelementptr inbounds i64, ptr @{state}, i64 {waiters}
  %was = atomicrmw add ptr %waiters, i64 1 seq_cst
  %still = load atomic i64, ptr %counter seq_cst, align 8
  %low = trunc i64 %still to i32
  %more = icmp ne i64 %still, %value
  br i1 %more, label %futex, label %awake
futex:
  %slept = call i64 (i64, ...) @syscall(i64 {futex}, ptr %counter, i32 {futex_wait}, i32 %low, ptr null, ptr null, i32 0)
  br label %awake
awake:
  %were = atomicrmw sub ptr %waiters, i64 1 seq_cst
  br label %poll
out:
  ret void
}}

define void @ndlc_done(ptr %counter) {{
  call void @changed(ptr %counter, i64 1)
  ret void
}}

define internal void @changed(ptr %counter, i64 %delta) {{
entry:
  %old = atomicrmw add ptr %counter, i64 %delta seq_cst
  %waiters = load atomic i64, ptr {at_waiters} seq_cst, align 8
  %asleep = icmp ne i64 %waiters, 0
  br i1 %asleep, label %wake, label %out
wake:
  %woken = call i64 (i64, ...) @syscall(i64 {futex}, ptr %counter, i32 {futex_wake}, i32 2147483647)
  br label %out
out:
  ret void
}}

define void @ndlc_parallel(ptr %fn, ptr %data, i32 %team) {{
entry:
  %alone = icmp sle i32 %team, 1
  br i1 %alone, label %serial, label %claim
claim:
  %busy = getelementptr inbounds i64, ptr @{state}, i64 {busy}
  %pair = cmpxchg ptr %busy, i64 0, i64 1 acquire monotonic
  %claimed = extractvalue {{ i64, i1 }} %pair, 1
  br i1 %claimed, label %publish, label %serial
serial:
  call void %fn(ptr %data)
  ret void
publish:
  store ptr %fn, ptr {at_fn}, align 8
  store ptr %data, ptr {at_data}, align 8
  %workers = sub i32 %team, 1
  %wanted = sext i32 %workers to i64
  store atomic i64 %wanted, ptr {at_wanted} monotonic, align 8
  %cpu = call i32 @sched_getcpu()
  %cpu.wide = sext i32 %cpu to i64
  store atomic i64 %cpu.wide, ptr {at_cpu} monotonic, align 8
  store atomic i64 0, ptr {at_crowded} monotonic, align 8
  %last = load atomic i32, ptr @{state} monotonic, align 64
  %next = add i32 %last, 1
  %wrapped = icmp eq i32 %next, 0
  %number = select i1 %wrapped, i32 1, i32 %next
  store atomic i32 %number, ptr {at_open} seq_cst, align 8
  store atomic i32 %number, ptr @{state} seq_cst, align 64
  %regions.at = getelementptr inbounds i64, ptr @{state}, i64 {regions}
  %regions = load i64, ptr %regions.at, align 8
  %regions.next = add i64 %regions, 1
  store i64 %regions.next, ptr %regions.at, align 8
  %joined.before = load atomic i64, ptr {at_joined} monotonic, align 8
  %sleepers = load atomic i64, ptr {at_sleepers} seq_cst, align 8
  %asleep = icmp ne i64 %sleepers, 0
  br i1 %asleep, label %sleeping, label %work
sleeping:
  %quiet = load i64, ptr {at_quiet}, align 8
  %waking = icmp eq i64 %quiet, 0
  br i1 %waking, label %wake, label %hush
hush:
  %quiet.less = sub i64 %quiet, 1
  store i64 %quiet.less, ptr {at_quiet}, align 8
  br label %work
wake:
  %woken = call i64 (i64, ...) @syscall(i64 {futex}, ptr @{state}, i32 {futex_wake}, i32 2147483647)
  br label %work
work:
  call void %fn(ptr %data)
  store atomic i32 0, ptr {at_open} seq_cst, align 8
  call void @ndlc_wait(ptr {at_active}, i64 0)
  %crowded.after = load atomic i64, ptr {at_crowded} monotonic, align 8
  %was.crowded = icmp ne i64 %crowded.after, 0
  br i1 %was.crowded, label %back, label %calm
back:
  %backoff = load i64, ptr {at_backoff}, align 8
  %doubled = shl i64 %backoff, 1
  %first.back = icmp eq i64 %backoff, 0
  %longer = select i1 %first.back, i64 1, i64 %doubled
  %capped = icmp ugt i64 %longer, {quiet_most}
  %backoff.next = select i1 %capped, i64 {quiet_most}, i64 %longer
  store i64 %backoff.next, ptr {at_backoff}, align 8
  store i64 %backoff.next, ptr {at_quiet}, align 8
  br label %done
calm:
  %joined.after = load atomic i64, ptr {at_joined} monotonic, align 8
  %helped = icmp ne i64 %joined.after, %joined.before
  br i1 %helped, label %reset, label %done
reset:
  store i64 0, ptr {at_backoff}, align 8
  br label %done
done:
  store atomic i64 0, ptr %busy release, align 8
  ret void
}}

define ptr @ndlc_pool_worker(ptr %unused) {{
entry:
  %index = atomicrmw add ptr {at_started}, i64 1 seq_cst
  %first = load atomic i32, ptr @{state} acquire, align 64
  br label %wait
wait:
  %seen = phi i32 [%first, %entry], [%seen, %awake], [%arrived, %skip], [%arrived, %left], [%arrived, %moving]
  br label %poll
poll:
  %n = phi i32 [0, %wait], [%n.next, %spin]
  %arrived = load atomic i32, ptr @{state} acquire, align 64
  %new = icmp ne i32 %arrived, %seen
  br i1 %new, label %region, label %idle
idle:
  %polling = icmp ult i32 %n, {spin}
  br i1 %polling, label %look, label %sleep
look:
  %turn = and i32 %n, {look_mask}
  %looking = icmp eq i32 %turn, 0
  br i1 %looking, label %beside, label %spin
beside:
  %here = call i32 @sched_getcpu()
  %here.wide = sext i32 %here to i64
  %caller = load atomic i64, ptr {at_cpu} monotonic, align 8
  %shared = icmp eq i64 %here.wide, %caller
  br i1 %shared, label %aside, label %spin
aside:
  call void @move_off(i64 %caller)
  br label %sleep
spin:
  call void @relax()
  %n.next = add nuw i32 %n, 1
  br label %poll
sleep:
  %sleepers = getelementptr inbounds i64, ptr @{state}, i64 {sleepers}
  %was = atomicrmw add ptr %sleepers, i64 1 seq_cst
  %still = load atomic i32, ptr @{state} seq_cst, align 64
  %same = icmp eq i32 %still, %seen
  br i1 %same, label %futex, label %awake
futex:
  %slept = call i64 (i64, ...) @syscall(i64 {futex}, ptr @{state}, i32 {futex_wait}, i32 %seen, ptr null, ptr null, i32 0)
  br label %awake
awake:
  %were = atomicrmw sub ptr %sleepers, i64 1 seq_cst
  br label %wait
region:
  %wanted = load atomic i64, ptr {at_wanted} acquire, align 8
  %want = icmp slt i64 %index, %wanted
  br i1 %want, label %join, label %skip
skip:
  br label %wait
join:
  %active = getelementptr inbounds i64, ptr @{state}, i64 {active}
  %joining = atomicrmw add ptr %active, i64 1 seq_cst
  %open = load atomic i32, ptr {at_open} seq_cst, align 8
  %running = icmp eq i32 %open, %arrived
  br i1 %running, label %run, label %late
run:
  %core = call i32 @sched_getcpu()
  %core.wide = sext i32 %core to i64
  %caller.core = load atomic i64, ptr {at_cpu} monotonic, align 8
  %crowding = icmp eq i64 %core.wide, %caller.core
  br i1 %crowding, label %crowd, label %enter
crowd:
  store atomic i64 1, ptr {at_crowded} monotonic, align 8
  %crowds = atomicrmw add ptr {at_crowded_joins}, i64 1 monotonic
  br label %left
enter:
  %fn = load ptr, ptr {at_fn}, align 8
  %data = load ptr, ptr {at_data}, align 8
  call void %fn(ptr %data)
  %joined = atomicrmw add ptr {at_joined}, i64 1 monotonic
  br label %left
late:
  %lates = atomicrmw add ptr {at_late}, i64 1 monotonic
  br label %left
left:
  %crowded.here = phi i1 [true, %crowd], [false, %enter], [false, %late]
  %crowded.core = phi i64 [%caller.core, %crowd], [0, %enter], [0, %late]
  call void @changed(ptr %active, i64 -1)
  br i1 %crowded.here, label %moving, label %wait
moving:
  call void @move_off(i64 %crowded.core)
  br label %wait
}}
"""


def pool_module(machine: str, loadavg=LOADAVG) -> str:
    """The LLVM IR text of the pool for `machine` (platform.machine(): a key of FUTEX); `loadavg`:
    the file whose fourth field counts the machine's runnable threads (a test's own file)."""
    x86 = machine == "x86_64"
    return _TEMPLATE.format(loadavg=loadavg, loadavg_size=len(loadavg.encode()) + 1,
        state=STATE, words=WORDS, futex=FUTEX[machine], futex_wait=FUTEX_WAIT, futex_wake=FUTEX_WAKE,
        setaffinity=AFFINITY[machine][0], getaffinity=AFFINITY[machine][1], openat=FILES[machine][0],
        read=FILES[machine][1], close=FILES[machine][2], spin=SPIN, look_mask=LOOK_EVERY - 1, quiet_most=QUIET_MOST, **FIELDS,
        **{f"at_{name}": f"getelementptr inbounds ([{WORDS} x i64], ptr @{STATE}, i64 0, i64 {word})"
           for name, word in FIELDS.items()},
        pause_declaration="declare void @llvm.x86.sse2.pause()\n" if x86 else "",
        pause="  call void @llvm.x86.sse2.pause()\n" if x86 else "")


def runs_on(system: str, machine: str) -> bool:
    """Whether the pool runs on `system` (sys.platform) and `machine` (platform.machine()): Linux
    (futex, pthreads) on a machine whose futex call number FUTEX knows."""
    return system.startswith("linux") and machine in FUTEX
