#include "daemon_config.hpp"

#include "config.hpp"
#include "errors.hpp"
#include "names.hpp"
#include "units.hpp"
#include "yaml_reader.hpp"

#include <arpa/inet.h>

#include <cstdlib>

namespace forky::daemon {

namespace fs = std::filesystem;

std::string DaemonConfig::source_dirs() const {
    std::string out;
    for (const auto& d : spec_dirs)
        out += (out.empty() ? "" : ", ") + d.string();
    return out;
}

std::string DaemonConfig::serves() const {
    return hosts.empty() ? connect + " (pool " + pool + ")" : "the fleet of " + hosts.string();
}

std::string Listen::grpc_uri() const {
    return kind == Kind::unix_socket ? "unix:" + address : address;
}

namespace {

// "tcp://127.0.0.1:50051", "tcp://[::1]:50051", "tcp://localhost:50051"
Listen parse_tcp(const YamlReader& r, const YAML::Node& n, const std::string& key,
                 const std::string& rest) {
    Listen l;
    l.kind = Listen::Kind::tcp;
    const auto colon = rest.rfind(':');
    if (colon == std::string::npos || colon == 0)
        r.fail(n, key, "'tcp://" + rest + "' needs ADDR:PORT");
    std::string host = rest.substr(0, colon);
    const std::string port = rest.substr(colon + 1);
    char* end = nullptr;
    const long p = std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || p < 1 || p > 65535)
        r.fail(n, key, "port '" + port + "' must be between 1 and 65535");
    std::string bare = host;
    if (bare.size() > 2 && bare.front() == '[' && bare.back() == ']')
        bare = bare.substr(1, bare.size() - 2);
    unsigned char buf[16];
    if (inet_pton(AF_INET, bare.c_str(), buf) == 1)
        l.loopback = buf[0] == 127;
    else if (inet_pton(AF_INET6, bare.c_str(), buf) == 1)
        l.loopback = bare == "::1";
    else if (bare == "localhost")
        l.loopback = true;
    else
        r.fail(n, key, "'" + host + "' is not an IP address (or localhost)");
    l.address = host + ":" + port;
    return l;
}

fs::path existing(const YamlReader& r, const YAML::Node& n, const std::string& key) {
    return r.existing_file(n, key);
}

} // namespace

