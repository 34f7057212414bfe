// forky's lineage record, kept in each domain's <metadata> under forky's own XML
// namespace, so `virsh dumpxml` shows a VM's family and forky needs no database.
#pragma once

#include <chrono>
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

struct Lineage {
    std::string parent;     // empty for a VM made by `forky up`
    std::string fork_point; // the frozen layer this VM was forked from, if any
    unsigned generation = 0;
    std::string created_at; // RFC 3339, UTC
    std::optional<std::chrono::seconds> ttl;
    std::string pool; // the storage pool holding the volumes below
    std::vector<OwnedVolume> volumes;
    std::string spec; // the spec file it came from, as the client saw it
    bool operator==(const Lineage&) const = default;

    const OwnedVolume* console_volume() const;
};

// The <forky:lineage> element, namespace declared, as a string for virDomainSetMetadata
// or to embed in a domain's <metadata>.
std::string lineage_to_xml(const Lineage& lineage);

// Parses what lineage_to_xml wrote (or virDomainGetMetadata returned). Throws Error on
// a malformed record.
Lineage lineage_from_xml(std::string_view xml);

// Now, as RFC 3339 UTC ("2026-11-26T19:40:00Z").
std::string utc_now_rfc3339();

} // namespace forky
