// genengine._C bindings of the VAE sampling step (csrc/cpu/latent.cpp); tensors cross as raw
// pointers, checked and made contiguous by genengine/ops/latent.py.
#include "common/bind_registry.h"
#include "cpu/latent.h"

GE_BIND(latent) { m.def("reparameterize_kl", &ge::reparameterize_kl, ge::nogil()); }