DaemonConfig parse_daemon_config(const std::string& text, const fs::path& file) {
    YamlReader r(fs::absolute(file).lexically_normal());
    YAML::Node root = r.load(text);
    if (!root.IsMap())
        throw SpecError(r.file().string() +
                        ": forkyd's configuration is a YAML mapping (connect, pool, listen, ...)");
    r.only_keys(root, "",
                {"connect", "hosts", "placement", "pool", "pool_dir", "listen", "tls", "policies",
                 "reap_every", "spec_dirs", "ksm"});
    DaemonConfig c;
    c.source = r.file();
    if (YAML::Node h = root["hosts"]; h.IsDefined()) {
        for (const char* other : {"connect", "pool"})
            if (root[other].IsDefined())
                r.fail(root[other], other,
                       std::string("with hosts: (a fleet) each host's URI and pool come from the "
                                   "inventory; leave out ") +
                           other + ":");
        c.hosts = r.existing_file(h, "hosts");
    }
    if (YAML::Node n = root["placement"]; n.IsDefined()) {
        if (c.hosts.empty())
            r.fail(n, "placement", "places a fleet's VMs: it goes with hosts:");
        c.placement = r.existing_file(n, "placement");
    }
    if (YAML::Node n = root["connect"]; n.IsDefined()) {
        c.connect = r.scalar(n, "connect");
        if (c.connect.empty() || c.connect.find("://") == std::string::npos ||
            c.connect.find_first_of(" \t\n") != std::string::npos)
            r.fail(n, "connect", "'" + c.connect + "' is not a libvirt URI (qemu:///system)");
    }
    if (YAML::Node n = root["pool"]; n.IsDefined()) {
        c.pool = r.scalar(n, "pool");
        if (auto why = name_problem(c.pool))
            r.fail(n, "pool", "'" + c.pool + "' is not a valid pool name: " + *why);
    }
    if (YAML::Node n = root["pool_dir"]; n.IsDefined()) {
        c.pool_dir = r.scalar(n, "pool_dir");
        if (!fs::path(c.pool_dir).is_absolute())
            r.fail(n, "pool_dir", "must be an absolute path");
    }
    if (YAML::Node n = root["listen"]; n.IsDefined()) {
        if (!n.IsSequence() || n.size() == 0)
            r.fail(n, "listen",
                   "expected a list of addresses, e.g. [" + std::string(default_socket) + "]");
        for (std::size_t i = 0; i < n.size(); ++i) {
            const std::string key = "listen[" + std::to_string(i) + "]";
            const std::string a = r.scalar(n[i], key);
            if (a.rfind("unix://", 0) == 0) {
                Listen l;
                l.address = a.substr(7);
                if (!fs::path(l.address).is_absolute() || l.address.size() > 100 ||
                    l.address.find("/../") != std::string::npos)
                    r.fail(n[i], key,
                           "'" + a + "': a socket needs an absolute path (unix:///run/x.sock)");
                c.listen.push_back(l);
            } else if (a.rfind("tcp://", 0) == 0) {
                c.listen.push_back(parse_tcp(r, n[i], key, a.substr(6)));
            } else {
                r.fail(n[i], key, "'" + a + "' must start with unix:// or tcp://");
            }
        }
    } else {
        c.listen.push_back(
            {Listen::Kind::unix_socket, std::string(default_socket).substr(7), false});
    }
    if (YAML::Node t = root["tls"]; t.IsDefined()) {
        r.require_map(t, "tls");
        r.only_keys(t, "tls", {"cert", "key", "client_ca"});
        Tls tls;
        tls.cert = existing(r, r.required(t, "cert", "tls.cert"), "tls.cert");
        tls.key = existing(r, r.required(t, "key", "tls.key"), "tls.key");
        if (YAML::Node ca = t["client_ca"]; ca.IsDefined())
            tls.client_ca = existing(r, ca, "tls.client_ca");
        c.tls = tls;
    }
    YAML::Node listen = root["listen"];
    for (std::size_t i = 0; i < c.listen.size(); ++i)
        if (c.listen[i].kind == Listen::Kind::tcp && !c.tls && !c.listen[i].loopback)
            r.fail(listen[i], "listen[" + std::to_string(i) + "]",
                   "plain TCP on '" + c.listen[i].address +
                       "' would let anyone on the network in: give tls: {cert, key} or listen on "
                       "loopback");
    if (YAML::Node n = root["policies"]; n.IsDefined())
        c.policies = r.path(n, "policies");
    if (YAML::Node n = root["spec_dirs"]; n.IsDefined()) {
        if (!n.IsSequence() || n.size() == 0)
            r.fail(n, "spec_dirs", "expected a list of folders, e.g. [/etc/forky/domains]");
        c.spec_dirs.clear();
        for (std::size_t i = 0; i < n.size(); ++i) {
            const std::string key = "spec_dirs[" + std::to_string(i) + "]";
            const fs::path d = r.scalar(n[i], key);
            if (!d.is_absolute())
                r.fail(n[i], key, "must be an absolute path");
            c.spec_dirs.push_back(d.lexically_normal());
        }
    }
    if (YAML::Node n = root["reap_every"]; n.IsDefined()) {
        c.reap_every = r.duration(n, "reap_every");
        if (c.reap_every.count() > 86400)
            r.fail(n, "reap_every", "must be at most 1d");
    }
    if (YAML::Node k = root["ksm"]; k.IsDefined()) {
        r.require_map(k, "ksm");
        r.only_keys(k, "ksm", {"manage", "pages_to_scan", "sleep_ms"});
        if (YAML::Node m = k["manage"]; m.IsDefined()) {
            const std::string v = r.scalar(m, "ksm.manage");
            if (v != "true" && v != "false")
                r.fail(m, "ksm.manage", "expected true or false, got " + forky::quoted(v));
            c.ksm_manage = v == "true";
        }
        if (YAML::Node n = k["pages_to_scan"]; n.IsDefined())
            c.ksm_pages_to_scan = r.whole_number(n, "ksm.pages_to_scan", 1, 100000);
        if (YAML::Node n = k["sleep_ms"]; n.IsDefined())
            c.ksm_sleep_ms = r.whole_number(n, "ksm.sleep_ms", 1, 60000);
    }
    return c;
}

DaemonConfig load_daemon_config(const fs::path& file) {
    // It decides where forkyd connects and who may call it: nobody else may have written it.
    return parse_daemon_config(
        *read_trusted_file(file, /*required=*/true, "forkyd's configuration", "--config"), file);
}

} // namespace forky::daemon
