// The host's policies for forks, read by forky and forkyd from one folder
// (/etc/forky/policies, $FORKY_POLICIES, or forkyd's `policies:`), each file optional and
// validated as strictly as a spec:
//
//   ttl.yaml      children: 2h          children expire after this long unless pinned
//                                       (forky pin); a spec's own ttl: wins
//   quotas.yaml   max_children_per_parent: 16
//                 max_forks_per_host: 64       running forked VMs (generation > 0)
//                 memory_overcommit: 1.5       the VMs' memory against the host's (what KSM
//                                              saves counts as free)
//
// A fork that would break a quota is refused before anything changes, naming the rule,
// the file and the figures. forkyd's reaper removes expired children.
#pragma once

#include "host.hpp"
#include "lineage.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace forky {

inline constexpr const char* default_policies_dir = "/etc/forky/policies";
// Held by a fork from its quota check to its commit: no two forks take the last place.
inline constexpr const char* quotas_lock_name = "forky-quotas";

struct TtlPolicy {
    std::optional<std::chrono::seconds> children;
    std::string source;
};

struct QuotaPolicy {
    std::optional<unsigned> max_children_per_parent;
    std::optional<unsigned> max_forks_per_host;
    std::optional<double> memory_overcommit;
    std::string source;
    bool any() const { return max_children_per_parent || max_forks_per_host || memory_overcommit; }
};

TtlPolicy parse_ttl_policy(const std::string& text, const std::filesystem::path& file);
QuotaPolicy parse_quota_policy(const std::string& text, const std::filesystem::path& file);

// The policies in `dir` (ttl.yaml, quotas.yaml): a missing file is no rule; a file that is
// there and wrong is a SpecError.
TtlPolicy load_ttl_policy(const std::filesystem::path& dir);
QuotaPolicy load_quota_policy(const std::filesystem::path& dir);

// Seconds until a VM of this lineage expires (negative: expired), at `now` (seconds since
// the epoch); nullopt when it has no TTL or is pinned.
std::optional<std::int64_t> ttl_left(const Lineage& lineage, std::int64_t now);

// Memory KSM saves on this machine now (pages shared beyond the first copy), from
// /sys/kernel/mm/ksm; 0 where KSM is absent. Only meaningful for a local hypervisor.
std::uint64_t ksm_saved_bytes();

// A fork of `count_total` children of `parent` (its UUID; each child with `child_memory`),
// `count_here` of them on `host`, against `quotas`: ConflictError "Quota 'NAME' (FILE):
// figures" before anything changes.
void check_fork_quotas(Host& host, const QuotaPolicy& quotas, const std::string& parent,
                       const std::string& parent_uuid, std::uint64_t child_memory,
                       unsigned count_here, unsigned count_total);

} // namespace forky
