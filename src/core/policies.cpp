#include "policies.hpp"

#include "config.hpp"
#include "errors.hpp"
#include "lineage.hpp"
#include "names.hpp"
#include "units.hpp"
#include "vm.hpp"
#include "yaml_reader.hpp"

#include <libvirt/libvirt.h>
#include <unistd.h>

#include <fstream>

namespace forky {

namespace fs = std::filesystem;

namespace {

YAML::Node policy_root(const YamlReader& r, const std::string& text, const char* what,
                       std::initializer_list<const char*> keys) {
    YAML::Node root = r.load(text);
    if (root.IsNull() || !root.IsDefined())
        return YAML::Node(YAML::NodeType::Map); // an empty file: no rules
    if (!root.IsMap())
        throw SpecError(r.file().string() + ": " + what + " is a YAML mapping");
    r.only_keys(root, "", keys);
    return root;
}

// A policy decides what forks may do: like forky's settings, nobody but root (or the user
// running forky) may have written it or a folder on its way. Missing: no rule.
std::optional<std::string> read_if_there(const fs::path& file, const char* what) {
    return read_trusted_file(file, /*required=*/false, what, "");
}

std::uint64_t read_number(const char* path) {
    std::ifstream in(path);
    std::uint64_t v = 0;
    in >> v;
    return in ? v : 0;
}

} // namespace

TtlPolicy parse_ttl_policy(const std::string& text, const fs::path& file) {
    YamlReader r(fs::absolute(file).lexically_normal());
    YAML::Node root = policy_root(r, text, "a TTL policy (children: 2h)", {"children"});
    TtlPolicy p;
    p.source = r.file().string();
    if (YAML::Node c = root["children"]; c.IsDefined())
        p.children = r.duration(c, "children");
    return p;
}

QuotaPolicy parse_quota_policy(const std::string& text, const fs::path& file) {
    YamlReader r(fs::absolute(file).lexically_normal());
    YAML::Node root =
        policy_root(r, text, "a quota policy (max_children_per_parent: 16, ...)",
                    {"max_children_per_parent", "max_forks_per_host", "memory_overcommit"});
    QuotaPolicy q;
    q.source = r.file().string();
    if (YAML::Node n = root["max_children_per_parent"]; n.IsDefined())
        q.max_children_per_parent = r.whole_number(n, "max_children_per_parent", 1, 100000);
    if (YAML::Node n = root["max_forks_per_host"]; n.IsDefined())
        q.max_forks_per_host = r.whole_number(n, "max_forks_per_host", 1, 100000);
    if (YAML::Node n = root["memory_overcommit"]; n.IsDefined()) {
        const std::string text = r.scalar(n, "memory_overcommit");
        double v = 0;
        try {
            v = n.as<double>();
        } catch (const YAML::Exception&) {
            r.fail(n, "memory_overcommit", "expected a number, got " + forky::quoted(text));
        }
        if (!(v >= 0.1 && v <= 100))
            r.fail(n, "memory_overcommit",
                   "must be between 0.1 and 100 (1.5: 50% more than the host has)");
        q.memory_overcommit = v;
    }
    return q;
}

TtlPolicy load_ttl_policy(const fs::path& dir) {
    const fs::path file = dir / "ttl.yaml";
    auto text = read_if_there(file, "the TTL policy");
    return text ? parse_ttl_policy(*text, file) : TtlPolicy{};
}

QuotaPolicy load_quota_policy(const fs::path& dir) {
    const fs::path file = dir / "quotas.yaml";
    auto text = read_if_there(file, "the quota policy");
    return text ? parse_quota_policy(*text, file) : QuotaPolicy{};
}

std::optional<std::int64_t> ttl_left(const Lineage& lineage, std::int64_t now) {
    // A child held ready in a warm pool: its TTL runs from when it is handed out.
    if (!lineage.ttl || lineage.pinned || !lineage.warm_pool.empty())
        return std::nullopt;
    auto created = parse_rfc3339(lineage.created_at);
    if (!created)
        return std::nullopt; // no valid creation time: it cannot be said to have run out
    // TTLs are at most 100 years (lineage_from_xml), creation times within what
    // parse_rfc3339 reads: no overflow; a creation time in the future counts from now.
    const std::int64_t start = std::min(*created, now);
    return start + static_cast<std::int64_t>(lineage.ttl->count()) - now;
}

std::uint64_t ksm_saved_bytes() {
    const std::uint64_t sharing = read_number("/sys/kernel/mm/ksm/pages_sharing");
    return sharing * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

void check_fork_quotas(Host& host, const QuotaPolicy& q, const std::string& parent,
                       const std::string& parent_uuid, std::uint64_t child_memory,
                       unsigned count_here, unsigned count_total) {
    if (!q.any())
        return;
    unsigned count = count_total;
    // Every domain of the host (not only this pool's): forky's by their lineage.
    struct Seen {
        bool active;
        std::uint64_t memory;
        std::optional<Lineage> lineage;
    };
    std::vector<Seen> vms;
    for (const auto& d : host.domains()) {
        try {
            virDomainInfo info{};
            if (virDomainGetInfo(d.get(), &info) < 0) {
                clear_libvirt_error();
                continue; // gone meanwhile
            }
            vms.push_back(
                {info.state != VIR_DOMAIN_SHUTOFF, info.maxMem * 1024ULL, read_lineage(d.get())});
        } catch (const NotFoundError&) {
        }
    }
    auto refuse = [&](const std::string& rule, const std::string& figures) {
        throw ConflictError("Quota '" + rule + "' (" + q.source + "): " + figures +
                            "; nothing was made");
    };
    if (q.max_children_per_parent) {
        unsigned children = 0;
        for (const auto& vm : vms)
            if (vm.lineage && vm.lineage->parent_uuid == parent_uuid)
                ++children;
        if (children + count > *q.max_children_per_parent)
            refuse("max_children_per_parent", "'" + parent + "' has " + std::to_string(children) +
                                                  (children == 1 ? " child; " : " children; ") +
                                                  std::to_string(count) + " more would make " +
                                                  std::to_string(children + count) + ", over " +
                                                  std::to_string(*q.max_children_per_parent));
    }
    if (q.max_forks_per_host) {
        count = count_here;
        unsigned forks = 0;
        for (const auto& vm : vms)
            if (vm.lineage && vm.lineage->generation > 0 && vm.active)
                ++forks;
        if (forks + count > *q.max_forks_per_host)
            refuse("max_forks_per_host",
                   "'" + host.options().uri + "' runs " + std::to_string(forks) + " forked VMs; " +
                       std::to_string(count) + " more would make " + std::to_string(forks + count) +
                       ", over " + std::to_string(*q.max_forks_per_host));
    }
    if (q.memory_overcommit) {
        count = count_here;
        virNodeInfo info{};
        lv_check(virNodeGetInfo(host.conn(), &info),
                 "Failed to read the memory of '" + host.options().uri + "'");
        const std::uint64_t host_bytes = static_cast<std::uint64_t>(info.memory) * 1024;
        std::uint64_t used = 0;
        for (const auto& vm : vms)
            if (vm.active)
                used += vm.memory;
        const std::uint64_t saved = host.is_local() ? ksm_saved_bytes() : 0;
        const std::uint64_t after = used + child_memory * count;
        const double ceiling = static_cast<double>(host_bytes) * *q.memory_overcommit;
        if (static_cast<double>(after) - static_cast<double>(saved) > ceiling)
            refuse("memory_overcommit", "the running VMs have " + format_size(used) + ", " +
                                            std::to_string(count) + " more of " +
                                            format_size(child_memory) + " would make " +
                                            format_size(after) + " (less " + format_size(saved) +
                                            " that KSM shares), over " +
                                            std::to_string(*q.memory_overcommit).substr(0, 4) +
                                            " x the host's " + format_size(host_bytes));
    }
}

} // namespace forky
