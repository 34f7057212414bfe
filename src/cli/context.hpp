// What every subcommand shares: the global options, a lazily opened Host, forky's
// configuration and the cancellation that Ctrl-C requests.
#pragma once

#include "forky.hpp"

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

namespace forky::cli {

struct GlobalOptions {
    std::string uri;        // --connect, else $FORKY_URI, else qemu:///system
    bool uri_named = false; // by --connect: that host alone, even with an inventory
    std::string pool = default_pool;
    std::string pool_dir = default_pool_dir;
    bool create_pool = false; // --create-pool; `forky up` and `forky bench` set it too
    bool pool_named = false;  // by --pool, --pool-dir or --create-pool (refused with --server)
    std::string config = default_config_path;       // --config, else $FORKY_CONFIG
    bool config_named = false;                      // by --config or $FORKY_CONFIG: must exist
    std::string hosts = default_hosts_file;         // --hosts, else $FORKY_HOSTS
    bool hosts_named = false;                       // by --hosts or $FORKY_HOSTS: must exist
    std::string placement = default_placement_file; // --placement, else $FORKY_PLACEMENT
    bool placement_named = false; // by --placement or $FORKY_PLACEMENT: must exist
    std::string server;           // --server, else $FORKY_SERVER: forkyd's address; empty: libvirt
    int verbosity = 0;
};

class Remote;

class Context {
public:
    Context();
    ~Context();
    GlobalOptions options;
    // forkyd's client when --server (or FORKY_SERVER) names one, else null: the command
    // then talks to libvirt itself. Options that choose the hypervisor (--connect, --hosts,
    // --placement) belong to forkyd's side: refused with --server.
    Remote* remote();
    Host& host();           // connects on first use
    const Config& config(); // read on first use
    // The fleet: the host inventory if there is one, else the one host of --connect.
    const Inventory& inventory();
    // Whether a host inventory was read: every command then works across the fleet (VMs
    // are found on whichever host holds them; listings cover every host).
    bool fleet_mode();
    // The host of the fleet named `name` (connected on first use); "default" without an
    // inventory is --connect's.
    Host& host_named(const std::string& name);
    // `name` when the inventory has such a host, else UsageError listing those it has.
    const std::string& require_host(const std::string& name);
    // The host holding VM `vm` (its domain, else fork points of a removed VM of that
    // name), and its name; without an inventory, --connect's ("default").
    Host& host_of(const std::string& vm, std::string* host_name = nullptr);
    const PlacementPolicy& placement();
    // The hosts commands work on: the inventory's in fleet mode, else --connect's alone.
    Fleet& fleet();
    // Names of the domains on the fleet's hosts other than `except` (hosts that do not
    // answer are skipped, with a warning): a new VM's or child's name must not be one.
    std::set<std::string> names_elsewhere(const std::string& except);
    // Requested by SIGINT and SIGTERM: the core undoes what it did and throws
    // InterruptedError (exit 130).
    CancelToken cancel() const;
    // Ctrl-C and the test seam (FORKY_FAULT, FORKY_FAULT_SLEEP, FORKY_FAULT_SLEEP_S).
    OpContext op_context() const;

private:
    std::unique_ptr<Remote> remote_;
    std::optional<Host> host_;
    std::optional<Config> config_;
    std::optional<Inventory> inventory_;
    std::optional<Fleet> fleet_;
    std::optional<PlacementPolicy> placement_;
};

// A progress line on stderr while volumes travel (bytes, rate, time left) for anything
// that takes more than a moment; none when stderr is not a terminal.
ProgressFn progress_line(std::string what);

} // namespace forky::cli
