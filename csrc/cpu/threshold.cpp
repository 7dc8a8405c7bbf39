// Per-sample dynamic thresholds on the CPU: the ratio-quantile of |x0| for each sample, without
// sorting and without storing x0.
//
// Shapes: x, cond, uncond are contiguous [batch, inner] of one dtype; guidance_per_sample float32
// [batch]; thresholds float32 [batch] out. x0 = kx * x + kp * p is recomputed on the fly in each pass
// with exactly the operations of the step kernel, so the threshold sees the values the step clamps.
//
// Selection: |x0| as a uint32 key (abs_key in step.h: monotone in |x0|, NaNs on top) is radix
// selected in three passes over digits of 11, 10 and 10 bits. Each pass histograms the keys that
// match the prefix found so far, and the histogram's cumulative counts say which digit holds the
// wanted rank. Two ranks are wanted (the order statistics rank and rank + 1 that torch.quantile
// interpolates): while they share a prefix one histogram serves both. The work is split into tasks
// (sample, chunk) so that a single large sample still uses every thread; each task writes its own
// histograms, which the calling thread adds up per sample between passes (2048 bins per chunk, a
// small cost next to the chunk's 32K+ elements).
#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu_common.h"
#include "diffusion.h"
#include "parallel.h"

namespace ge {
namespace {

constexpr int64_t kSelectChunk = 1 << 15;  // elements per task, at least
constexpr int kKeyBatch = 256;             // keys computed per vectorised block

struct SampleState {
  uint32_t prefix[2] = {0, 0};  // key bits found so far for rank and rank + 1
  int64_t rank[2] = {0, 0};     // the wanted rank among the keys with that prefix
  bool nan = false;             // the sample holds a NaN: its threshold is NaN, no more passes
};

template <typename T, bool UNCOND>
inline __attribute__((always_inline)) void keys_block(const ThresholdArgs& a, int64_t i0, int len, float w,
                                                      uint32_t* __restrict keys) {
  const T* __restrict x = static_cast<const T*>(a.x);
  const T* __restrict cond = static_cast<const T*>(a.cond);
  const T* __restrict uncond = static_cast<const T*>(a.uncond);
  const LoopTerm<true> tkx(a.kx);
  const float kp = a.kp;
  for (int j = 0; j < len; ++j) {
    const float xv = to_float(x[i0 + j]);
    const float cv = to_float(cond[i0 + j]);
    const float p = UNCOND ? guided(cv, to_float(uncond[i0 + j]), w) : cv;
    keys[j] = abs_key(tkx(xv) + kp * p);  // predicted_x0 without clipping, as in step_segment
  }
}

// One task: elements [i0, i1) of sample b, histograms of this pass's digit into h0 (and h1 when
// the two ranks have different prefixes). h0 and h1 are zeroed here.
template <typename T, bool UNCOND>
inline __attribute__((always_inline)) void select_task_impl(const ThresholdArgs& a, const SampleState& st, int pass,
                                                            int64_t b, int64_t i0, int64_t i1, uint32_t* h0,
                                                            uint32_t* h1) {
  const int shift = select_shift(pass), bits = select_bits(pass), high = shift + bits;
  const uint32_t mask = (1u << bits) - 1u;
  const bool same = st.prefix[0] == st.prefix[1];
  std::memset(h0, 0, sizeof(uint32_t) * kSelectBins);
  if (!same) std::memset(h1, 0, sizeof(uint32_t) * kSelectBins);
  const float w = UNCOND ? (a.guidance_per_sample ? a.guidance_per_sample[b] : a.guidance) : 1.0f;
  alignas(64) uint32_t keys[kKeyBatch];
  if (pass == 0) {
    // every key counts: four interleaved histograms, so runs of equal digits (common: most |x0|
    // share a few exponents) do not serialise on one counter's store-to-load latency
    std::vector<uint32_t> sub(3 * kSelectBins, 0u);
    uint32_t* hs[4] = {h0, sub.data(), sub.data() + kSelectBins, sub.data() + 2 * kSelectBins};
    for (int64_t i = i0; i < i1; i += kKeyBatch) {
      const int len = int(std::min<int64_t>(kKeyBatch, i1 - i));
      keys_block<T, UNCOND>(a, i, len, w, keys);
      int j = 0;
      for (; j + 4 <= len; j += 4) {
        ++hs[0][keys[j] >> shift];
        ++hs[1][keys[j + 1] >> shift];
        ++hs[2][keys[j + 2] >> shift];
        ++hs[3][keys[j + 3] >> shift];
      }
      for (; j < len; ++j) ++h0[keys[j] >> shift];
    }
    for (int d = 0; d < kSelectBins; ++d) h0[d] += hs[1][d] + hs[2][d] + hs[3][d];
    return;
  }
  const uint32_t p0 = st.prefix[0], p1 = st.prefix[1];
  for (int64_t i = i0; i < i1; i += kKeyBatch) {
    const int len = int(std::min<int64_t>(kKeyBatch, i1 - i));
    keys_block<T, UNCOND>(a, i, len, w, keys);
    for (int j = 0; j < len; ++j) {  // few keys match: the branches are well predicted
      const uint32_t key = keys[j], top = key >> high, d = (key >> shift) & mask;
      if (top == p0) ++h0[d];
      if (!same && top == p1) ++h1[d];
    }
  }
}

template <typename T>
inline __attribute__((always_inline)) void select_task(const ThresholdArgs& a, const SampleState& st, int pass,
                                                       int64_t b, int64_t i0, int64_t i1, uint32_t* h0, uint32_t* h1) {
  if (a.uncond) select_task_impl<T, true>(a, st, pass, b, i0, i1, h0, h1);
  else select_task_impl<T, false>(a, st, pass, b, i0, i1, h0, h1);
}

GE_MULTIVERSIONED((void select_task_f32(const ThresholdArgs& a, const SampleState& st, int pass, int64_t b, int64_t i0,
                                        int64_t i1, uint32_t* h0, uint32_t* h1)),
                  { select_task<float>(a, st, pass, b, i0, i1, h0, h1); })
GE_MULTIVERSIONED((void select_task_bf16(const ThresholdArgs& a, const SampleState& st, int pass, int64_t b, int64_t i0,
                                         int64_t i1, uint32_t* h0, uint32_t* h1)),
                  { select_task<BF16>(a, st, pass, b, i0, i1, h0, h1); })
GE_MULTIVERSIONED((void select_task_f16(const ThresholdArgs& a, const SampleState& st, int pass, int64_t b, int64_t i0,
                                        int64_t i1, uint32_t* h0, uint32_t* h1)),
                  { select_task<F16>(a, st, pass, b, i0, i1, h0, h1); })

// Moves a rank's prefix one digit down: the digit whose cumulative count passes the rank.
void descend(const uint32_t* hist, int bits, uint32_t* prefix, int64_t* rank) {
  int64_t before = 0;
  const int bins = 1 << bits;
  for (int d = 0; d < bins; ++d) {
    if (before + int64_t(hist[d]) > *rank) {
      *prefix = (*prefix << bits) | uint32_t(d);
      *rank -= before;
      return;
    }
    before += hist[d];
  }
  // unreachable when the counts add up to the sample's size (rank < inner)
}

}  // namespace

void dynamic_thresholds(const ThresholdArgs& a) {
  if (a.batch <= 0 || a.inner <= 0) return;
  const int64_t chunks_needed = (a.inner + kSelectChunk - 1) / kSelectChunk;
  const int64_t threads = std::max(1, get_num_threads());
  const int64_t cps = std::max<int64_t>(1, std::min(chunks_needed, (4 * threads + a.batch - 1) / a.batch));
  const int64_t chunk = (a.inner + cps - 1) / cps;
  const int64_t tasks = a.batch * cps;
  std::vector<SampleState> state(size_t(a.batch));
  const int64_t last = a.inner - 1;
  for (auto& st : state) {
    st.rank[0] = std::min(a.rank, last);
    st.rank[1] = std::min(a.rank + 1, last);
  }
  std::vector<uint32_t> hist(size_t(tasks) * 2 * kSelectBins);
  std::vector<uint32_t> total(2 * kSelectBins);
  for (int pass = 0; pass < kSelectPasses; ++pass) {
    parallel_chunks(tasks, [&](int64_t t) {
      const int64_t b = t / cps, c = t % cps;
      const SampleState& st = state[size_t(b)];
      if (st.nan) return;
      const int64_t i0 = b * a.inner + c * chunk, i1 = b * a.inner + std::min(a.inner, (c + 1) * chunk);
      uint32_t* h0 = hist.data() + size_t(t) * 2 * kSelectBins;
      uint32_t* h1 = h0 + kSelectBins;
      if (i0 >= i1) {
        std::memset(h0, 0, sizeof(uint32_t) * 2 * kSelectBins);
        return;
      }
      switch (a.dtype) {
        case kFloat32: select_task_f32(a, st, pass, b, i0, i1, h0, h1); break;
        case kBFloat16: select_task_bf16(a, st, pass, b, i0, i1, h0, h1); break;
        default: select_task_f16(a, st, pass, b, i0, i1, h0, h1); break;
      }
    });
    const int bits = select_bits(pass);
    for (int64_t b = 0; b < a.batch; ++b) {
      SampleState& st = state[size_t(b)];
      if (st.nan) continue;
      const bool same = st.prefix[0] == st.prefix[1];
      std::fill(total.begin(), total.end(), 0u);
      for (int64_t c = 0; c < cps; ++c) {
        const uint32_t* h = hist.data() + size_t(b * cps + c) * 2 * kSelectBins;
        for (int d = 0; d < (same ? 1 : 2) * kSelectBins; ++d) total[size_t(d)] += h[d];
      }
      if (pass == 0 && total[kNaNDigit] != 0) {
        st.nan = true;
        continue;
      }
      descend(total.data(), bits, &st.prefix[0], &st.rank[0]);
      descend(total.data() + (same ? 0 : kSelectBins), bits, &st.prefix[1], &st.rank[1]);
    }
  }
  for (int64_t b = 0; b < a.batch; ++b) {
    const SampleState& st = state[size_t(b)];
    a.thresholds[b] = st.nan ? std::numeric_limits<float>::quiet_NaN()
                             : threshold_from_order_stats(bits_as_float(st.prefix[0]), bits_as_float(st.prefix[1]),
                                                          a.frac, a.max_value);
  }
}

}  // namespace ge
