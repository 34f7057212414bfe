// The hosts a command works on: with a host inventory, every host of the fleet (a VM is
// found on whichever holds it, and its name is unique across the fleet); without one, the
// single host (named "default"). The forky CLI and forkyd both work through it, so a
// fleet behaves the same from either. Hosts are connected on first use.
#pragma once

#include "fork.hpp"
#include "host.hpp"
#include "hosts.hpp"
#include "placement.hpp"

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace forky {

class Fleet {
public:
    // How to connect to a host of the inventory (its URI and pool, and the caller's
    // pool folder and whether a missing pool is made).
    using OptionsFor = std::function<HostOptions(const HostEntry&)>;
    // `inventory` without a source: its one host alone, whatever name it is asked by.
    Fleet(Inventory inventory, OptionsFor options_for);

    bool many() const { return !inventory_.source.empty(); }
    const Inventory& inventory() const { return inventory_; }
    // The host named `name` (UsageError naming the inventory's hosts when it has none so
    // named); the single host whatever the name without an inventory.
    Host& host(const std::string& name);
    // `name` when the inventory has such a host, else UsageError listing those it has.
    const std::string& require_host(const std::string& name) const;
    // A command's --host: require_host(name), or the first host when `name` is empty
    // ("default" without an inventory).
    const std::string& host_or_first(const std::string& name) const;
    // The host holding VM `vm` (its domain, else the kept snapshots of a removed VM of that
    // name), and its name. NotFoundError when none does, ConflictError when several do.
    Host& host_of(const std::string& vm, std::string* host_name = nullptr);
    // Names of the domains on the hosts other than `except` (hosts that do not answer are
    // skipped, with a warning): a new VM's or child's name must not be one.
    std::set<std::string> names_elsewhere(const std::string& except);

    // VMs on the other hosts spawned from fork points of `vm` on `host_name` (copies
    // shipped there), as (host, VM): they run on copies of their own, so removing `vm`
    // leaves them whole; rm --recursive removes them too. LibvirtError when a host does
    // not answer (nothing may be removed then).
    std::vector<std::pair<std::string, std::string>>
    children_elsewhere(const std::string& host_name, const std::string& vm);

    // Where a fork's `count` children go: all on the parent's host unless `host` names
    // another or `spread` lets `policy` spread them. Fills o.elsewhere; returns the
    // placement's reasons (said with --spread).
    std::vector<std::string> place_children(const PlacementPolicy& policy,
                                            const std::string& source, unsigned count,
                                            const std::string& host, bool spread, Host& parent_host,
                                            const std::string& parent_host_name, ForkOptions& o,
                                            const CancelToken& cancel);
    // The host a new VM `vm` of `memory_bytes` goes to: `host`, else the policy's pick;
    // ConflictError when another host of the fleet has a VM of that name.
    std::string place_up(const PlacementPolicy& policy, const std::string& vm,
                         std::uint64_t memory_bytes, const std::string& host,
                         const CancelToken& cancel);

private:
    Inventory inventory_;
    OptionsFor options_for_;
    std::map<std::string, Host> hosts_;
};

} // namespace forky
