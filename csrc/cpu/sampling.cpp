// Fused token sampling on the CPU: temperature, top-k, top-p, min-p and an inverse-CDF draw over
// each row of logits [batch, vocab], without sorting the vocabulary.
//
// One task per row (rows run in parallel). Per row, with z = x * (1 / T) in float32:
//   pass 1   z into a per-thread scratch row, its maximum m, NaN detection (vectorised)
//   top-k    radix select of the k-th largest z on a monotone uint32 key of z: a 2048-bin count
//            histogram of the key's top 11 bits over the row, then the bin that holds rank k is
//            gathered (usually a small fraction of the row) and resolved on the gathered
//            candidates with two more digits (11 and 10 bits)
//   top-p    the same radix descent on weights e = exp(z - m) instead of counts, restricted to the
//            keys the top-k threshold kept: the threshold is the largest key whose kept weight at
//            or above it reaches top_p * (kept total)
//   draw     one pass writing nothing: per 1024-element block the kept weight (key >= threshold,
//            z - m >= log(min_p)), then u * S locates the block and a scalar walk the token
// Ties are decided on the key, i.e. on the float32 value of z (-0 counted as +0): every token equal
// to a threshold value is kept. The weights come from a fixed polynomial exp (no libm call, so the
// loops vectorise in the baseline and AVX2 clones alike); histograms and totals accumulate in double.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu_common.h"
#include "parallel.h"
#include "sampling.h"

namespace ge {
namespace {

constexpr int kLanes = 16;         // independent accumulators, so the reductions vectorise
constexpr int kScanBlock = 1024;   // elements per block of the draw's block sums
constexpr int kHistBatch = 256;    // weights computed per vectorised batch before the scatter

// Monotone in z: a larger float gives a larger unsigned key; -0 maps to the key of +0.
// (Selects are spelled with bit masks: GCC keeps a float ?: as control flow under -ftrapping-math,
// which stops the loops from vectorising.)
inline uint32_t mask_of(bool c) { return 0u - uint32_t(c); }
inline float select(bool c, float a, float b) {
  const uint32_t m = mask_of(c);
  return bits_as_float((float_as_bits(a) & m) | (float_as_bits(b) & ~m));
}

inline uint32_t sort_key(float z) {
  const uint32_t b = float_as_bits(z) & ~mask_of(z == 0.0f);
  return b ^ (uint32_t(int32_t(b) >> 31) | 0x80000000u);
}

// exp(x) for x <= 0 (and -inf): Cody-Waite reduction x = n ln2 + r, a degree-6 polynomial on
// |r| <= ln2 / 2 (Cephes' expf coefficients), then 2^n from the exponent bits. Flushes to 0 below
// -87.3 (a weight under 1e-38 of the maximum's). Relative error about 2e-7.
inline float exp_nonpos(float x) {
  const bool under = !(x > -87.3f);  // -inf too
  x = select(under, -87.3f, x);
  const float t = x * 1.44269504088896341f + 12582912.0f;  // round to nearest via the 1.5 * 2^23 shift
  const float n = t - 12582912.0f;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t ni = int32_t(n);  // in [-126, 0]
  const float scale = bits_as_float(uint32_t(ni + 127) << 23);
  return bits_as_float(float_as_bits(y * scale) & ~mask_of(under));
}

// z = x * inv_t into z[0, n), its maximum and whether any z is NaN.
template <typename T>
inline __attribute__((always_inline)) void load_scaled_impl(const T* __restrict x, int64_t n, float inv_t,
                                                            float* __restrict z, float* mx_out, bool* nan_out) {
  float mx[kLanes];
  int32_t nan[kLanes];
  for (int j = 0; j < kLanes; ++j) { mx[j] = -std::numeric_limits<float>::infinity(); nan[j] = 0; }
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float v = to_float(x[i + j]) * inv_t;
      z[i + j] = v;
      mx[j] = select(v > mx[j], v, mx[j]);
      nan[j] |= int32_t(v != v);
    }
  }
  float m = -std::numeric_limits<float>::infinity();
  int32_t any = 0;
  for (; i < n; ++i) {
    const float v = to_float(x[i]) * inv_t;
    z[i] = v;
    m = v > m ? v : m;
    any |= v != v ? 1 : 0;
  }
  for (int j = 0; j < kLanes; ++j) { m = mx[j] > m ? mx[j] : m; any |= nan[j]; }
  *mx_out = m;
  *nan_out = any != 0;
}

