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

#include "cancel.hpp"
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
    CancelToken cancel; // checked between steps and while waiting (Ctrl-C)
};

struct ForkResult {
    std::string parent;
    std::string fork_point;
    std::vector<std::string> children;
    // How long the parent's vCPUs stood still: QEMU's downtime for a hot fork's switch-over;
    // for a cold fork, from the pause to the resume. Unset when the parent stays paused.
    std::optional<std::uint64_t> parent_downtime_ms;
    bool parent_left_paused = false; // --cold --keep-paused
    double snapshot_ms = 0;          // freezing the fork point
    double children_ms = 0;          // overlays + restores of all children
    double total_ms = 0;
    std::uint64_t memory_image_bytes = 0;
};

// The children's names are reserved before anything else is made: each by its own lock
// (a volume '<child>.lock'), held until the child is whole, so a concurrent fork with
// the same prefix picks other names and `forky rm` of a child that is still being made
// waits for it. A child is defined (made persistent) only once forky has seen its
// restore succeed under the UUID it chose.
ForkResult vm_fork(Host& host, const std::string& parent, const ForkOptions& options);

} // namespace forky
