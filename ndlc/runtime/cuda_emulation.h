// A host emulation of CUDA's execution model, enough to run ndlc's generated CUDA C on the CPU
// (g++ -std=c++20 -pthread -include cuda_emulation.h -DNDLC_EMULATE -x c++): the blocks of a launch
// run one after another; each block's threads are OS threads; __syncthreads() is a barrier of the
// block; __shared__ variables are static (one block runs at a time); warp shuffles exchange values
// through a per-block buffer between two barriers (every thread of the block reaches them, as in
// the generated code). Small blocks only: one OS thread per CUDA thread.
#include <barrier>
#include <cmath>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

static thread_local dim3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;
static std::barrier<>* ndlc_block_barrier = nullptr;
static std::vector<unsigned long long> ndlc_exchange;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

inline void __syncthreads() { ndlc_block_barrier->arrive_and_wait(); }

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
    for (unsigned b = 0; b < blocks; ++b) {
        std::barrier<> barrier(threads);
        ndlc_block_barrier = &barrier;
        std::vector<std::thread> team;
        team.reserve(threads);
        for (unsigned t = 0; t < threads; ++t)
            team.emplace_back([&, b, t] {
                blockIdx = dim3{b, 1, 1};
                threadIdx = dim3{t, 1, 1};
                kernel();
            });
        for (auto& thread : team) thread.join();
    }
    ndlc_block_barrier = nullptr;
}
