// The analytic engine on the CPU (docs/ENGINES.md, "Analytic engine" and "Certified sums"):
// each layer once, in file order, for models whose windows do not overlap.

#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "cpu/certified_layer.hpp"
#include "cpu/workspace.hpp"

namespace ttfs {
namespace cpu {

// A workspace that runs the analytic engine (memory: see Memory), forming hidden layers'
// potentials as `certify` says.
std::unique_ptr<Workspace> make_analytic_workspace(const Model& model, const std::vector<LayerPlan>& plans,
                                                   Memory& memory, Certify certify);

// TTFS_CERTIFY_STATS: what an analytic workspace's certified sums did so far, per layer.
const CertifiedCounts& certified_counts(const Workspace& analytic);

}  // namespace cpu
}  // namespace ttfs
