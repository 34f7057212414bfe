// The fork: a running VM becomes N children that carry on from its memory and disk.
//
//   1. Freeze a fork point: an external memory + disk snapshot (LIVE for a hot fork,
//      ATOMIC, NO_METADATA, REUSE_EXT into volumes forky made through the pool API).
//      The parent moves onto new top layers and keeps running; its old top layers become
//      the fork point's frozen layers, consistent with the memory image.
//   2. Per child: its own qcow2 top layer backed by each frozen layer, and a console log.
//   3. Per child, one after another under the parent's lock: the memory image's header is
//      set to the child's XML (name, UUID, disks, console, lineage) and the child is
//      restored from it, then defined so it is persistent. The migration stream (O(RAM))
//      is written once per fork point and never copied.
// All of it is one transaction: a failure leaves no child, overlay or memory image, and
// the parent running on an intact chain.
#pragma once

#include "host.hpp"

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace forky {

inline constexpr unsigned max_fork_count = 256;

struct ForkOptions {
    unsigned count = 1;
    bool cold = false;        // pause the parent for the cut instead of a live snapshot
    bool keep_paused = false; // cold: leave the parent paused afterwards
    bool children_paused = false;
    std::string prefix; // child names PREFIX-N; default the parent's name
    std::chrono::milliseconds lock_wait = std::chrono::seconds(120);
    std::function<bool()> cancelled; // checked between steps (Ctrl-C)
};

struct ForkResult {
    std::string parent;
    std::string fork_point;
    std::vector<std::string> children;
    std::optional<std::uint64_t> parent_downtime_ms; // as QEMU reports it for the snapshot
    double snapshot_ms = 0;                          // freezing the fork point
    double children_ms = 0;                          // overlays + restores of all children
    double total_ms = 0;
    std::uint64_t memory_image_bytes = 0;
};

ForkResult vm_fork(Host& host, const std::string& parent, const ForkOptions& options);

// Test seam: FORKY_FAULT=<step>[:<n>] makes the step fail (n: only for the n-th child,
// 1-based) and FORKY_FAULT_SLEEP=<step>[:<n>] makes forky sleep there for 60 s, so tests
// can kill it mid-way. Steps: lock, memory-volume, parent-overlay, snapshot,
// parent-metadata, child-overlay, child-console, header, restore, define, commit.
void fault_point(const char* step, unsigned index = 0);

} // namespace forky
