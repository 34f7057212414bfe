// forkyd's configuration, /etc/forky/forkyd.yaml (forkyd --config FILE), validated as
// strictly as a spec: an unknown key, a key given twice, a wrong type or an impossible
// value is an error naming the file, the line and the key.
//
//   connect: qemu:///system                  # the hypervisor it serves
//   pool: forky                              # forky's storage pool there
//   hosts: /etc/forky/hosts.yaml             # or a fleet: every host of this inventory
//   placement: /etc/forky/placement.yaml     # where a fleet's new VMs and children go
//   listen: [unix:///run/forky/forkyd.sock]  # and/or tcp://ADDR:PORT (TLS unless loopback)
//   tls: {cert: FILE, key: FILE, client_ca: FILE}   # client_ca: client certificates needed
//   policies: /etc/forky/policies           # ttl.yaml, quotas.yaml, gpu.yaml, pools.yaml
//   reap_every: 30s                          # the TTL reaper's round
//   spec_dirs: [/etc/forky/domains]          # where Up takes specs from
//   ksm: {manage: true, pages_to_scan: 1000, sleep_ms: 20}   # KSM while forks run
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace forky::daemon {

inline constexpr const char* default_config_file = "/etc/forky/forkyd.yaml";
inline constexpr const char* default_socket = "unix:///run/forky/forkyd.sock";

struct Listen {
    enum class Kind { unix_socket, tcp };
    Kind kind = Kind::unix_socket;
    std::string address; // unix: the socket's path; tcp: "ADDR:PORT"
    bool loopback = false;
    std::string grpc_uri() const; // "unix:/path" or "ADDR:PORT"
};

struct Tls {
    std::filesystem::path cert, key, client_ca; // client_ca empty: no client certificates
};

struct DaemonConfig {
    std::filesystem::path source;
    std::string connect = "qemu:///system";
    std::string pool = "forky";
    // A fleet instead of `connect`: the host inventory (forky hosts --help), each host
    // with its own pool; and the placement policy for its new VMs and children.
    std::filesystem::path hosts;
    std::filesystem::path placement = "/etc/forky/placement.yaml";
    std::string pool_dir; // empty: forky's default for a new pool
    std::vector<Listen> listen;
    std::optional<Tls> tls;
    std::filesystem::path policies = "/etc/forky/policies";
    // How often the reaper looks for VMs past their TTL.
    std::chrono::seconds reap_every{30};
    // Where Up may take specs from (forkyd reads them as root).
    std::vector<std::filesystem::path> spec_dirs{"/etc/forky/domains"};
    // KSM on, at this scan rate, while forked VMs run (a local hypervisor only); off: the
    // administrator's settings are left alone.
    bool ksm_manage = true;
    unsigned ksm_pages_to_scan = 1000;
    unsigned ksm_sleep_ms = 20;
    std::string source_dirs() const; // "a, b" for messages
    std::string serves() const;      // "qemu:///system (pool forky)" or "the fleet of FILE"
};

// Reads and checks `file` (it must exist).
DaemonConfig load_daemon_config(const std::filesystem::path& file);
DaemonConfig parse_daemon_config(const std::string& text, const std::filesystem::path& file);

} // namespace forky::daemon