GE_MULTIVERSIONED((void load_scaled_f32(const float* x, int64_t n, float inv_t, float* z, float* mx, bool* nan)),
                  { load_scaled_impl<float>(x, n, inv_t, z, mx, nan); })
GE_MULTIVERSIONED((void load_scaled_bf16(const BF16* x, int64_t n, float inv_t, float* z, float* mx, bool* nan)),
                  { load_scaled_impl<BF16>(x, n, inv_t, z, mx, nan); })
GE_MULTIVERSIONED((void load_scaled_f16(const F16* x, int64_t n, float inv_t, float* z, float* mx, bool* nan)),
                  { load_scaled_impl<F16>(x, n, inv_t, z, mx, nan); })

// Kept weights of z[0, n): w = exp(z - m) where key(z) >= tau and z - m >= lmp, else 0; STORE writes
// them to w; returns their sum (float lanes within the call, the caller sums calls in double).
template <bool STORE>
inline __attribute__((always_inline)) float kept_weights_impl(const float* __restrict z, int n, float m, uint32_t tau,
                                                              float lmp, float* __restrict w) {
  float acc[kLanes];
  for (int j = 0; j < kLanes; ++j) acc[j] = 0.0f;
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float zz = z[i + j];
      const float d = zz - m;
      const bool keep = (sort_key(zz) >= tau) & (d >= lmp);
      const float e = exp_nonpos(d);
      const float v = bits_as_float(float_as_bits(e) & mask_of(keep));
      acc[j] += v;
      if (STORE) w[i + j] = v;
    }
  }
  float s = 0.0f;
  for (; i < n; ++i) {
    const float d = z[i] - m;
    const float v = ((sort_key(z[i]) >= tau) & (d >= lmp)) ? exp_nonpos(d) : 0.0f;
    s += v;
    if (STORE) w[i] = v;
  }
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}

GE_MULTIVERSIONED((float kept_weights(const float* z, int n, float m, uint32_t tau, float lmp, float* w)), {
  return w ? kept_weights_impl<true>(z, n, m, tau, lmp, w) : kept_weights_impl<false>(z, n, m, tau, lmp, w);
})

// Keys of z[0, n) into k (vectorised).
GE_MULTIVERSIONED((void keys_of(const float* __restrict z, int64_t n, uint32_t* __restrict k)), {
  for (int64_t i = 0; i < n; ++i) k[i] = sort_key(z[i]);
})

// The digit d (largest first) whose bin, added to the weight of the bins above it, reaches `target`,
// skipping empty bins; *acc gains the weight of the bins above d. When rounding leaves every bin
// short, the lowest non-empty bin (keep everything that is left).
int descend(const double* mass, const uint32_t* count, int bins, double target, double* acc) {
  int lowest = -1;
  double a = *acc;
  for (int d = bins - 1; d >= 0; --d) {
    if (count[d] == 0) continue;
    if (a + mass[d] >= target) {
      *acc = a;
      return d;
    }
    a += mass[d];
    lowest = d;
  }
  // every bin fell short: restart the sum to give the lowest bin its "above" weight
  a = *acc;
  for (int d = bins - 1; d > lowest; --d) a += count[d] ? mass[d] : 0.0;
  *acc = a;
  return lowest < 0 ? 0 : lowest;
}

