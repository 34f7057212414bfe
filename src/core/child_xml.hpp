// The domain XML of a forked child, made from the XML its parent's memory image carries.
// Pure: golden-testable.
#pragma once

#include "lineage.hpp"

#include <map>
#include <string>
#include <string_view>

namespace forky {

struct ChildPlan {
    std::string name;
    std::string uuid;
    std::map<std::string, std::string> disk_paths; // target -> the child's own top layer
    std::string console_log_path;                  // empty: no console log
    Lineage lineage;
};

// Sets name, UUID, disks, console log and lineage; drops what belonged to the parent's
// running instance (id, pty paths, security labels) and every <backingStore>: libvirt
// trusts that element over the qcow2 headers, and a stale one silently skips a layer.
// Devices, MACs and the machine type stay: they must match the migration stream.
std::string make_child_xml(std::string_view parent_xml, const ChildPlan& plan);

// Disk target -> source file of a domain XML.
std::map<std::string, std::string> disk_sources(std::string_view domain_xml);

// The VM generation ID (<genid>) of a domain XML; empty when it has none.
std::string domain_genid(std::string_view domain_xml);

// A random (version 4) UUID.
std::string random_uuid();

} // namespace forky
