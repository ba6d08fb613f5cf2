// A host emulation of CUDA's execution model, enough to run ndlc's generated CUDA C on the CPU
// (g++ -std=c++20 -include cuda_emulation.h -DNDLC_EMULATE -x c++): the blocks of a launch run one
// after another; each block's threads are fibers (ucontext) on one OS thread, resumed round-robin;
// __syncthreads() suspends the calling thread, so a round in which every thread of the block runs
// up to its next barrier is exactly a barrier; __shared__ variables are static (one block runs at
// a time); warp shuffles exchange values through a per-block buffer between two barriers (every
// thread of the block reaches them, as in the generated code). Fibers switch in about 100 ns, so
// a kernel that synchronises thousands of times runs in milliseconds, and the order is
// deterministic.
// With NDLC_STRESS (NDLC_CUDA_EMULATE=stress) the order is still deterministic but hostile: the
// blocks of a launch run in a seeded random order, the threads of a block in a new seeded random
// order in every barrier round (so a kernel that depends on a thread running before another
// without a barrier between them gives a different result), and every float4 access checks its
// alignment, recording the first fault for ndlc_emulate_fault().
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <stdexcept>
#include <ucontext.h>
#include <vector>

static char ndlc_fault[256] = "";
extern "C" const char* ndlc_emulate_fault() { return ndlc_fault; }
extern "C" void ndlc_emulate_clear_fault() { ndlc_fault[0] = 0; }
#ifdef NDLC_STRESS
#define NDLC_CHECK_ALIGNED(p)                                                                        \
    if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0 && !ndlc_fault[0])                            \
        std::snprintf(ndlc_fault, sizeof ndlc_fault, "misaligned float4 access at %p (thread %u of block %u)", \
                      static_cast<const void*>(p), threadIdx.x, blockIdx.x)
#endif

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

struct float4 {
    float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

static dim3 threadIdx, blockIdx, blockDim, gridDim;
static std::vector<unsigned long long> ndlc_exchange;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

namespace ndlc_emulation {
constexpr size_t STACK = 256 * 1024;
static ucontext_t scheduler;
static std::vector<ucontext_t> fibers;
static std::vector<char*> stacks;
static std::vector<bool> finished;
static const std::function<void()>* body = nullptr;
#ifdef NDLC_STRESS
static std::mt19937 order_random(20261206);
#endif

inline std::vector<unsigned> order(unsigned n) {  // the order of n blocks, or of a round's threads
    std::vector<unsigned> found(n);
    std::iota(found.begin(), found.end(), 0u);
#ifdef NDLC_STRESS
    std::shuffle(found.begin(), found.end(), order_random);
#endif
    return found;
}

inline void run_thread(int t) {
    (*body)();
    finished[t] = true;
    swapcontext(&fibers[t], &scheduler);
}

inline void run_block(unsigned block, unsigned threads) {
    fibers.resize(threads);
    finished.assign(threads, false);
    while (stacks.size() < threads) stacks.push_back(static_cast<char*>(std::malloc(STACK)));
    blockIdx = dim3{block, 1, 1};
    for (unsigned t = 0; t < threads; ++t) {
        getcontext(&fibers[t]);
        fibers[t].uc_stack.ss_sp = stacks[t];
        fibers[t].uc_stack.ss_size = STACK;
        fibers[t].uc_link = &scheduler;
        makecontext(&fibers[t], reinterpret_cast<void (*)()>(run_thread), 1, static_cast<int>(t));
    }
    for (unsigned alive = threads; alive > 0;) {  // one round: every live thread up to its next barrier
        alive = 0;
        for (unsigned t : order(threads)) {
            if (finished[t]) continue;
            threadIdx = dim3{t, 1, 1};
            swapcontext(&scheduler, &fibers[t]);
            alive += !finished[t];
        }
    }
}
}  // namespace ndlc_emulation

inline void __syncthreads() {
    unsigned t = threadIdx.x;
    swapcontext(&ndlc_emulation::fibers[t], &ndlc_emulation::scheduler);
    threadIdx = dim3{t, 1, 1};
}

template <class T> T ndlc_exchange_read(T v, unsigned source, bool take) {
    static_assert(sizeof(T) <= sizeof(unsigned long long), "shuffled values are at most 8 bytes");
    std::memcpy(&ndlc_exchange[threadIdx.x], &v, sizeof(T));
    __syncthreads();
    T result = v;
    if (take) std::memcpy(&result, &ndlc_exchange[source], sizeof(T));
    __syncthreads();
    return result;
}

template <class T> T __shfl_down_sync(unsigned, T v, int delta) {
    unsigned lane = threadIdx.x & 31u, source = threadIdx.x + delta;
    return ndlc_exchange_read(v, source, lane + delta < 32 && source < blockDim.x);
}

template <class T> T __shfl_sync(unsigned, T v, int lane) {
    unsigned source = (threadIdx.x & ~31u) + lane;
    return ndlc_exchange_read(v, source, source < blockDim.x);
}

inline void ndlc_emulate_launch(unsigned blocks, unsigned threads, const std::function<void()>& kernel) {
    gridDim = dim3{blocks, 1, 1};
    blockDim = dim3{threads, 1, 1};
    ndlc_exchange.assign(threads, 0);
    ndlc_emulation::body = &kernel;
    for (unsigned b : ndlc_emulation::order(blocks)) ndlc_emulation::run_block(b, threads);
    ndlc_emulation::body = nullptr;
}
