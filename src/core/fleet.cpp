#include "fleet.hpp"

#include "errors.hpp"
#include "fork_point.hpp"
#include "lineage.hpp"
#include "log.hpp"
#include "names.hpp"
#include "plan.hpp"
#include "vm.hpp"

namespace forky {

Fleet::Fleet(Inventory inventory, OptionsFor options_for)
    : inventory_(std::move(inventory)), options_for_(std::move(options_for)) {
    if (inventory_.hosts.empty())
        throw Error("A fleet needs at least one host");
}

const std::string& Fleet::require_host(const std::string& name) const {
    if (!many())
        throw UsageError("No host inventory: --host " + forky::quoted(name) +
                         " names nothing ('forky hosts --help' shows the inventory's form)");
    if (inventory_.find(name) == nullptr) {
        std::string names;
        for (const auto& h : inventory_.hosts)
            names += (names.empty() ? "" : ", ") + h.name;
        throw UsageError("No host named " + forky::quoted(name) + " in " +
                         inventory_.source.string() + " (its hosts: " + names + ")");
    }
    return name;
}

const std::string& Fleet::host_or_first(const std::string& name) const {
    return name.empty() ? inventory_.hosts.front().name : require_host(name);
}

Host& Fleet::host(const std::string& name) {
    const HostEntry& e = many() ? *inventory_.find(require_host(name)) : inventory_.hosts.front();
    auto it = hosts_.find(e.name);
    if (it == hosts_.end())
        it = hosts_.emplace(e.name, Host(options_for_(e))).first;
    return it->second;
}

std::set<std::string> Fleet::names_elsewhere(const std::string& except) {
    std::set<std::string> out;
    if (!many())
        return out;
    for (const auto& h : inventory_.hosts) {
        if (h.name == except)
            continue;
        try {
            for (const auto& d : host(h.name).domains())
                out.insert(domain_name(d.get()));
        } catch (const InterruptedError&) {
            throw;
        } catch (const Error& e) {
            logger("fleet")->warn("Host '{}' did not answer ({}); names of its VMs not checked",
                                  h.name, e.what());
        }
    }
    return out;
}

Host& Fleet::host_of(const std::string& vm, std::string* host_name) {
    if (!many()) {
        if (host_name)
            *host_name = inventory_.hosts.front().name;
        return host(inventory_.hosts.front().name);
    }
    require_valid_name(vm);
    std::vector<std::string> found;
    std::vector<std::string> unreachable;
    for (bool by_points : {false, true}) {
        for (const auto& e : inventory_.hosts) {
            try {
                Host& h = host(e.name);
                bool here = false;
                if (!by_points) {
                    DomainPtr d = h.find_domain(vm);
                    here = d && read_lineage(d.get()).has_value();
                } else {
                    // A removed VM whose snapshots were kept (not copies shipped there).
                    for (const auto& p : read_fork_points(h))
                        here = here || (p.vm == vm && p.shipped_from.empty());
                }
                if (here)
                    found.push_back(e.name);
            } catch (const Error& err) {
                if (!by_points)
                    unreachable.push_back("'" + e.name + "' (" + err.what() + ")");
            }
        }
        if (!found.empty())
            break;
    }
    if (found.size() > 1) {
        std::string names;
        for (const auto& n : found)
            names += (names.empty() ? "'" : ", '") + n + "'";
        throw ConflictError("VM '" + vm + "' is on several hosts of the fleet: " + names +
                            "; forky cannot tell which is meant (name one host's URI with "
                            "--connect, e.g. 'forky --connect URI rm " +
                            vm + "')");
    }
    if (found.empty()) {
        std::string why = "No VM named '" + vm + "' on any host of " + inventory_.source.string();
        for (const auto& u : unreachable)
            why += "; not reachable: " + u;
        throw NotFoundError(why);
    }
    if (host_name)
        *host_name = found.front();
    return host(found.front());
}

std::vector<std::pair<std::string, std::string>>
Fleet::children_elsewhere(const std::string& host_name, const std::string& vm) {
    std::vector<std::pair<std::string, std::string>> out;
    if (!many())
        return out;
    Host& here = host(host_name);
    std::string uuid;
    if (DomainPtr d = here.find_domain(vm))
        uuid = domain_uuid(d.get());
    std::set<std::string> ids;
    for (const auto& p : read_fork_points(here))
        if (p.vm == vm && (uuid.empty() || p.vm_uuid == uuid) && p.shipped_from.empty())
            ids.insert(p.id);
    for (const auto& h : inventory_.hosts) {
        if (h.name == host_name)
            continue;
        try {
            for (const auto& d : host(h.name).domains()) {
                auto lineage = read_lineage(d.get());
                if (lineage && ids.count(lineage->fork_point_id))
                    out.emplace_back(h.name, domain_name(d.get()));
            }
        } catch (const InterruptedError&) {
            throw;
        } catch (const Error& e) {
            throw LibvirtError("Cannot look for VMs forked from '" + vm + "' on host '" + h.name +
                                   "' (" + e.what() + "); not removing anything",
                               0, 0);
        }
    }
    return out;
}

std::vector<std::string> Fleet::place_children(const PlacementPolicy& policy,
                                               const std::string& source, unsigned count,
                                               const std::string& host_wanted, bool spread,
                                               Host& parent_host,
                                               const std::string& parent_host_name, ForkOptions& o,
                                               const CancelToken& cancel) {
    if (host_wanted.empty() && !spread)
        return {}; // all on the parent's host
    if (count == 0 || count > max_fork_count)
        throw UsageError("The number of children must be between 1 and " +
                         std::to_string(max_fork_count) + ", not " + std::to_string(count));
    if (!host_wanted.empty() && spread)
        throw UsageError("--host and --spread: pick one");
    if (!host_wanted.empty())
        require_host(host_wanted);
    else if (!many())
        throw UsageError("--spread places children over the hosts of an inventory, and there "
                         "is none ('forky hosts --help' shows its form)");
    const std::optional<PointRef> ref = parse_point_ref(source);
    const std::string vm = ref ? ref->vm : source;
    PlacementRequest req;
    req.count = count;
    req.fork_point_host = parent_host_name;
    req.disk_bytes = bytes_per_child;
    req.host = host_wanted.empty() ? std::nullopt : std::optional<std::string>(host_wanted);
    // Each child's memory (the VM's), and what a host without the fork point is shipped.
    std::uint64_t memory = 0;
    if (DomainPtr d = parent_host.find_domain(vm))
        memory = vm_info(parent_host, vm).memory_bytes;
    req.memory_bytes = memory;
    req.ship_bytes = memory; // about the memory image; the layers are small beside it
    const auto surveyed = survey_hosts(inventory_, std::chrono::seconds(15), cancel);
    for (const auto& h : surveyed)
        if (h.entry.name == host_wanted && !h.reachable)
            throw LibvirtError("Host '" + host_wanted + "' does not answer: " + h.problem, 0, 0);
    const Placement p = place(policy, surveyed, req);
    std::map<std::string, unsigned> per_host;
    for (const auto& h : p.hosts)
        ++per_host[h];
    for (const auto& [name, n] : per_host) {
        if (name == parent_host_name)
            continue;
        o.elsewhere.push_back({&host(name), name, n});
    }
    return spread ? p.reasons : std::vector<std::string>{};
}

std::string Fleet::place_up(const PlacementPolicy& policy, const std::string& vm,
                            std::uint64_t memory_bytes, const std::string& host_wanted,
                            const CancelToken& cancel) {
    PlacementRequest req;
    req.count = 1;
    req.memory_bytes = memory_bytes;
    req.disk_bytes = bytes_per_child;
    if (!host_wanted.empty())
        req.host = require_host(host_wanted);
    const auto surveyed = survey_hosts(inventory_, std::chrono::seconds(15), cancel);
    require_valid_name(vm);
    const std::string chosen = place(policy, surveyed, req).hosts.front();
    // Names are unique in the fleet: every command finds a VM by its name.
    if (names_elsewhere(chosen).count(vm))
        throw ConflictError("A VM named '" + vm +
                            "' already exists on another host of the fleet ('forky ls' shows "
                            "where); pick another name");
    return chosen;
}

} // namespace forky
