// forky's lineage record, kept in each domain's <metadata> under forky's own XML
// namespace, so `virsh dumpxml` shows a VM's family and forky needs no database.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace forky {

inline constexpr const char* lineage_namespace = "https://forky.dev/xmlns/lineage/1";
inline constexpr const char* lineage_prefix = "forky";

// A volume in forky's pool that belongs to this VM and goes when it is removed.
struct OwnedVolume {
    std::string role;   // "disk" (a top overlay) or "console" (the serial log)
    std::string target; // the disk's target (vda), empty for the console
    std::string name;   // the volume's name in the pool
    bool operator==(const OwnedVolume&) const = default;
};

// A port of the guest reachable on the hypervisor host (user-mode networking).
struct PortForward {
    unsigned guest = 0;
    unsigned host = 0;
    bool operator==(const PortForward&) const = default;
};

struct Lineage {
    std::string parent;      // its parent's name (for display); empty for `forky up`
    std::string parent_uuid; // its parent's identity: a name reused never joins a family
    // Where its parent runs when that is another host of the fleet (forky fork --host):
    // the host's name in the inventory. Empty: the same host as this VM.
    std::string parent_host;
    std::string fork_point;    // the fork point it came from, "web@fp2", if any
    std::string fork_point_id; // that fork point's id (its record in the pool)
    unsigned generation = 0;
    std::string created_at; // RFC 3339, UTC
    std::string operation;  // id of the forky operation that made it (its journal's `op`)
    std::optional<std::chrono::seconds> ttl;
    std::string pool; // the storage pool holding the volumes below
    std::vector<OwnedVolume> volumes;
    std::string spec; // the spec file it came from, as the client saw it

    // For a forked VM: the fork point's memory image and frozen layers (by disk target).
    // They belong to the fork point, not to this VM; gc reclaims them when nothing
    // depends on them any more.
    std::string memory_image;
    std::vector<OwnedVolume> layers; // role "layer"

    // The number of the VM's last layer made (by a fork, a snapshot or a revert: each
    // freezes its top and gives it a new one) and the children named so far, so that
    // neither a number nor a name is ever used twice.
    unsigned forks = 0;
    unsigned children_made = 0;

    std::vector<PortForward> ports;

    // The VM generation ID (<genid> in the domain XML, the guest's vmgenid device) forky
    // gave this instance: new for every child and every revert, so guests reseed their
    // random pools (Linux 5.18+) instead of sharing their parent's. Empty for VMs made
    // before forky set one (their children cannot get one: the device is part of the
    // migration stream).
    std::string genid;

    // GPUs: whether a fork or snapshot may detach the VM's passed-through devices for
    // the cut and attach them again afterwards (the spec's `gpu_fork: detach`; the guest
    // sees an unplug and a plug), and the mediated devices forky created for this VM (by
    // UUID), which go when it is removed.
    bool gpu_fork_detach = false;
    // Kept past its TTL (forky pin): the reaper leaves it alone.
    bool pinned = false;
    std::vector<std::string> mdevs;
    // A child held ready (restored, paused) in warm pool `warm_pool` (forky pool): not
    // handed out yet; empty once `forky acquire` took it, and for every other VM.
    std::string warm_pool;
    std::string acquired_from; // the warm pool it was handed out from (forky release)

    bool operator==(const Lineage&) const = default;

    const OwnedVolume* console_volume() const;
};

// The <forky:lineage> element with its namespace declared, to embed in a domain's
// <metadata>; or, `bare`, without prefix and namespace, as virDomainSetMetadata wants it
// (libvirt puts the element and its children in the namespace itself).
std::string lineage_to_xml(const Lineage& lineage, bool bare = false);

// Parses what lineage_to_xml wrote (or virDomainGetMetadata returned). Throws Error on
// a malformed record.
Lineage lineage_from_xml(std::string_view xml);

// Now, as RFC 3339 UTC ("2026-11-26T19:40:00Z").
std::string utc_now_rfc3339();

// Seconds since the epoch of what utc_now_rfc3339() wrote; nullopt for anything else.
std::optional<std::int64_t> parse_rfc3339(std::string_view text);

} // namespace forky
