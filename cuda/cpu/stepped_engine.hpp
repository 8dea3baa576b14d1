// The stepped engine on the CPU (docs/ENGINES.md, "Stepped engine"): every layer advanced one
// time step at a time, in file order; any window layout.

#pragma once

#include <memory>
#include <vector>

#include "cpu/workspace.hpp"

namespace ttfs {
namespace cpu {

// A workspace that runs the stepped engine (memory: see Memory).
std::unique_ptr<Workspace> make_stepped_workspace(const Model& model, const std::vector<LayerPlan>& plans,
                                                  Memory& memory);

}  // namespace cpu
}  // namespace ttfs
