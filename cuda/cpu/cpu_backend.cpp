// CPU backend: the stepped and analytic engines of docs/ENGINES.md, threaded over the batch.
//
// Every float operation that decides a spike goes through cuda/ttfs_math.h and the tables of
// ttfs::Layer, in the order docs/ENGINES.md fixes, so the two engines give the same bits. Each
// image is computed by one thread from start to end, so results do not depend on the thread
// count or on which thread took which image.
//
// Both engines are event driven and share their exact arithmetic kernels: a step's
// presynaptic spikes are scattered forward into the synaptic sums of the neurons they feed,
// and only the neurons that received something integrate at that step (V + 0 * k == V for the
// others). The stepped engine does that at every step and checks thresholds at every step. The
// analytic engine takes each layer once: the output layer (and any layer with TTFS_CERTIFY=off)
// with the same exact kernels at the steps where spikes arrive; hidden conv2d/dense layers by
// certified sums (docs/ENGINES.md): fast dense sums with a rigorous error bound, a fire step
// read off each interval, exact potentials only where an interval cannot decide, and an
// `earliest` pool after such a layer decided from its children's intervals.
// docs/BENCHMARKS.md has the measured speed and where the time goes.
//
// This file: the backend itself (sessions' plans and per-thread workspaces, a batch spread
// over worker threads, TTFS_CERTIFY_STATS) and its entry points in backend.hpp. The units it
// puts together, each in cuda/cpu/: plan (layer plans, costs), exact_kernels and
// certified_kernels (+ _avx512), workspace, stepped_engine, analytic_engine, outputs.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "backend.hpp"
#include "cpu/analytic_engine.hpp"
#include "cpu/outputs.hpp"
#include "cpu/plan.hpp"
#include "cpu/stepped_engine.hpp"

namespace ttfs {
namespace cpu {
namespace {

class CpuBackend final : public Backend {
public:
    CpuBackend(std::shared_ptr<const Model> model, ttfs_engine engine, Certify certify, bool report,
               int32_t max_workers)
        : model_(std::move(model)), engine_(engine), certify_(certify), report_(report),
          max_workers_(std::max(1, max_workers)), plans_(make_plans(*model_, engine, certify)) {}

    // TTFS_CERTIFY_STATS: how many neurons the certified sums decided and how many were
    // recomputed exactly, per layer, on stderr (for tests and for tuning; docs/ENGINES.md).
    ~CpuBackend() override {
        if (!report_ || engine_ != TTFS_ENGINE_ANALYTIC) return;
        for (size_t li = 0; li < model_->layers.size(); ++li) {
            if (!plans_[li].certified) continue;
            int64_t checked = 0, recomputed = 0, nonzero_only = 0, bound_checked = 0, bound_violated = 0;
            for (const auto& ws : workspaces_) {
                const CertifiedCounts& counts = certified_counts(*ws);
                checked += counts.checked[li];
                recomputed += counts.recomputed[li];
                nonzero_only += counts.nonzero_only[li];
                bound_checked += counts.bound_checked[li];
                bound_violated += counts.bound_violated[li];
            }
            std::fprintf(stderr,
                         "ttfs certified sums: layer %s: %lld neurons, %lld recomputed exactly, "
                         "%lld images summed over nonzero activations only",
                         model_->layers[li].name.c_str(), static_cast<long long>(checked),
                         static_cast<long long>(recomputed), static_cast<long long>(nonzero_only));
            if (certify_ == Certify::kCheck)
                std::fprintf(stderr, ", bound checked on %lld, violated by %lld",
                             static_cast<long long>(bound_checked), static_cast<long long>(bound_violated));
            std::fputc('\n', stderr);
        }
    }

    // Workspaces are created here for the default thread count, and later only if the thread
    // count grows; a run never allocates per image or per neuron.
    void prepare(int32_t workers) {
        Memory memory(false);
        while (int32_t(workspaces_.size()) < workers) {
            if (engine_ == TTFS_ENGINE_ANALYTIC)
                workspaces_.push_back(make_analytic_workspace(*model_, plans_, memory, certify_));
            else
                workspaces_.push_back(make_stepped_workspace(*model_, plans_, memory));
        }
    }