struct Scratch {
  std::vector<float> z;         // the scaled row
  std::vector<uint32_t> ck;     // candidate keys
  std::vector<float> cw;        // candidate weights
  std::vector<uint32_t> keys;   // a batch of keys
  std::vector<double> blocks;   // block sums of the draw
  std::vector<uint32_t> count;  // 4 interleaved 2048-bin count histograms
  std::vector<double> mass;     // 2048-bin weight histogram
  std::vector<double> mass4;    // 4 interleaved 2048-bin weight histograms
};

thread_local Scratch t_scratch;

// Largest key t such that the weight of {key >= t} among the (already gathered) candidates of
// prefix `p0` (top 11 bits) reaches target; acc: the weight above those candidates. Candidates are
// filtered in place. cw null means unit weights.
uint32_t refine(Scratch& s, int64_t n, uint32_t p0, double target, double acc, bool unit, double* at_or_above) {
  uint32_t* ck = s.ck.data();
  float* cw = s.cw.data();
  uint32_t prefix = p0;
  const int bits[2] = {11, 10};
  const int shift[2] = {10, 0};
  for (int level = 0; level < 2; ++level) {
    const int bins = 1 << bits[level];
    std::fill(s.count.begin(), s.count.begin() + bins, 0u);
    std::fill(s.mass.begin(), s.mass.begin() + bins, 0.0);
    const uint32_t mask = uint32_t(bins - 1);
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t d = (ck[i] >> shift[level]) & mask;
      s.count[d] += 1;
      s.mass[d] += unit ? 1.0 : double(cw[i]);
    }
    const int d = descend(s.mass.data(), s.count.data(), bins, target, &acc);
    if (level == 0) {
      int64_t m = 0;
      for (int64_t i = 0; i < n; ++i) {
        if (((ck[i] >> shift[0]) & mask) == uint32_t(d)) {
          ck[m] = ck[i];
          if (!unit) cw[m] = cw[i];
          ++m;
        }
      }
      n = m;
    } else {
      *at_or_above = acc + s.mass[d];
    }
    prefix = (prefix << bits[level]) | uint32_t(d);
  }
  return prefix;
}

struct RowParams {
  float t, p, lmp;
  int64_t k;
};

