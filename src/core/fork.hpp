// The fork: a running VM, or a fork point of it kept from earlier (VM@SNAP), becomes N
// children that carry on from its memory and disk (engine.hpp: fork = freeze + spawn;
// fork VM@SNAP = spawn). All of it is one operation: a failure leaves no child, overlay or
// memory image, and the parent running, on an intact chain at most one layer longer.
#pragma once

#include "fork_point.hpp"
#include "gpus.hpp"
#include "operation.hpp"
#include "policies.hpp"

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace forky {

inline constexpr unsigned max_fork_count = 256;

// Children placed on a host of the fleet other than the parent's.
struct ForkTarget {
    Host* host = nullptr;
    std::string name; // the host's name in the inventory
    unsigned count = 0;
};

struct ForkOptions {
    unsigned count = 1;
    bool cold = false;        // pause the parent for the cut instead of a live snapshot
    bool keep_paused = false; // cold: leave the parent paused afterwards
    bool children_paused = false;
    std::string prefix; // child names PREFIX-N; default the parent's name
    std::string name;   // else the one child's own name (count 1)
    std::chrono::milliseconds lock_wait = std::chrono::seconds(120);
    OpContext ctx; // Ctrl-C and the test seam
    // Where the children go: the parent's host takes `count` minus those placed here.
    // Each other host gets the fork point shipped (once: a later fork finds it there),
    // its children spawned there under an operation (and locks) of its own; a failure on
    // any host undoes the fork on all of them.
    std::vector<ForkTarget> elsewhere;
    std::string host_name; // the parent's host's name in the inventory ("default": none)
    ProgressFn progress;   // shipping
    // Names of VMs on the fleet's other hosts: no child gets one (names are unique in the
    // fleet, so every command can find a VM by its name).
    std::set<std::string> names_elsewhere;
    // What each child gets in place of the parent's GPUs (policies/gpu.yaml). A parent with
    // GPUs forks only if its spec said `gpu_fork: detach`: cold, its GPUs detached for the
    // cut and attached again afterwards.
    GpuPolicy gpu_policy;
    // Reads the policy (instead of gpu_policy) only for a parent with GPUs, so a bad policy
    // file never stands in the way of other forks.
    std::function<GpuPolicy()> load_gpu_policy;
    // policies/quotas.yaml and the children's TTL (policies/ttl.yaml; a spec's own wins).
    QuotaPolicy quotas;
    std::optional<std::chrono::seconds> children_ttl;
    // Children made for warm pool `warm_pool` (forky pool): held ready, paused, and marked
    // so in their lineage until `forky acquire` hands one out.
    std::string warm_pool;
};

struct ForkResult {
    std::string parent;
    std::string fork_point; // "VM@NAME"
    std::vector<std::string> children;
    // How long the parent's vCPUs stood still: QEMU's downtime for a hot fork's switch-over;
    // for a cold fork, from the pause to the resume. Unset when the parent stays paused,
    // and for a fork from a stored fork point (the parent is not touched).
    std::optional<std::uint64_t> parent_downtime_ms;
    bool parent_left_paused = false; // --cold --keep-paused
    double snapshot_ms = 0;          // freezing the fork point (0 from a stored one)
    double children_ms = 0;          // overlays + restores of all children
    double total_ms = 0;
    std::uint64_t memory_image_bytes = 0;
    std::uint64_t header_bytes = 0; // rewritten in place per child
    // From a stored fork point: children whose clock forky could not set to now (no guest
    // agent answered), each "'NAME': why"; their clocks go on from the fork point's time.
    std::vector<std::string> clock_not_set;
    // Per child (as `children`): the host it runs on (its name in the inventory).
    std::vector<std::string> child_hosts;
    // Shipping the fork point to other hosts, all of them together.
    std::uint64_t bytes_shipped = 0;
    unsigned volumes_shipped = 0;
    unsigned volumes_reused = 0;
    double ship_ms = 0;
    // Per child (as `children`): the GPUs it got ("0000:65:00.0", "mdev nvidia-593 on ...").
    std::vector<std::vector<std::string>> child_gpus;
    unsigned parent_gpus_detached = 0; // detached for the cut and attached again
};

// The quota policy and the children's TTL of the policy folder `dir` (quotas.yaml,
// ttl.yaml; a file missing there: no such rule) into `o`.
void load_fork_policies(ForkOptions& o, const std::filesystem::path& dir);

// A fork point named on the command line: "VM@NAME".
struct PointRef {
    std::string vm;
    std::string name;
};
// nullopt for a plain VM name; UsageError for a malformed reference.
std::optional<PointRef> parse_point_ref(const std::string& text);

// The fork point `ref` names: of the VM of that name if it exists (by its UUID), else of a
// removed VM of that name whose snapshots were kept. NotFoundError / ConflictError
// (ambiguous) otherwise.
ForkPoint find_fork_point(const std::vector<ForkPoint>& points, const PointRef& ref,
                          const std::optional<std::string>& vm_uuid);

// `source` is "VM" (freeze it now) or "VM@NAME" (a stored fork point). The children's
// names are reserved before anything else is made: each by its own lock ('<child>.lock'),
// held until the child is whole, so a concurrent fork with the same prefix picks other
// names and `forky rm` of a child still being made waits for it. A child is defined only
// once forky has seen its restore succeed under the UUID it chose.
ForkResult vm_fork(Host& host, const std::string& source, const ForkOptions& options);

} // namespace forky