    // Worker threads for a batch of n: the requested count (default: one per hardware
    // thread), never more than n images or than the memory budget has workspaces for.
    int32_t workers_for(int32_t n) const {
        int32_t threads = requested_threads_;
        if (threads <= 0) threads = default_threads();
        return std::max(1, std::min({threads, n, max_workers_}));
    }
    static int32_t default_threads() { return int32_t(std::max(1u, std::thread::hardware_concurrency())); }

    void set_threads(int32_t threads) override { requested_threads_ = std::max(0, threads); }

    ttfs_status run(const float* images, int32_t n, const RunOutputs& out, std::string& error) override {
        try {
            const int32_t workers = workers_for(n);
            prepare(workers);
            const size_t input_size = size_t(model_->input().out.size());
            std::atomic<int32_t> next_image{0};
            std::mutex failure_lock;
            std::string failure;
            // Images go to whichever worker is free; each image is computed by one worker
            // alone, so the results are the same for any thread count.
            bool recording = false;
            for (const int32_t* times : out.spike_times) recording = recording || times != nullptr;
            const size_t trace_size = out.trace_steps.size() * size_t(model_->num_classes());
            auto work = [&](Workspace& ws) noexcept {
                try {
                    ws.set_recording(recording);
                    for (int32_t i = next_image.fetch_add(1); i < n; i = next_image.fetch_add(1)) {
                        ws.set_trace(out.trace_steps, out.output_trace == nullptr
                                                          ? nullptr
                                                          : out.output_trace + size_t(i) * trace_size);
                        ws.run_image(images + size_t(i) * input_size);
                        const int32_t bad = write_image_outputs(*model_, ws, i, out);
                        if (bad >= 0)
                            throw std::runtime_error(
                                "image " + std::to_string(i) + ": the output potential of class " +
                                std::to_string(bad) + " is " +
                                std::to_string(ws.output_membrane()[size_t(bad)]) +
                                ", not a finite number, although the model passed the loader's "
                                "potential bound (docs/FORMAT.md); please report the model");
                    }
                } catch (const std::exception& e) {
                    std::lock_guard<std::mutex> hold(failure_lock);
                    failure = std::string("CPU worker failed: ") + e.what();
                    next_image.store(n);  // stop the other workers too
                } catch (...) {
                    std::lock_guard<std::mutex> hold(failure_lock);
                    failure = "CPU worker failed with an unknown exception";
                    next_image.store(n);
                }
            };
            std::vector<std::thread> helpers;
            helpers.reserve(size_t(workers - 1));
            for (int32_t k = 1; k < workers; ++k) {
                try {
                    helpers.emplace_back(work, std::ref(*workspaces_[size_t(k)]));
                } catch (const std::system_error&) {
                    break;  // no more threads available: the workers already started share the batch
                }
            }
            work(*workspaces_[0]);
            for (std::thread& helper : helpers) helper.join();
            if (!failure.empty()) {
                error = failure;
                return TTFS_ERR_INTERNAL;
            }
            return TTFS_OK;
        } catch (const std::bad_alloc&) {
            error = "out of memory allocating CPU workspaces for " + std::to_string(n) + " images";
            return TTFS_ERR_OUT_OF_MEMORY;
        } catch (const std::length_error&) {
            error = "the model's CPU workspaces are larger than this machine can allocate";
            return TTFS_ERR_OUT_OF_MEMORY;
        } catch (const std::exception& e) {
            error = std::string("CPU backend failed: ") + e.what();
            return TTFS_ERR_INTERNAL;
        }
    }

private:
    std::shared_ptr<const Model> model_;
    ttfs_engine engine_;
    Certify certify_;
    bool report_;
    int32_t max_workers_;
    std::vector<LayerPlan> plans_;  // read by every worker, never written after construction
    int32_t requested_threads_ = 0;
    std::vector<std::unique_ptr<Workspace>> workspaces_;  // one per worker thread
};

}  // namespace
}  // namespace cpu

using namespace cpu;

ttfs_status cpu_backend_requirements(const Model& model, ttfs_engine engine, int32_t max_batch,
                                     Requirements& out, std::string& error) {
    try {
        Certify certify = Certify::kOn;
        const ttfs_status status = certify_mode(certify, error);
        if (status != TTFS_OK) return status;
        // The plans and one workspace, built counting: sizes only, nothing allocated.
        Memory shared(true), worker(true);
        const std::vector<LayerPlan> plans = plan_model(model, engine, certify, shared);
        if (engine == TTFS_ENGINE_ANALYTIC)
            make_analytic_workspace(model, plans, worker, certify);
        else
            make_stepped_workspace(model, plans, worker);
        out.shared_bytes = shared.bytes();
        out.per_worker_bytes = worker.bytes();
        out.work_per_image = work_per_image(model, plans, engine);
        out.workers = std::max(1, std::min(int32_t(std::max(1u, std::thread::hardware_concurrency())),
                                           max_batch));
        return TTFS_OK;
    } catch (const std::bad_alloc&) {
        error = "out of memory while sizing the CPU backend";
        return TTFS_ERR_OUT_OF_MEMORY;
    } catch (const std::exception& e) {
        error = std::string("CPU backend: ") + e.what();
        return TTFS_ERR_INTERNAL;
    }
}

ttfs_status make_cpu_backend(std::shared_ptr<const Model> model, ttfs_engine engine,
                             int32_t max_batch, int32_t max_workers, std::unique_ptr<Backend>& out,
                             std::string& error) {
    if (!model || model->layers.size() < 2) {
        error = "CPU backend: expected a model with at least an input and an output layer";
        return TTFS_ERR_INVALID_ARGUMENT;
    }
    if (engine != TTFS_ENGINE_STEPPED && engine != TTFS_ENGINE_ANALYTIC) {
        error = "CPU backend: engine " + std::to_string(int(engine)) +
                " is not TTFS_ENGINE_STEPPED (0) or TTFS_ENGINE_ANALYTIC (1)";
        return TTFS_ERR_INVALID_ARGUMENT;
    }
    if (max_batch < 1) {
        error = "CPU backend: max_batch is " + std::to_string(max_batch) + ", expected >= 1";
        return TTFS_ERR_INVALID_ARGUMENT;
    }
    // The caller checks this too; repeated here because the closed form is simply wrong on
    // overlapping windows, and a wrong answer is worse than a refusal.
    std::string why;
    if (engine == TTFS_ENGINE_ANALYTIC && !windows_allow_analytic(*model, why)) {
        error = why;
        return TTFS_ERR_UNSUPPORTED;
    }
    Certify certify = Certify::kOn;
    const ttfs_status mode = certify_mode(certify, error);
    if (mode != TTFS_OK) return mode;
    const char* stats = std::getenv("TTFS_CERTIFY_STATS");
    const bool report = stats != nullptr && *stats != '\0' && std::string(stats) != "0";
    try {
        auto backend = std::make_unique<CpuBackend>(std::move(model), engine, certify, report, max_workers);
        backend->prepare(backend->workers_for(max_batch));
        out = std::move(backend);
        return TTFS_OK;
    } catch (const std::bad_alloc&) {
        error = "out of memory allocating the CPU backend's workspaces";
        return TTFS_ERR_OUT_OF_MEMORY;
    } catch (const std::length_error&) {
        error = "the model's CPU workspaces are larger than this machine can allocate";
        return TTFS_ERR_OUT_OF_MEMORY;
    } catch (const std::exception& e) {
        error = std::string("CPU backend: ") + e.what();
        return TTFS_ERR_INTERNAL;
    }
}

}  // namespace ttfs