void sample_row(const SampleArgs& a, int64_t b) {
  Scratch& s = t_scratch;
  const int64_t V = a.vocab;
  if (int64_t(s.z.size()) < V) {
    s.z.resize(size_t(V));
    s.ck.resize(size_t(V));
    s.cw.resize(size_t(V));
  }
  if (s.count.empty()) {
    s.count.resize(4 * 2048);
    s.mass.resize(2048);
    s.mass4.resize(4 * 2048);
    s.keys.resize(kHistBatch);
  }
  RowParams rp;
  rp.t = a.temperature ? a.temperature[b] : a.temperature_s;
  rp.k = a.top_k ? a.top_k[b] : a.top_k_s;
  rp.p = a.top_p ? a.top_p[b] : a.top_p_s;
  rp.lmp = a.log_min_p ? a.log_min_p[b] : a.log_min_p_s;
  // a row with t > 0 whose z has no finite maximum though its logits are finite is greedy (the
  // t -> 0 limit): 1 / t overflowed float32 (t < ~2.9e-39), or z did (large logits); a +inf logit
  // still leaves a sampled row without a distribution
  bool greedy = !(rp.t > 0.0f);
  float inv_t = greedy ? 1.0f : 1.0f / rp.t;
  const float inf = std::numeric_limits<float>::infinity();
  bool tiny = inv_t == inf;
  if (tiny) inv_t = 1.0f;
  float* z = s.z.data();
  float m;
  bool nan;
  const int esize = a.dtype == kFloat32 ? 4 : 2;
  const char* row = static_cast<const char*>(a.logits) + b * a.row_stride * esize;
  auto load = [&](float scale) {
    switch (a.dtype) {
      case kFloat32: load_scaled_f32(reinterpret_cast<const float*>(row), V, scale, z, &m, &nan); break;
      case kBFloat16: load_scaled_bf16(reinterpret_cast<const BF16*>(row), V, scale, z, &m, &nan); break;
      default: load_scaled_f16(reinterpret_cast<const F16*>(row), V, scale, z, &m, &nan); break;
    }
  };
  load(inv_t);
  if (!greedy && !tiny && !nan && (m == inf || m == -inf)) {
    load(1.0f);  // the logits themselves
    tiny = true;
  }
  if (tiny) greedy = m != inf;
  const bool invalid = nan || m == -inf || (!greedy && m == inf);
  if (invalid) {
    a.tokens[b] = -1;
    if (a.logprobs) a.logprobs[b] = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  int64_t argmax = 0;
  while (z[argmax] != m) ++argmax;  // the maximum is present (no NaN)
  if (greedy) {
    a.tokens[b] = argmax;
    if (a.logprobs) a.logprobs[b] = 0.0f;
    return;
  }
  uint32_t* cnt = s.count.data();
  double* mass = s.mass.data();
  uint32_t* keys = s.keys.data();

  // top-k: the key of the k-th largest z
  uint32_t floor_key = 0;
  if (rp.k > 0 && rp.k < V) {
    std::memset(cnt, 0, sizeof(uint32_t) * 4 * 2048);
    for (int64_t i0 = 0; i0 < V; i0 += kHistBatch) {
      const int len = int(std::min<int64_t>(kHistBatch, V - i0));
      keys_of(z + i0, len, keys);
      int j = 0;
      for (; j + 4 <= len; j += 4) {  // four histograms: runs of equal digits do not serialise
        ++cnt[keys[j] >> 21];
        ++cnt[2048 + (keys[j + 1] >> 21)];
        ++cnt[4096 + (keys[j + 2] >> 21)];
        ++cnt[6144 + (keys[j + 3] >> 21)];
      }
      for (; j < len; ++j) ++cnt[keys[j] >> 21];
    }
    for (int d = 0; d < 2048; ++d) {
      cnt[d] += cnt[2048 + d] + cnt[4096 + d] + cnt[6144 + d];
      mass[d] = double(cnt[d]);
    }
    double acc = 0.0;
    const int d0 = descend(mass, cnt, 2048, double(rp.k), &acc);
    int64_t n = 0;
    for (int64_t i = 0; i < V; ++i) {
      const uint32_t key = sort_key(z[i]);
      if ((key >> 21) == uint32_t(d0)) s.ck[size_t(n++)] = key;
    }
    double unused;
    floor_key = refine(s, n, uint32_t(d0), double(rp.k), acc, true, &unused);
  }

  // top-p: the nucleus threshold among the keys >= floor_key
  uint32_t tau = floor_key;
  if (rp.p < 1.0f) {
    // four interleaved weight histograms: neighbouring tokens often share a bin, and one chain of
    // dependent double adds would serialise on the store-to-load latency
    double* hm = s.mass4.data();
    std::fill(hm, hm + 4 * 2048, 0.0);
    alignas(64) float w[kHistBatch];
    for (int64_t i0 = 0; i0 < V; i0 += kHistBatch) {
      const int len = int(std::min<int64_t>(kHistBatch, V - i0));
      keys_of(z + i0, len, keys);
      kept_weights(z + i0, len, m, floor_key, -inf, w);  // 0 below floor_key
      int j = 0;
      for (; j + 4 <= len; j += 4) {
        hm[keys[j] >> 21] += double(w[j]);
        hm[2048 + (keys[j + 1] >> 21)] += double(w[j + 1]);
        hm[4096 + (keys[j + 2] >> 21)] += double(w[j + 2]);
        hm[6144 + (keys[j + 3] >> 21)] += double(w[j + 3]);
      }
      for (; j < len; ++j) hm[keys[j] >> 21] += double(w[j]);
    }
    double total = 0.0;
    for (int d = 0; d < 2048; ++d) {
      mass[d] = (hm[d] + hm[2048 + d]) + (hm[4096 + d] + hm[6144 + d]);
      cnt[d] = mass[d] > 0.0;  // a bin of zero weight holds nothing that can be drawn
      total += mass[d];
    }
    const double target = double(rp.p > 0.0f ? rp.p : 0.0f) * total;
    double acc = 0.0;
    const int d0 = descend(mass, cnt, 2048, target, &acc);
    int64_t n = 0;
    for (int64_t i0 = 0; i0 < V; i0 += kHistBatch) {
      const int len = int(std::min<int64_t>(kHistBatch, V - i0));
      keys_of(z + i0, len, keys);
      for (int j = 0; j < len; ++j) {  // few keys match: the branch is well predicted
        const uint32_t key = keys[j];
        if ((key >> 21) == uint32_t(d0) && key >= floor_key) {
          s.ck[size_t(n)] = key;
          s.cw[size_t(n)] = exp_nonpos(z[i0 + j] - m);
          ++n;
        }
      }
    }
    double unused;
    tau = std::max(tau, refine(s, n, uint32_t(d0), target, acc, false, &unused));
  }

  // the draw: block sums of the kept weights, then the token inside the block u * S falls into
  const float lmp = rp.lmp != rp.lmp ? -inf : std::min(rp.lmp, 0.0f);
  const int64_t n_blocks = (V + kScanBlock - 1) / kScanBlock;
  if (int64_t(s.blocks.size()) < n_blocks) s.blocks.resize(size_t(n_blocks));
  double total = 0.0;
  for (int64_t k = 0; k < n_blocks; ++k) {
    const int len = int(std::min<int64_t>(kScanBlock, V - k * kScanBlock));
    const double bs = double(kept_weights(z + k * kScanBlock, len, m, tau, lmp, nullptr));
    s.blocks[size_t(k)] = bs;
    total += bs;
  }
  uint32_t words[4];
  philox_block(make_philox_key(a.seed, a.offset), uint64_t(b) >> 1, words);
  const uint32_t w0 = words[(b & 1) * 2], w1 = words[(b & 1) * 2 + 1];
  const double u = (double((uint64_t(w0) << 21) | (w1 >> 11)) + 0.5) * 0x1p-53;
  const double target = u * total;
  int64_t token = -1;
  double cum = 0.0;
  for (int64_t k = 0; k < n_blocks && token < 0; ++k) {
    const double bs = s.blocks[size_t(k)];
    if (cum + bs > target) {
      const int64_t i0 = k * kScanBlock, i1 = std::min<int64_t>(V, i0 + kScanBlock);
      double c = cum;
      for (int64_t i = i0; i < i1; ++i) {
        const float d = z[i] - m;
        if (sort_key(z[i]) < tau || !(d >= lmp)) continue;
        const float e = exp_nonpos(d);
        c += double(e);
        if (c > target && e > 0.0f) {
          token = i;
          break;
        }
      }
    }
    cum += bs;
  }
  if (token < 0) token = argmax;  // u * S above the last cumulative weight by rounding: the maximum
  a.tokens[b] = token;
  if (a.logprobs) a.logprobs[b] = float(double(z[token] - m) - std::log(total));
}

}  // namespace

void sample_tokens(const SampleArgs& a) {
  if (a.batch <= 0 || a.vocab <= 0) return;
  // small batches run on the calling thread: waking the pool costs more than such rows take (and on a
  // loaded machine a descheduled worker can hold the caller for a whole time slice)
  if (a.batch * a.vocab < (int64_t(1) << 16)) {
    for (int64_t b = 0; b < a.batch; ++b) sample_row(a, b);
    return;
  }
  parallel_chunks(a.batch, [&](int64_t b) { sample_row(a, b); });
}

}  // namespace ge
