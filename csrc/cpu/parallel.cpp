// See parallel.h. Two ways to run a job in parallel:
//  1. On the OpenMP runtime torch already loaded (its libgomp, or libiomp5's GOMP entry points),
//     found at run time among the loaded objects: our kernels then share torch's threads, so a
//     step right after a torch op finds them awake, and nobody's spinning threads compete for the
//     cores. We do not link it: the entry point, GOMP_parallel, is the stable GCC OpenMP ABI.
//  2. Otherwise (no OpenMP runtime loaded, or GENENGINE_THREADPOOL=own), our own pool below.
//
// Own pool protocol: the caller publishes a job (function, chunk count, chunk cursor), then
// opens it by storing a new generation in `state_` (generation in the high 32 bits, a "closed" bit,
// and the number of workers that joined). Workers join by CAS while the job is open, claim chunks
// from the cursor, and leave by decrementing. The caller claims chunks too, then closes the job and
// waits until no worker is left inside, so the job's storage is never touched after it returns.
#include "parallel.h"

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define GE_PAUSE() _mm_pause()
#else
#define GE_PAUSE() ((void)0)
#endif

namespace ge {
namespace {

constexpr uint64_t kClosed = 1ull << 31;
constexpr uint64_t kActiveMask = kClosed - 1;
constexpr auto kSpinTime = std::chrono::microseconds(20);

class Pool {
 public:
  explicit Pool(int n_workers) {
    for (int i = 0; i < n_workers; ++i) threads_.emplace_back([this] { work(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_.store(true);
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  void run(int64_t n_chunks, const std::function<void(int64_t)>& fn) {
    fn_ = &fn;
    n_chunks_ = n_chunks;
    cursor_.store(0, std::memory_order_relaxed);
    const uint64_t gen = ++generation_;
    state_.store(gen << 32, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      cv_.notify_all();
    }
    claim_chunks();
    uint64_t s = state_.load(std::memory_order_acquire);
    while (!state_.compare_exchange_weak(s, s | kClosed, std::memory_order_acq_rel)) {
    }
    while ((state_.load(std::memory_order_acquire) & kActiveMask) != 0) GE_PAUSE();
  }

 private:
  void claim_chunks() {
    for (;;) {
      const int64_t c = cursor_.fetch_add(1, std::memory_order_relaxed);
      if (c >= n_chunks_) return;
      (*fn_)(c);
    }
  }

  void work() {
    uint64_t last_gen = 0;
    auto spin_start = std::chrono::steady_clock::now();
    for (;;) {
      if (stop_.load(std::memory_order_relaxed)) return;
      uint64_t s = state_.load(std::memory_order_acquire);
      const uint64_t gen = s >> 32;
      if (gen != last_gen) {
        last_gen = gen;
        bool joined = false;
        while (!(s & kClosed) && (s >> 32) == gen) {
          if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) {
            joined = true;
            break;
          }
        }
        if (joined) {
          claim_chunks();
          state_.fetch_sub(1, std::memory_order_acq_rel);
        }
        spin_start = std::chrono::steady_clock::now();
        continue;
      }
      if (std::chrono::steady_clock::now() - spin_start < kSpinTime) {
        for (int i = 0; i < 32; ++i) GE_PAUSE();
        continue;
      }
      std::unique_lock<std::mutex> lock(mutex_);
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      cv_.wait(lock, [&] {
        return stop_.load() || (state_.load(std::memory_order_seq_cst) >> 32) != last_gen;
      });
      sleepers_.fetch_sub(1, std::memory_order_seq_cst);
      spin_start = std::chrono::steady_clock::now();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::atomic<uint64_t> state_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> cursor_{0};
  uint64_t generation_ = 0;
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t n_chunks_ = 0;
};

int default_threads() {
  for (const char* var : {"GENENGINE_NUM_THREADS", "OMP_NUM_THREADS"}) {
    if (const char* v = std::getenv(var)) {
      const int n = std::atoi(v);
      if (n > 0) return n;
    }
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set) > 0 ? CPU_COUNT(&set) : 1;
  const unsigned hc = std::thread::hardware_concurrency();
  return hc > 0 ? int(hc) : 1;
}

// ---- torch's OpenMP runtime --------------------------------------------------------------------

using GompParallel = void (*)(void (*)(void*), void*, unsigned, unsigned);

std::string g_omp_library;  // path of the runtime found, for info()

int find_omp_runtime(struct dl_phdr_info* info, size_t, void* out) {
  const char* name = info->dlpi_name;
  if (name && (std::strstr(name, "libgomp") || std::strstr(name, "libiomp5"))) {
    *static_cast<std::string*>(out) = name;
    return 1;
  }
  return 0;
}

GompParallel load_gomp_parallel() {
  const char* choice = std::getenv("GENENGINE_THREADPOOL");
  if (choice && std::strcmp(choice, "own") == 0) return nullptr;
  std::string path;
  dl_iterate_phdr(find_omp_runtime, &path);
  if (path.empty()) return nullptr;
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);  // already loaded: no new copy
  if (!handle) return nullptr;
  auto fn = reinterpret_cast<GompParallel>(dlsym(handle, "GOMP_parallel"));
  if (fn) g_omp_library = path;
  return fn;
}

struct OmpJob {
  const std::function<void(int64_t)>* fn;
  int64_t n_chunks;
  std::atomic<int64_t> cursor{0};
};

void omp_trampoline(void* data) {
  auto* job = static_cast<OmpJob*>(data);
  for (;;) {
    const int64_t c = job->cursor.fetch_add(1, std::memory_order_relaxed);
    if (c >= job->n_chunks) return;
    (*job->fn)(c);
  }
}

GompParallel g_gomp_parallel = nullptr;
bool g_gomp_checked = false;

// ---- own pool -----------------------------------------------------------------------------------

std::mutex g_pool_mutex;  // serialises callers: one parallel job at a time
int g_threads = 0;
Pool* g_pool = nullptr;   // leaked on fork in the child (its threads do not exist there)
bool g_atfork_registered = false;

void reset_after_fork() {
  g_pool = nullptr;  // the parent's workers are gone; build a new pool on next use
  new (&g_pool_mutex) std::mutex();
}

}  // namespace

void set_num_threads(int n) {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (n < 1) n = 1;
  if (n == g_threads && g_pool) return;
  delete g_pool;
  g_pool = nullptr;
  g_threads = n;
}

std::string threading_backend() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (!g_gomp_checked) {
    g_gomp_parallel = load_gomp_parallel();
    g_gomp_checked = true;
  }
  return g_gomp_parallel ? "OpenMP runtime already loaded by torch (" + g_omp_library + ")" : "own thread pool";
}

int get_num_threads() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (g_threads == 0) g_threads = default_threads();
  return g_threads;
}

void parallel_chunks(int64_t n_chunks, const std::function<void(int64_t)>& fn) {
  if (n_chunks <= 0) return;
  if (n_chunks == 1) {
    fn(0);
    return;
  }
  std::unique_lock<std::mutex> lock(g_pool_mutex, std::try_to_lock);
  if (!lock.owns_lock()) {  // another thread's job holds the pool: run serially, never deadlock
    for (int64_t c = 0; c < n_chunks; ++c) fn(c);
    return;
  }
  if (g_threads == 0) g_threads = default_threads();
  if (g_threads <= 1) {
    for (int64_t c = 0; c < n_chunks; ++c) fn(c);
    return;
  }
  if (!g_gomp_checked) {
    g_gomp_parallel = load_gomp_parallel();
    g_gomp_checked = true;
  }
  if (g_gomp_parallel) {
    OmpJob job;
    job.fn = &fn;
    job.n_chunks = n_chunks;
    const unsigned threads = unsigned(std::min<int64_t>(g_threads, n_chunks));
    g_gomp_parallel(omp_trampoline, &job, threads, 0);
    return;
  }
  if (!g_pool) {
    if (!g_atfork_registered) {
      pthread_atfork(nullptr, nullptr, reset_after_fork);
      g_atfork_registered = true;
    }
    g_pool = new Pool(g_threads - 1);
  }
  g_pool->run(n_chunks, fn);
}

}  // namespace ge
