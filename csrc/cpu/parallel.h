// A small work-sharing thread pool for the CPU kernels.
//
// Why not OpenMP: the torch wheel ships its own libgomp; a second OpenMP runtime in the process
// keeps its threads spinning after each of our kernels and steals the cores from torch's next op.
// This pool spins briefly, then sleeps, and hands out chunks dynamically, so a worker that is slow to
// wake never delays the caller: the calling thread takes every chunk nobody else has claimed.
#pragma once
#include <cstdint>
#include <functional>

namespace ge {

void set_num_threads(int n);
int get_num_threads();

// Calls fn(chunk) for every chunk in [0, n_chunks), on the calling thread and the pool's workers.
// Returns when all chunks are done. Chunks must be independent.
void parallel_chunks(int64_t n_chunks, const std::function<void(int64_t)>& fn);

}  // namespace ge
