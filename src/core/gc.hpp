// Garbage collection of forky's pool. A volume is live when a domain uses it (a disk, a
// console log, the memory image of its fork point), when a live volume is backed by it,
// or while a running forky operation has journalled it. Everything else that forky
// named is garbage: frozen layers and memory images whose last dependant went, and what
// a killed operation left (its journal says what; its half-made children go too).
#pragma once

#include "host.hpp"
#include "lineage.hpp"
#include "vm_lock.hpp"

#include <optional>
#include <string>
#include <vector>

namespace forky {

struct GcOptions {
    bool dry_run = false;
    // Undo operations whose process is gone: remove the children their journals name.
    bool undo_dead_operations = true;
};

struct GcResult {
    std::vector<std::string> removed_domains; // half-made children of dead operations
    std::vector<std::string> resumed_domains; // parents a killed cold fork left paused
    // GPUs a killed fork left detached from its parent, attached again: "VM: 0000:65:00.0"
    std::vector<std::string> reattached_gpus;
    std::vector<std::string> removed_mdevs;   // mediated devices a dead operation made
    std::vector<std::string> deleted_volumes; // by this run (not by a concurrent one)
    std::vector<std::string> released_locks;  // journals of dead operations
    std::vector<std::string> busy;            // live operations left alone
    std::vector<std::string> refused;         // journals not acted on, and why
    std::vector<std::string> problems;        // lineage and pool contradicting each other
};

GcResult collect_garbage(Host& host, const GcOptions& options = {});

// Why gc may not remove domain `name`, which the journal of a dead operation names
// (nullopt when it may): only a domain that carries forky's lineage for that very
// operation goes: made in `pool` by that operation (its id in the lineage), by `forky up`
// of that name or as a child of the journal's VM, created after the operation started.
std::optional<std::string> journal_child_problem(const Journal& journal, const std::string& name,
                                                 const std::optional<Lineage>& lineage,
                                                 const std::string& pool);

} // namespace forky
