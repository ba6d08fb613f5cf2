// A host emulation of CUDA's execution model, enough to run ndlc's generated CUDA C on the CPU
// (g++ -std=c++20 -include cuda_emulation.h -DNDLC_EMULATE -x c++): the blocks of a launch run one
// after another; each block's threads are fibers (ucontext) on one OS thread, resumed round-robin;
// __syncthreads() suspends the calling thread, so a round in which every thread of the block runs
// up to its next barrier is exactly a barrier; __shared__ variables are static (one block runs at
// a time); warp shuffles exchange values through a per-block buffer between two barriers (every
// thread of the block reaches them, as in the generated code). Fibers switch in about 100 ns, so
// a kernel that synchronises thousands of times runs in milliseconds, and the order is
// deterministic.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <ucontext.h>
#include <vector>

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
        for (unsigned t = 0; t < threads; ++t) {
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
    for (unsigned b = 0; b < blocks; ++b) ndlc_emulation::run_block(b, threads);
    ndlc_emulation::body = nullptr;
}
