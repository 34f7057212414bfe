// forky bench: fork against cold boot of the same guest, measured side by side in one run
// on one host. Figures, not verdicts: the machine may be shared and noisy.
#pragma once

#include "host.hpp"
#include "operation.hpp"
#include "spec.hpp"

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace forky {

struct BenchOptions {
    std::string name = "forky-bench"; // the parent; children are NAME-N
    std::vector<unsigned> counts{1, 4, 8};
    std::function<void(const std::string&)> progress; // one line per step
    std::vector<std::filesystem::path> image_dirs;    // as UpOptions::image_dirs
    OpContext ctx;
};

struct BenchRound {
    unsigned count = 0;
    double fork_ms = 0;              // forky fork until every child runs
    double first_child_print_ms = 0; // fork start until child 1 prints a tick
    double snapshot_ms = 0;          // freezing the fork point (parent side)
    std::optional<std::uint64_t> parent_downtime_ms;
    std::uint64_t memory_image_bytes = 0;     // written once per fork point
    std::uint64_t child_disk_bytes = 0;       // per child: its volumes' allocation
    std::uint64_t header_bytes_per_child = 0; // the memory image's header, rewritten per child
    std::uint64_t children_rss_bytes = 0;     // all children together
};

struct BenchReport {
    std::string domain_type;
    std::uint64_t memory_bytes = 0;
    unsigned vcpus = 0;
    double cold_boot_ms = 0; // forky up until the boot line is on the console
    std::uint64_t parent_rss_bytes = 0;
    std::vector<BenchRound> rounds;
    // History: a named snapshot, a fork from it once stored, a revert to it.
    double snapshot_ms = 0;                          // forky snapshot, start to end
    std::optional<std::uint64_t> snapshot_paused_ms; // the VM's pause during it
    double fork_from_snapshot_ms = 0;                // fork VM@SNAP until the child prints
    double revert_ms = 0;                            // forky revert until the VM prints again
};

// Boots spec as options.name, forks it for each count (removing the children between
// rounds), then snapshots it, forks from the stored snapshot and reverts to it; removes
// everything at the end, also on failure.
BenchReport run_bench(Host& host, const DomainSpec& spec, const BenchOptions& options);

} // namespace forky
