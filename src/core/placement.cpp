#include "placement.hpp"

#include "errors.hpp"
#include "names.hpp"
#include "units.hpp"
#include "yaml_reader.hpp"

#include <algorithm>

namespace forky {

namespace fs = std::filesystem;

namespace {

bool boolean(const YamlReader& r, const YAML::Node& node, const std::string& key) {
    const std::string v = r.scalar(node, key);
    if (v == "true")
        return true;
    if (v == "false")
        return false;
    r.fail(node, key, "must be true or false, got '" + v + "'");
}

std::uint64_t size(const YamlReader& r, const YAML::Node& node, const std::string& key) {
    std::string why;
    auto v = parse_size(r.scalar(node, key), &why);
    if (!v)
        r.fail(node, key, why);
    return *v;
}

struct Candidate {
    const HostReport* host = nullptr;
    unsigned capacity = 0; // VMs it can still take
    unsigned taken = 0;    // given to it by this placement
    bool holds_point = false;
    std::string why; // what limits it
};

} // namespace

PlacementPolicy parse_placement_policy(const std::string& text, const fs::path& file) {
    YamlReader r(fs::absolute(file).lexically_normal());
    PlacementPolicy p;
    p.source = r.file();
    YAML::Node root = r.load(text);
    if (root.IsNull())
        return p;
    if (!root.IsMap())
        throw SpecError(r.file().string() + ": a placement policy is a YAML mapping");
    r.only_keys(root, "", {"filters", "rank"});
    if (YAML::Node f = root["filters"]; f.IsDefined()) {
        r.require_map(f, "filters");
        r.only_keys(f, "filters",
                    {"labels", "min_free_memory", "min_pool_free", "respect_max_forks"});
        if (YAML::Node labels = f["labels"]; labels.IsDefined()) {
            if (!labels.IsMap())
                r.fail(labels, "filters.labels", "expected a mapping, e.g. {rack: r1}");
            for (const auto& kv : labels) {
                const std::string key = r.scalar(kv.first, "filters.labels");
                if (auto why = name_problem(key))
                    r.fail(kv.first, "filters.labels." + key,
                           "'" + key + "' is not a valid label: " + *why);
                p.labels[key] = r.scalar(kv.second, "filters.labels." + key);
            }
        }
        if (YAML::Node v = f["min_free_memory"]; v.IsDefined())
            p.min_free_memory = size(r, v, "filters.min_free_memory");
        if (YAML::Node v = f["min_pool_free"]; v.IsDefined())
            p.min_pool_free = size(r, v, "filters.min_pool_free");
        if (YAML::Node v = f["respect_max_forks"]; v.IsDefined())
            p.respect_max_forks = boolean(r, v, "filters.respect_max_forks");
    }
    if (YAML::Node k = root["rank"]; k.IsDefined()) {
        r.require_map(k, "rank");
        r.only_keys(k, "rank", {"prefer_fork_point_host", "strategy"});
        if (YAML::Node v = k["prefer_fork_point_host"]; v.IsDefined())
            p.prefer_fork_point_host = boolean(r, v, "rank.prefer_fork_point_host");
        if (YAML::Node v = k["strategy"]; v.IsDefined()) {
            const std::string s = r.scalar(v, "rank.strategy");
            if (s == "spread")
                p.strategy = PlacementPolicy::Strategy::spread;
            else if (s == "pack")
                p.strategy = PlacementPolicy::Strategy::pack;
            else
                r.fail(v, "rank.strategy", "must be spread or pack, got '" + s + "'");
        }
    }
    return p;
}

PlacementPolicy load_placement_policy(const fs::path& file) {
    std::error_code ec;
    if (!fs::exists(fs::symlink_status(file, ec)))
        return {};
    return parse_placement_policy(read_small_file(file), file);
}

Placement place(const PlacementPolicy& policy, const std::vector<HostReport>& fleet,
                const PlacementRequest& req) {
    if (req.host) {
        const bool known = std::any_of(fleet.begin(), fleet.end(), [&](const HostReport& h) {
            return h.entry.name == *req.host;
        });
        if (!known)
            throw UsageError("No host '" + *req.host +
                             "' in the inventory (forky hosts lists them)");
    }
    std::vector<Candidate> candidates;
    std::vector<std::string> refused;
    for (const auto& h : fleet) {
        const std::string name = h.entry.name;
        if (req.host && name != *req.host)
            continue;
        auto refuse = [&](const std::string& why) { refused.push_back(name + ": " + why); };
        if (!h.reachable) {
            refuse("not reachable (" + h.problem + ")");
            continue;
        }
        bool labels_ok = true;
        for (const auto& [k, v] : policy.labels) {
            auto it = h.entry.labels.find(k);
            if (it == h.entry.labels.end() || it->second != v) {
                refuse("label " + k + "=" + v + " wanted, it has " +
                       (it == h.entry.labels.end() ? std::string("none") : k + "=" + it->second));
                labels_ok = false;
                break;
            }
        }
        if (!labels_ok)
            continue;
        if (!h.pool_exists) {
            refuse("no pool '" + h.entry.pool + "'");
            continue;
        }
        Candidate c;
        c.host = &h;
        c.holds_point =
            (!req.fork_point_host.empty() && name == req.fork_point_host) ||
            std::find(req.holding.begin(), req.holding.end(), name) != req.holding.end();
        c.capacity = 100000;
        c.why = "no limit reached";
        auto limit = [&c](std::uint64_t have, std::uint64_t keep, std::uint64_t each,
                          const std::string& what) {
            const std::uint64_t room = have > keep ? have - keep : 0;
            const std::uint64_t n = each == 0 ? 100000 : room / each;
            if (n < c.capacity) {
                c.capacity = static_cast<unsigned>(std::min<std::uint64_t>(n, 100000));
                c.why = what + ": " + format_size(have) + " free, keeps " + format_size(keep) +
                        ", " + format_size(each) + " each";
            }
        };
        limit(h.memory_free_bytes, policy.min_free_memory, req.memory_bytes, "memory");
        const std::uint64_t ship = c.holds_point ? 0 : req.ship_bytes;
        limit(h.pool_free_bytes > ship ? h.pool_free_bytes - ship : 0, policy.min_pool_free,
              req.disk_bytes, ship ? "pool (after " + format_size(ship) + " shipped)" : "pool");
        if (policy.respect_max_forks && h.entry.max_forks) {
            const unsigned left = *h.entry.max_forks > h.forky_vms_running
                                      ? *h.entry.max_forks - h.forky_vms_running
                                      : 0;
            if (left < c.capacity) {
                c.capacity = left;
                c.why = "max_forks " + std::to_string(*h.entry.max_forks) + ", " +
                        std::to_string(h.forky_vms_running) + " running";
            }
        }
        if (c.capacity == 0) {
            refuse(c.why);
            continue;
        }
        candidates.push_back(c);
    }
    // Ranking: the fork point's host first (nothing to ship), then most free memory.
    std::stable_sort(candidates.begin(), candidates.end(),
                     [&](const Candidate& a, const Candidate& b) {
                         if (policy.prefer_fork_point_host && a.holds_point != b.holds_point)
                             return a.holds_point;
                         return a.host->memory_free_bytes > b.host->memory_free_bytes;
                     });
    unsigned total = 0;
    for (const auto& c : candidates)
        total += c.capacity;
    if (total < req.count) {
        std::string why;
        for (const auto& c : candidates)
            refused.push_back(c.host->entry.name + ": room for " + std::to_string(c.capacity) +
                              " (" + c.why + ")");
        for (const auto& r : refused)
            why += "\n  " + r;
        throw ConflictError("No room for " + std::to_string(req.count) +
                            (req.count == 1 ? " VM" : " VMs") + " in the fleet (" +
                            std::to_string(total) + " at most):" + why);
    }
    Placement out;
    for (unsigned i = 0; i < req.count; ++i) {
        Candidate* pick = nullptr;
        if (policy.strategy == PlacementPolicy::Strategy::pack) {
            for (auto& c : candidates)
                if (c.taken < c.capacity) {
                    pick = &c;
                    break;
                }
        } else {
            // Spread: the host with the fewest given so far (ties: rank order).
            for (auto& c : candidates)
                if (c.taken < c.capacity && (!pick || c.taken < pick->taken))
                    pick = &c;
        }
        ++pick->taken;
        out.hosts.push_back(pick->host->entry.name);
    }
    for (const auto& c : candidates)
        out.reasons.push_back(c.host->entry.name + ": " + std::to_string(c.taken) + " of " +
                              std::to_string(c.capacity) + " it has room for" +
                              (c.holds_point ? " (holds the fork point)" : ""));
    for (const auto& r : refused)
        out.reasons.push_back(r);
    return out;
}

} // namespace forky
