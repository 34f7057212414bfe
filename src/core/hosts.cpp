#include "hosts.hpp"

#include "config.hpp"
#include "errors.hpp"
#include "fork_point.hpp"
#include "names.hpp"
#include "vm.hpp"
#include "yaml_reader.hpp"

#include <libvirt/libvirt.h>

#include <cstdlib>
#include <future>
#include <memory>
#include <set>
#include <thread>

namespace forky {

namespace fs = std::filesystem;

namespace {

// libvirt's remote and local drivers forky may drive: QEMU, and the test driver.
bool known_uri(const std::string& uri) {
    const auto scheme_end = uri.find("://");
    if (scheme_end == std::string::npos || scheme_end == 0)
        return false;
    const std::string scheme = uri.substr(0, scheme_end);
    static const std::set<std::string> schemes = {"qemu",         "qemu+tls",  "qemu+ssh",
                                                  "qemu+tcp",     "qemu+unix", "qemu+libssh",
                                                  "qemu+libssh2", "test"};
    if (!schemes.count(scheme))
        return false;
    for (char c : uri)
        if (static_cast<unsigned char>(c) <= ' ' || static_cast<unsigned char>(c) >= 0x7f)
            return false;
    // The system or session daemon, never an embedded driver; of the query's parameters
    // only those that choose a socket, a key or a mode (libvirt runs `command=` and
    // `netcat=` as programs, and `no_verify=` skips the TLS check).
    const auto query_at = uri.find('?');
    const std::string path_part = uri.substr(0, query_at);
    const auto path_at = path_part.find('/', scheme_end + 3);
    const std::string path = path_at == std::string::npos ? "" : path_part.substr(path_at);
    if (scheme != "test" && path != "/system" && path != "/session")
        return false;
    if (query_at != std::string::npos) {
        static const std::set<std::string> allowed = {
            "socket", "keyfile", "known_hosts",        "sshauth",
            "no_tty", "pkipath", "known_hosts_verify", "mode"};
        std::string query = uri.substr(query_at + 1);
        std::size_t start = 0;
        while (start <= query.size()) {
            const auto end = query.find('&', start);
            const std::string param = query.substr(start, end - start);
            if (!allowed.count(param.substr(0, param.find('='))))
                return false;
            if (end == std::string::npos)
                break;
            start = end + 1;
        }
    }
    return true;
}

} // namespace

const HostEntry* Inventory::find(const std::string& name) const {
    for (const auto& h : hosts)
        if (h.name == name)
            return &h;
    return nullptr;
}

Inventory one_host_inventory(const std::string& uri, const std::string& pool) {
    Inventory inv;
    HostEntry self;
    self.name = "default";
    self.uri = uri;
    self.pool = pool;
    inv.hosts.push_back(std::move(self));
    return inv;
}

Inventory parse_inventory(const std::string& text, const fs::path& file) {
    YamlReader r(fs::absolute(file).lexically_normal());
    Inventory inv;
    inv.source = r.file();
    YAML::Node root = r.load(text);
    if (!root.IsMap())
        throw SpecError(r.file().string() + ": a host inventory is a YAML mapping with a list "
                                            "'hosts'");
    r.only_keys(root, "", {"hosts"});
    YAML::Node hosts = r.required(root, "hosts", "hosts");
    if (!hosts.IsSequence() || hosts.size() == 0)
        r.fail(hosts, "hosts", "expected a list of hosts, each with a name and a uri");
    std::map<std::string, int> names;
    std::map<std::string, std::string> uris;
    for (std::size_t i = 0; i < hosts.size(); ++i) {
        const std::string at = "hosts[" + std::to_string(i) + "]";
        const YAML::Node h = hosts[i];
        r.require_map(h, at);
        r.only_keys(h, at, {"name", "uri", "pool", "labels", "max_forks"});
        HostEntry e;
        e.line = h.Mark().line + 1;
        const YAML::Node name = r.required(h, "name", at + ".name");
        e.name = r.scalar(name, at + ".name");
        if (auto why = name_problem(e.name))
            r.fail(name, at + ".name", "'" + e.name + "' is not a valid host name: " + *why);
        if (auto first = names.find(e.name); first != names.end())
            r.fail(name, at + ".name",
                   "host '" + e.name + "' is listed twice (first on line " +
                       std::to_string(first->second) + ")");
        names[e.name] = e.line;
        const YAML::Node uri = r.required(h, "uri", at + ".uri");
        e.uri = r.scalar(uri, at + ".uri");
        if (!known_uri(e.uri))
            r.fail(uri, at + ".uri",
                   "'" + e.uri +
                       "' is not a libvirt URI forky drives (qemu:///system, "
                       "qemu+tls://HOST/system, qemu+ssh://USER@HOST/system, "
                       "qemu+tcp://HOST/system, qemu+unix:///system?socket=PATH; of the "
                       "query, only socket, keyfile, known_hosts, known_hosts_verify, "
                       "sshauth, no_tty, pkipath and mode)");
        if (auto first = uris.find(e.uri); first != uris.end())
            r.fail(uri, at + ".uri",
                   "'" + e.uri + "' is host '" + first->second +
                       "' already: one hypervisor, one entry");
        uris[e.uri] = e.name;
        if (YAML::Node pool = h["pool"]; pool.IsDefined()) {
            e.pool = r.scalar(pool, at + ".pool");
            if (auto why = name_problem(e.pool))
                r.fail(pool, at + ".pool", "'" + e.pool + "' is not a valid pool name: " + *why);
        }
        if (YAML::Node labels = h["labels"]; labels.IsDefined()) {
            if (!labels.IsMap())
                r.fail(labels, at + ".labels", "expected a mapping, e.g. {rack: r1}");
            for (const auto& kv : labels) {
                const std::string key = r.scalar(kv.first, at + ".labels");
                const std::string where = at + ".labels." + key;
                if (auto why = name_problem(key))
                    r.fail(kv.first, where, "'" + key + "' is not a valid label: " + *why);
                const std::string value = r.scalar(kv.second, where);
                if (auto why = name_problem(value))
                    r.fail(kv.second, where,
                           forky::quoted(value) + " is not a valid label value: " + *why);
                e.labels[key] = value;
            }
        }
        if (YAML::Node max = h["max_forks"]; max.IsDefined())
            e.max_forks = r.whole_number(max, at + ".max_forks", 1, 100000);
        inv.hosts.push_back(std::move(e));
    }
    return inv;
}

Inventory load_inventory(const fs::path& file, bool required) {
    const auto text =
        read_trusted_file(file, required, "the host inventory", "--hosts or FORKY_HOSTS");
    return text ? parse_inventory(*text, file) : Inventory{};
}

std::string version_string(unsigned long packed) {
    return std::to_string(packed / 1000000) + "." + std::to_string(packed / 1000 % 1000) + "." +
           std::to_string(packed % 1000);
}

namespace {

HostReport survey(const HostEntry& entry) {
    HostReport r;
    r.entry = entry;
    try {
        HostOptions o;
        o.uri = entry.uri;
        o.pool = entry.pool;
        Host host(o);
        r.reachable = true;
        virConnectPtr c = host.conn();
        if (char* name = virConnectGetHostname(c)) {
            r.hostname = name;
            std::free(name);
        }
        unsigned long v = 0;
        if (virConnectGetLibVersion(c, &v) == 0)
            r.libvirt_version = version_string(v);
        if (virConnectGetVersion(c, &v) == 0 && v != 0)
            r.qemu_version = version_string(v);
        virNodeInfo node{};
        if (virNodeGetInfo(c, &node) == 0) {
            r.cpus = node.cpus;
            r.memory_bytes = static_cast<std::uint64_t>(node.memory) * 1024;
        }
        if (unsigned long long free = virNodeGetFreeMemory(c); free != 0)
            r.memory_free_bytes = free;
        clear_libvirt_error();
        for (const auto& d : host.domains()) {
            auto lineage = read_lineage(d.get());
            if (!lineage || lineage->pool != entry.pool)
                continue;
            ++r.forky_vms;
            if (domain_is_active(d.get()))
                ++r.forky_vms_running;
        }
        // Looked at, never started: asking a host changes nothing there.
        StoragePoolPtr pool(virStoragePoolLookupByName(c, entry.pool.c_str()));
        clear_libvirt_error();
        if (!pool) {
            r.problem = "no pool '" + entry.pool + "' yet (forky up makes it)";
        } else if (virStoragePoolIsActive(pool.get()) != 1) {
            r.pool_exists = true;
            r.problem = "pool '" + entry.pool + "' is not running";
        } else {
            r.pool_exists = true;
            try {
                host.pool(); // forky's checks of a pool it uses
                r.pool_free_bytes = host.pool_available();
                r.fork_points = static_cast<unsigned>(read_fork_points(host).size());
            } catch (const Error& e) {
                r.problem = std::string("pool refused: ") + e.what();
            }
        }
    } catch (const Error& e) {
        if (!r.reachable)
            r.problem = e.what();
        else
            r.problem = std::string("answered, then: ") + e.what();
    }
    return r;
}

} // namespace

std::vector<HostReport> survey_hosts(const Inventory& inventory, std::chrono::seconds timeout,
                                     const CancelToken& cancel) {
    // One thread per host: a host that does not answer (a TCP connect to a machine that
    // is down takes minutes) is reported as such after `timeout`; its thread is left to
    // finish or to end with the process.
    std::vector<std::shared_ptr<std::promise<HostReport>>> promises;
    std::vector<std::future<HostReport>> answers;
    for (const auto& e : inventory.hosts) {
        auto p = std::make_shared<std::promise<HostReport>>();
        answers.push_back(p->get_future());
        std::thread([p, e] {
            try {
                p->set_value(survey(e));
            } catch (...) {
                p->set_exception(std::current_exception());
            }
        }).detach();
        promises.push_back(std::move(p));
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::vector<HostReport> out;
    for (std::size_t i = 0; i < answers.size(); ++i) {
        // Ctrl-C ends the wait at once (the threads end with the process).
        while (answers[i].wait_for(std::chrono::milliseconds(100)) != std::future_status::ready &&
               std::chrono::steady_clock::now() < deadline)
            if (cancel.requested())
                throw InterruptedError("Stopped asking the hosts");
        if (answers[i].wait_until(deadline) == std::future_status::ready) {
            try {
                out.push_back(answers[i].get());
                continue;
            } catch (const std::exception& e) {
                HostReport r;
                r.entry = inventory.hosts[i];
                r.problem = e.what();
                out.push_back(std::move(r));
                continue;
            }
        }
        HostReport r;
        r.entry = inventory.hosts[i];
        r.problem = "no answer within " + std::to_string(timeout.count()) + " s";
        out.push_back(std::move(r));
    }
    return out;
}

} // namespace forky
