// Cycles per (key, kv head) of the CPU decode attention core (csrc/cpu/attention.cpp), float32,
// D = 128, timed in C++ without the Python call. The "one-thread harness" rows of benchmarks/NOTES.md.
//
// Build (from the repository root) and run:
//   g++ -O3 -std=c++17 -ffp-contract=off -fno-math-errno -fopenmp -Icsrc -Icsrc/cpu
//       benchmarks/attention_core_cycles.cpp csrc/cpu/attention.cpp csrc/cpu/rng.cpp csrc/cpu/parallel.cpp
//       -o /tmp/attention_core_cycles   (one line)
//   OMP_NUM_THREADS=1 /tmp/attention_core_cycles hot   G S      # one kv head, G query rows, S keys
//   OMP_NUM_THREADS=1 /tmp/attention_core_cycles cold  G S      # rotated over 256 MB, with a pure read
//   OMP_NUM_THREADS=1 /tmp/attention_core_cycles paged G Hkv S  # page 16, shuffled, against contiguous
// hot: S = 768 keeps K and V (768 KB) in a 1 MB L2. Cycles are at a nominal GHZ (env, default
// 2.6): compare builds side by side, interleaved, on this drifting VM. QUICK=1 runs each timing
// once (the test's build-and-outputs check). GENENGINE_CPU_ISA and
// GENENGINE_ATTENTION_PREFETCH pick the core and the prefetch level as in the package.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/attention.h"

namespace {

constexpr int64_t kD = 128;
constexpr int64_t kPage = 16;

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double ghz() { return std::getenv("GHZ") ? std::atof(std::getenv("GHZ")) : 2.6; }

std::vector<float> normals(int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = nd(rng);
  return x;
}

// decode args for one sequence of S keys: contiguous [Hkv, S, D] caches, or paged [P, 16, Hkv, D]
ge::DecodeArgs args(int64_t Hq, int64_t Hkv, const int32_t* L, const float* q, float* out, const float* k, const float* v,
                    int64_t S, const int32_t* bt) {
  ge::DecodeArgs a;
  a.dtype = 0; /* float32 */ a.B = 1; a.Q = 1; a.Hq = Hq; a.Hkv = Hkv; a.D = kD;
  a.q = q; a.out = out; a.lse = nullptr; a.seqlens = L; a.scale = 1.0f / std::sqrt(float(kD)); a.num_splits = 1;
  a.kv.k = k; a.kv.v = v;
  if (bt == nullptr) {
    a.kv.k_sp = a.kv.v_sp = Hkv * S * kD; a.kv.k_ss = a.kv.v_ss = kD; a.kv.k_sh = a.kv.v_sh = S * kD;
    a.kv.page_size = S; a.kv.num_pages = 1;
  } else {
    a.kv.k_sp = a.kv.v_sp = kPage * Hkv * kD; a.kv.k_ss = a.kv.v_ss = Hkv * kD; a.kv.k_sh = a.kv.v_sh = kD;
    a.kv.page_size = kPage; a.kv.num_pages = S / kPage; a.kv.block_table = bt; a.kv.bt_stride = S / kPage;
  }
  return a;
}

// QUICK=1 (the test's setting): one call per timing, for a check of the outputs, not of speed
bool quick() {
  static const bool yes = std::getenv("QUICK") != nullptr && std::strcmp(std::getenv("QUICK"), "1") == 0;
  return yes;
}

// best over 7 rounds of `reps` calls, seconds per call
template <typename F>
double best_of(int reps, F&& f) {
  double best = 1e30;
  if (quick()) reps = 1;
  for (int r = 0; r < (quick() ? 1 : 7); ++r) {
    const double t0 = now();
    for (int i = 0; i < reps; ++i) f(i);
    best = std::min(best, (now() - t0) / reps);
  }
  return best;
}

void hot(int64_t G, int64_t S) {
  const auto q = normals(G * kD, 1), k = normals(S * kD, 2), v = normals(S * kD, 3);
  std::vector<float> out(static_cast<size_t>(G * kD));
  const int32_t L = int32_t(S);
  const ge::DecodeArgs a = args(G, 1, &L, q.data(), out.data(), k.data(), v.data(), S, nullptr);
  for (int i = 0; i < 20; ++i) ge::decode_attention(a);
  const double t = best_of(int(std::max<int64_t>(10, 3000000 / S)), [&](int) { ge::decode_attention(a); });
  std::printf("hot G=%ld S=%ld: %.2f us, %.1f cycles per key\n", long(G), long(S), t * 1e6, t * ghz() * 1e9 / S);
}

void cold(int64_t G, int64_t S) {
  const int64_t per = 2 * S * kD;
  const int sets = quick() ? 2 : int((int64_t(256) << 20) / (per * 4)) + 1;
  const auto kv = normals(per * sets, 2), q = normals(G * kD, 1);
  std::vector<float> out(static_cast<size_t>(G * kD));
  const int32_t L = int32_t(S);
  auto call = [&](int s) {
    const float* k = kv.data() + s * per;
    ge::decode_attention(args(G, 1, &L, q.data(), out.data(), k, k + S * kD, S, nullptr));
  };
  volatile float sink = 0.0f;
  auto read = [&](int s) {  // the same bytes, in order (SSE: the build needs no -mavx; DRAM bounds it anyway)
    const float* p = kv.data() + s * per;
    __m128 a0 = _mm_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = 0; i < per; i += 16) {
      a0 = _mm_add_ps(a0, _mm_loadu_ps(p + i));
      a1 = _mm_add_ps(a1, _mm_loadu_ps(p + i + 4));
      a2 = _mm_add_ps(a2, _mm_loadu_ps(p + i + 8));
      a3 = _mm_add_ps(a3, _mm_loadu_ps(p + i + 12));
    }
    sink = sink + _mm_cvtss_f32(_mm_add_ps(_mm_add_ps(a0, a1), _mm_add_ps(a2, a3)));
  };
  int s = 0;
  const double tc = best_of(sets, [&](int) { call(s = (s + 1) % sets); });
  const double tr = best_of(sets, [&](int) { read(s = (s + 1) % sets); });
  const double c = ghz() * 1e9 / S;
  std::printf("cold G=%ld S=%ld: %.1f cycles per key (%.1f GB/s), pure read %.1f (%.1f GB/s): core / read %.2f\n", long(G),
              long(S), tc * c, per * 4 / tc / 1e9, tr * c, per * 4 / tr / 1e9, tc / tr);
}

