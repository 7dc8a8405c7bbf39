// Lets each op's bindings live in its own file (csrc/cpu/NAME_bind.cpp for genengine._C,
// csrc/cuda/NAME_bind.cpp for genengine._cuda) instead of one shared bindings file:
//
//   #include "common/bind_registry.h"
//   GE_BIND(attention) { m.def("decode_attention", &decode_attention, ge::nogil()); }
//
// Each binder registers itself during the module's static initialisation (which runs when the
// .so is loaded, before PYBIND11_MODULE's init function), and the module calls every binder in
// name order. Each extension module is its own .so with hidden visibility, so _C and _cuda keep
// separate registries.
#pragma once

#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace ge {

using Binder = void (*)(pybind11::module_&);

inline std::vector<std::pair<std::string, Binder>>& binders() {
  static std::vector<std::pair<std::string, Binder>> list;
  return list;
}

inline int register_binder(const char* name, Binder fn) {
  binders().emplace_back(name, fn);
  return 0;
}

inline void run_binders(pybind11::module_& m) {
  auto list = binders();
  std::sort(list.begin(), list.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [name, fn] : list) fn(m);
}

inline auto nogil() { return pybind11::call_guard<pybind11::gil_scoped_release>(); }

}  // namespace ge

#define GE_BIND(NAME)                                                                  \
  static void ge_bind_##NAME(pybind11::module_& m);                                    \
  [[maybe_unused]] static const int ge_bind_registered_##NAME =                        \
      ge::register_binder(#NAME, &ge_bind_##NAME);                                     \
  static void ge_bind_##NAME([[maybe_unused]] pybind11::module_& m)
