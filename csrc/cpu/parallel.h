// Parallel loops for the CPU kernels.
//
// Preferred: the OpenMP runtime torch has already loaded into the process, borrowed at run time
// (not linked): one set of threads for torch and genengine, so neither's idle-spinning threads
// steal the 2 cores from the other (measured: a step right after a torch op ran 1.4-2.5x slower
// with two pools). Linking our own OpenMP would load a second runtime with its own spinning threads.
// Fallback: a small pool of our own that spins briefly, then sleeps. Either way, chunks are handed
// out dynamically, so a thread that is slow to wake never delays the caller.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace ge {

void set_num_threads(int n);
int get_num_threads();
std::string threading_backend();  // which of the two runs the loops

// Calls fn(chunk) for every chunk in [0, n_chunks), on the calling thread and the pool's workers.
// Returns when all chunks are done. Chunks must be independent.
void parallel_chunks(int64_t n_chunks, const std::function<void(int64_t)>& fn);

}  // namespace ge
