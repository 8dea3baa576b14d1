// The analytic engine on the CPU (docs/ENGINES.md, "Analytic engine" and "Certified sums"):
// each layer once, in file order, for models whose windows do not overlap.

#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "cpu/workspace.hpp"

namespace ttfs {
namespace cpu {

// A workspace that runs the analytic engine (memory: see Memory), forming hidden layers'
// potentials as `certify` says.
std::unique_ptr<Workspace> make_analytic_workspace(const Model& model, const std::vector<LayerPlan>& plans,
                                                   Memory& memory, Certify certify);

// TTFS_CERTIFY_STATS: per layer, the neurons an analytic workspace has decided by certified
// sums so far, and those it recomputed exactly.
const std::vector<int64_t>& certified_checked(const Workspace& analytic);
const std::vector<int64_t>& certified_recomputed(const Workspace& analytic);
const std::vector<int64_t>& certified_bound_checked(const Workspace& analytic);
const std::vector<int64_t>& certified_bound_violated(const Workspace& analytic);

}  // namespace cpu
}  // namespace ttfs
