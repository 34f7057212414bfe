// The family of forky's VMs as one tree: each VM, its fork points and snapshots, the
// children spawned from each, and VMs that are gone but whose fork points were kept. Built
// from libvirt (domains and their lineage) and the pool (fork point records, volumes);
// where the two contradict each other (a layer missing, a record gone, a domain undefined
// behind forky's back), the tree says so instead of failing.
#pragma once

#include "fork_point.hpp"
#include "host.hpp"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace forky {

struct TreeNode {
    enum class Kind { vm, removed_vm, fork_point };
    Kind kind = Kind::vm;
    std::string id;     // a VM's UUID, or a fork point's id
    std::string name;   // a VM's name, or "VM@NAME"
    std::string parent; // the parent node's id; empty for a root
    std::string host;   // the host of the fleet it is on (empty: one host only)
    bool copy = false;  // a fork point's copy shipped to `host` (from another host)
    // VMs
    VmState state = VmState::unknown;
    unsigned generation = 0;
    // fork points
    ForkPoint::Kind point_kind = ForkPoint::Kind::fork;
    std::string created_at;
    std::uint64_t disk_bytes = 0; // a VM's own volumes; a fork point's image and layers
};

struct LineageTree {
    std::vector<TreeNode> nodes; // parents before their children
    std::vector<std::string> problems;
};

const char* to_string(TreeNode::Kind k);

// The whole family in this Host's pool, or the part under VM `root` (its name).
LineageTree lineage_tree(Host& host, const std::string& root = "");

// The family across the hosts of a fleet (name, host): a child on one host under the
// fork point on another; each node says its host. A host that does not answer is a
// problem line, not a failure.
LineageTree fleet_lineage_tree(const std::vector<std::pair<std::string, Host*>>& hosts,
                               const std::string& root = "");

} // namespace forky
