// The VAE's sampling step (reparameterisation + KL) on the CPU: csrc/cpu/latent.cpp.
#pragma once
#include <cstdint>

namespace ge {

// mu, logvar (rows, cols) float32; z (rows, cols) or 0; kl (rows,) or 0; noise keyed by (seed, offset)
void reparameterize_kl(int64_t rows, int64_t cols, uintptr_t mu, uintptr_t logvar, uintptr_t z, uintptr_t kl,
                       uint64_t seed, uint64_t offset);

}  // namespace ge
