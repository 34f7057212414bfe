// Test seam: faults injected at named steps of an operation, so tests can make any step
// fail, or hold an operation there while they kill it, interrupt it or act behind its
// back. The CLI and forkyd fill it (faults_from_environment) from FORKY_FAULT=<step>[:<n>] (fail),
// FORKY_FAULT_SLEEP=<step>[:<n>] (sleep FORKY_FAULT_SLEEP_S seconds, default 60; n: only for the
// n-th child, 1-based); the core never reads the environment. Steps of a fork: lock, memory-volume,
// parent-overlay, snapshot, parent-metadata, child-overlay, child-console, header, restore, define,
// commit. With GPUs: gpus-detached (a fork's, after the parent's GPUs were detached), child-gpus
// (after child n got its GPUs). Of an up: up-gpus, up-volumes, up-define, up-start. Of a revert:
// revert-snapshot, revert-overlay, revert-stop, revert-restore, commit. Of a squash: squash-pull,
// commit.
#pragma once

#include "cancel.hpp"

#include <chrono>
#include <string>

namespace forky {

struct Faults {
    std::string fail;  // "step" or "step:n"
    std::string sleep; // "step" or "step:n"
    std::chrono::seconds sleep_for{60};

    // Sleeps (cancellably) and/or throws Error "Injected fault at step '...'" when asked to
    // at this step.
    void at(const char* step, unsigned index, const CancelToken& cancel) const;
};

// FORKY_FAULT, FORKY_FAULT_SLEEP and FORKY_FAULT_SLEEP_S, for the front ends to pass on.
Faults faults_from_environment();

} // namespace forky
