// Domain XML is built, not printed: a typed spec plus the resolved plan (accelerator,
// volume paths, lineage) become a pugixml document. Pure: no libvirt calls, so golden
// tests pin the output.
#pragma once

#include "lineage.hpp"
#include "spec.hpp"

#include <string>
#include <vector>

namespace forky {

struct DomainPlan {
    std::string name;
    std::string uuid;                    // empty: libvirt picks one
    std::string domain_type;             // "kvm" or "qemu" (software emulation)
    std::vector<std::string> disk_paths; // the top overlay of each spec disk, in order
    std::string console_log_path;        // empty when the console is not logged
    Lineage lineage;
    std::vector<std::string> hostdevs; // <hostdev> elements (GPUs), as gpus.hpp writes them
};

std::string build_domain_xml(const DomainSpec& spec, const DomainPlan& plan);

} // namespace forky