void paged(int64_t G, int64_t Hkv, int64_t S) {
  const int64_t Hq = G * Hkv, P = S / kPage, n = Hkv * S * kD;
  const auto q = normals(Hq * kD, 1), k = normals(n, 2), v = normals(n, 3);
  std::vector<float> kp(static_cast<size_t>(n)), vp(static_cast<size_t>(n)), o1(static_cast<size_t>(Hq * kD)), o2(static_cast<size_t>(Hq * kD));
  std::vector<int32_t> bt(static_cast<size_t>(P));
  for (int64_t i = 0; i < P; ++i) bt[static_cast<size_t>(i)] = int32_t(i);
  std::shuffle(bt.begin(), bt.end(), std::mt19937(4));
  for (int64_t h = 0; h < Hkv; ++h)
    for (int64_t j = 0; j < S; ++j) {
      const int64_t dst = ((int64_t(bt[static_cast<size_t>(j / kPage)]) * kPage + j % kPage) * Hkv + h) * kD, src = (h * S + j) * kD;
      std::memcpy(&kp[static_cast<size_t>(dst)], &k[static_cast<size_t>(src)], kD * sizeof(float));
      std::memcpy(&vp[static_cast<size_t>(dst)], &v[static_cast<size_t>(src)], kD * sizeof(float));
    }
  const int32_t L = int32_t(S);
  const ge::DecodeArgs ac = args(Hq, Hkv, &L, q.data(), o1.data(), k.data(), v.data(), S, nullptr);
  const ge::DecodeArgs ap = args(Hq, Hkv, &L, q.data(), o2.data(), kp.data(), vp.data(), S, bt.data());
  const int reps = int(std::max<int64_t>(5, 2000000 / (S * Hkv)));
  double tc = 1e30, tp = 1e30;
  for (int r = 0; r < 3; ++r) {  // interleaved
    tc = std::min(tc, best_of(reps, [&](int) { ge::decode_attention(ac); }));
    tp = std::min(tp, best_of(reps, [&](int) { ge::decode_attention(ap); }));
  }
  double diff = 0.0;
  for (size_t i = 0; i < o1.size(); ++i) diff = std::max(diff, double(std::fabs(o1[i] - o2[i])));
  const double c = ghz() * 1e9 / double(S * Hkv);
  std::printf("paged G=%ld Hkv=%ld S=%ld: contiguous %.1f, paged %.1f cycles per (key, kv head): paged / contiguous %.3f"
              " (outputs differ by %.2g)\n", long(G), long(Hkv), long(S), tc * c, tp * c, tp / tc, diff);
}

}  // namespace

int main(int argc, char** argv) {
  const char* usage = "usage: attention_core_cycles hot G S | cold G S | paged G Hkv S (S a multiple of 16)\n";
  if (argc < 4) return std::fputs(usage, stderr), 2;
  const int64_t a = std::atol(argv[2]), b = std::atol(argv[3]), c = argc > 4 ? std::atol(argv[4]) : 0;
  if (!std::strcmp(argv[1], "hot") && a > 0 && b > 0) return hot(a, b), 0;
  if (!std::strcmp(argv[1], "cold") && a > 0 && b > 0) return cold(a, b), 0;
  if (!std::strcmp(argv[1], "paged") && a > 0 && b > 0 && c >= kPage && c % kPage == 0) return paged(a, b, c), 0;
  return std::fputs(usage, stderr), 2;
}
