// forkyd: forky's service on a hypervisor host. Serves forky.v1.Forky (proto/forky/v1) over
// a Unix socket (root and group forky, 0660) and, when configured, TCP with TLS; streams
// console logs and libvirt's lifecycle events. Runs in the foreground; under systemd
// (Type=notify) it says READY=1 once libvirt answers and the pool is ready, and STOPPING=1
// on SIGTERM, after which calls in flight finish or roll back.
#include "daemon_config.hpp"
#include "events.hpp"
#include "service.hpp"

#include "config.hpp"
#include "errors.hpp"
#include "gpus.hpp"
#include "host.hpp"
#include "hosts.hpp"
#include "log.hpp"
#include "placement.hpp"
#include "policies.hpp"
#include "warm_pool.hpp"

#include "safe_path.hpp"
#include "yaml_reader.hpp"

#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <grp.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/security/server_credentials.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace fs = std::filesystem;
using namespace forky;
using namespace forky::daemon;

namespace {

// A socket's path, checked without changing anything (what --check can say): short enough
// for a socket, in a folder only forkyd's user can write (made root's, 0750, when missing),
// every folder on the way changeable only by root (or sticky), nothing but a socket there.
void check_socket_path(const fs::path& socket) {
    if (socket.string().size() > 100)
        throw SpecError("The socket path '" + socket.string() +
                        "' is too long (at most 100 characters)");
    fs::path existing = socket.parent_path();
    while (!existing.empty() && existing != existing.root_path() && !fs::exists(existing))
        existing = existing.parent_path();
    if (auto why = others_could_change(existing))
        throw SpecError("The socket's folder '" + socket.parent_path().string() +
                        "' is not safe: " + *why);
    const fs::path dir = socket.parent_path();
    struct stat st {};
    if (::lstat(dir.c_str(), &st) == 0) {
        if (S_ISLNK(st.st_mode))
            throw SpecError("The socket's folder '" + dir.string() +
                            "' is a symbolic link: name the folder itself");
        if (!S_ISDIR(st.st_mode))
            throw SpecError("The socket's folder '" + dir.string() + "' is not a folder");
        if (st.st_uid != ::geteuid() || (st.st_mode & 0022) != 0)
            throw SpecError("The socket's folder '" + dir.string() +
                            "' may be written by others than forkyd's user: refused (make it "
                            "root's, mode 0750 or 0755)");
    }
    if (::lstat(socket.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode))
        throw SpecError("'" + socket.string() + "' exists and is no socket: refused");
}

void prepare_socket_dir(const fs::path& socket, gid_t group) {
    check_socket_path(socket);
    const fs::path dir = socket.parent_path();
    if (!fs::exists(dir)) {
        fs::create_directories(dir);
        ::chmod(dir.c_str(), 0750);
        if (::lchown(dir.c_str(), 0, group) != 0)
            throw Error("Cannot give '" + dir.string() + "' to group forky");
        return;
    }
    // A folder made for it as root's alone (systemd's RuntimeDirectory=, root:root 0750):
    // the group forky may enter it, or its members could never reach the socket.
    struct stat st {};
    if (group != 0 && ::lstat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == 0 &&
        st.st_gid == 0 && (st.st_mode & 0777) == 0750 && ::lchown(dir.c_str(), 0, group) != 0)
        throw Error("Cannot give '" + dir.string() + "' to group forky");
}

// One forkyd per socket: an exclusive lock on SOCKET.lock, held while it runs. Another
// forkyd's socket is never taken over (and then removed under it).
int lock_socket(const fs::path& socket) {
    const fs::path lock = socket.string() + ".lock";
    const int fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        throw ConflictError("Cannot open '" + lock.string() + "': " + std::strerror(errno));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0)
        throw ConflictError("Another forkyd serves '" + socket.string() + "' (it holds '" +
                            lock.string() + "'): not taking its socket");
    return fd;
}

// The PEM files of tls:, read and checked (not empty, of the right kind).
std::string read_pem(const fs::path& p, const char* kind) {
    const std::string text = read_small_file(p, 1 << 20);
    if (text.find(std::string("-----BEGIN ")) == std::string::npos ||
        text.find(kind) == std::string::npos)
        throw SpecError("'" + p.string() + "' holds no PEM " + kind);
    return text;
}

std::atomic<bool> stopping{false};
std::atomic<bool> stopped_cleanly{false};

} // namespace

int main(int argc, char** argv) {
    std::string config_file = default_config_file;
    bool check = false;
    bool verbose = false;
    bool version = false;
    CLI::App app{
        "forkyd is forky's service on a hypervisor host. It serves the forky.v1.Forky gRPC\n"
        "API (up, list, fork, snapshot, revert, remove, tree, gc, hosts, gpus, console,\n"
        "events) on a Unix socket, by default unix:///run/forky/forkyd.sock (owner root,\n"
        "group forky, mode 0660: a caller who cannot open it never reaches forky), and\n"
        "on TCP only with TLS (or on loopback). Server reflection is on: grpcurl -plaintext\n"
        "-unix /run/forky/forkyd.sock list. It removes VMs past their TTL, keeps warm pools\n"
        "filled and turns KSM on while forks run. Runs in the foreground; systemd\n"
        "Type=notify. The forky CLI reaches it with --server (see forky(1))."};
    app.footer(R"(Configuration (--config, validated as strictly as a spec: file, line and key):
  connect: qemu:///system                  the hypervisor it serves
  pool: forky                              forky's storage pool there
  hosts: /etc/forky/hosts.yaml             or a fleet: every host of this inventory
  placement: /etc/forky/placement.yaml     where a fleet's new VMs and children go
  listen: [unix:///run/forky/forkyd.sock]  and/or tcp://ADDR:PORT (TLS unless loopback)
  tls: {cert: FILE, key: FILE, client_ca: FILE}
                                           client_ca: client certificates needed
  policies: /etc/forky/policies            ttl.yaml, quotas.yaml, gpu.yaml, pools.yaml
  reap_every: 30s                          the TTL reaper's round
  spec_dirs: [/etc/forky/domains]          where Up takes specs from
  ksm: {manage: true, pages_to_scan: 1000, sleep_ms: 20}
                                           KSM while forked VMs run

Exit codes:
  0  ok
  2  usage
  3  bad configuration (file, line, key; unsafe socket folder, bad TLS files)
  5  another forkyd serves the socket, or an address is in use
  6  libvirt unreachable)");
    app.add_option("--config", config_file, "configuration file")->capture_default_str();
    app.add_flag("--check", check, "validate the configuration and exit");
    app.add_flag("-v,--verbose", verbose, "log every call");
    app.add_flag("--version", version, "print the version and exit");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    if (version) {
        std::cout << "forkyd " << FORKY_VERSION << "\n";
        return 0;
    }
    set_log_level(verbose ? spdlog::level::info : spdlog::level::warn);
    auto log = logger("forkyd");
    try {
        DaemonConfig config = load_daemon_config(config_file);
        const Config settings = load_config(default_config_path);
        std::set<std::string> seen;
        for (const auto& l : config.listen) {
            if (!seen.insert(l.grpc_uri()).second)
                throw SpecError(config.source.string() + ": '" + l.address +
                                "' is listed twice under listen");
            if (l.kind == Listen::Kind::unix_socket)
                check_socket_path(l.address);
        }
        std::string tls_key, tls_cert, tls_ca;
        if (config.tls) {
            tls_key = read_pem(config.tls->key, "PRIVATE KEY");
            tls_cert = read_pem(config.tls->cert, "CERTIFICATE");
            if (!config.tls->client_ca.empty())
                tls_ca = read_pem(config.tls->client_ca, "CERTIFICATE");
        }
        for (const auto& l : config.listen)
            if (l.kind == Listen::Kind::tcp && (!config.tls || config.tls->client_ca.empty()))
                log->warn("{} takes calls from {} without a client certificate: whoever can "
                          "reach it can do what forky can (give tls.client_ca to require one)",
                          l.address, l.loopback ? "every local user" : "anyone on the network");
        // The policies forks will be held to: read now, so a broken one stops forkyd here
        // (and --check says so), not every fork later.
        std::error_code ec;
        if (!fs::is_directory(config.policies, ec))
            log->warn("The policies folder '{}' does not exist: no quotas, no TTL for children",
                      config.policies.string());
        load_quota_policy(config.policies);
        load_ttl_policy(config.policies);
        load_pools_policy(config.policies);
        if (fs::exists(config.policies / "gpu.yaml", ec))
            load_gpu_policy(config.policies / "gpu.yaml");
        // The fleet's inventory and placement policy: checked here too.
        if (!config.hosts.empty())
            load_inventory(config.hosts, /*required=*/true);
        load_placement_policy(config.placement);
        if (check) {
            std::cout << "forkyd: " << config.source.string() << " is valid (" << config.serves()
                      << ", " << config.listen.size() << " listener(s))\n";
            return 0;
        }
        ::signal(SIGPIPE, SIG_IGN);
        std::map<std::string, int> socket_locks; // held until forkyd exits
        for (const auto& l : config.listen)
            if (l.kind == Listen::Kind::unix_socket) {
                check_socket_path(l.address);
                if (fs::exists(fs::path(l.address).parent_path()))
                    socket_locks[l.address] = lock_socket(l.address);
            }
        init_event_loop();
        sd_notify(0, "STATUS=Connecting to libvirt");
        EventHub hub;
        ForkyService served(config, settings, hub, stopping);
        // libvirt answers, and the pool is there (made if need be); with a fleet a host that
        // does not answer now is said, and served once it does.
        for (const auto& e : served.inventory().hosts) {
            try {
                HostOptions h = served.host_options(e);
                h.create_pool = true;
                Host host(h);
                host.pool();
            } catch (const Error& err) {
                if (config.hosts.empty())
                    throw;
                log->warn("Host '{}' of the fleet does not answer yet: {}", e.name, err.what());
            }
        }
        // From here on signals are taken by one thread (sigwait), never by the gRPC or
        // libvirt threads. (Before, SIGTERM simply ends a forkyd that made nothing yet.)
        sigset_t signals;
        sigemptyset(&signals);
        sigaddset(&signals, SIGTERM);
        sigaddset(&signals, SIGINT);
        pthread_sigmask(SIG_BLOCK, &signals, nullptr);
        // Each host's domain events (one source runs libvirt's event loop for all).
        std::vector<std::unique_ptr<EventSource>> events;
        for (const auto& e : served.inventory().hosts)
            events.push_back(std::make_unique<EventSource>(e.uri, e.name, hub, events.empty()));
        for (std::size_t i = 0; i < events.size(); ++i)
            if (!events[i]->wait_connected(events.size() == 1 ? 10000 : 2000))
                log->warn("libvirt's domain events are not flowing yet from '{}'",
                          served.inventory().hosts[i].uri);

        const group* forky_group = ::getgrnam("forky");
        const gid_t gid = forky_group ? forky_group->gr_gid : 0;
        if (!forky_group)
            log->warn("No group 'forky' on this host: only root can use forkyd's socket");
        grpc::reflection::InitProtoReflectionServerBuilderPlugin();
        grpc::ServerBuilder builder;
        for (const auto& l : config.listen) {
            if (l.kind == Listen::Kind::unix_socket) {
                prepare_socket_dir(l.address, gid);
                if (!socket_locks.count(l.address))
                    socket_locks[l.address] = lock_socket(l.address);
                builder.AddListeningPort(l.grpc_uri(), grpc::InsecureServerCredentials());
            } else if (config.tls) {
                grpc::SslServerCredentialsOptions ssl(
                    config.tls->client_ca.empty()
                        ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                        : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
                ssl.pem_key_cert_pairs.push_back({tls_key, tls_cert});
                if (!config.tls->client_ca.empty())
                    ssl.pem_root_certs = tls_ca;
                builder.AddListeningPort(l.grpc_uri(), grpc::SslServerCredentials(ssl));
            } else {
                builder.AddListeningPort(l.grpc_uri(),
                                         grpc::InsecureServerCredentials()); // loopback
            }
        }
        builder.RegisterService(&served);
        // No second server on the same TCP port (SO_REUSEPORT would let one in), and a
        // bounded number of threads however many streams are open.
        builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
        grpc::ResourceQuota quota("forkyd");
        quota.SetMaxThreads(128);
        builder.SetResourceQuota(quota);
        // The socket appears with mode 0660 (0600 without the group): never readable by
        // all, not even for a moment.
        const mode_t old_umask = ::umask(forky_group ? 0117 : 0177);
        std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
        ::umask(old_umask);
        if (!server)
            throw ConflictError("forkyd could not listen on its addresses (in use? see above)");
        // The sockets as made (0660 or 0600 by the umask): their group, without following
        // a link; then checked to be what forkyd made. Their identity, to remove only them.
        std::map<std::string, ino_t> made;
        for (const auto& l : config.listen)
            if (l.kind == Listen::Kind::unix_socket) {
                struct stat st {};
                if (::lchown(l.address.c_str(), 0, gid) != 0 ||
                    ::lstat(l.address.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode) ||
                    (st.st_mode & 0007) != 0)
                    throw ConflictError("The socket '" + l.address + "' is not as forkyd made it");
                made[l.address] = st.st_ino;
            }
        std::string where;
        for (const auto& l : config.listen)
            where += std::string(where.empty() ? "" : ", ") +
                     (l.kind == Listen::Kind::unix_socket ? "unix://" : "tcp://") + l.address;
        sd_notify(0, ("READY=1\nSTATUS=Serving " + config.serves() + " on " + where).c_str());
        std::cerr << "forkyd: serving " << config.serves() << " on " << where << std::endl;

        // Housekeeping: the TTL reaper, a round every reap_every; KSM's tuning, every 5 s;
        // warm pools' refills.
        std::thread reaper([&] {
            const auto reap_every = std::chrono::seconds(config.reap_every);
            const auto ksm_every = std::chrono::seconds(5);
            auto next_reap = std::chrono::steady_clock::now() + reap_every;
            auto next_ksm = std::chrono::steady_clock::now();
            // Warm pools (policies/pools.yaml and those made with forky pool create) are
            // brought to their size every 2 s, and at once after an acquire.
            const auto pools_every = std::chrono::seconds(2);
            auto next_pools = std::chrono::steady_clock::now();
            while (!stopping) {
                const auto now = std::chrono::steady_clock::now();
                try {
                    if (now >= next_ksm) {
                        next_ksm = now + ksm_every;
                        served.tune_ksm();
                    }
                } catch (const Error& e) {
                    log->warn("KSM's tuning failed: {}", e.what());
                }
                try {
                    if (now >= next_pools || served.refill_soon()) {
                        next_pools = now + pools_every;
                        served.keep_pools();
                    }
                } catch (const Error& e) {
                    log->warn("The warm pools' round failed: {}", e.what());
                }
                try {
                    if (now >= next_reap) {
                        next_reap = now + reap_every;
                        served.reap();
                    }
                } catch (const Error& e) {
                    log->warn("The reaper's round failed: {}", e.what());
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
            }
        });

        int sig = 0;
        sigwait(&signals, &sig);
        stopping = true;
        sd_notify(0, "STOPPING=1\nSTATUS=Stopping: calls in flight finish or roll back");
        std::cerr << "forkyd: stopping (signal " << sig << ")" << std::endl;
        hub.close_all();
        served.cancel_streams(); // a client that stopped reading holds nothing up
        // A call stuck in libvirt (a hung libvirtd) cannot be waited for for ever: after
        // the deadline forkyd goes without it (its operation's journal is gc's).
        std::thread watchdog([&] {
            for (int i = 0; i < 900 && !stopped_cleanly; ++i)
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
            if (!stopped_cleanly) {
                std::cerr << "forkyd: calls still in libvirt after 90 s; exiting without them "
                             "('forky gc' undoes what they leave)"
                          << std::endl;
                std::_Exit(1);
            }
        });
        server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(30));
        server->Wait();
        reaper.join();
        while (!events.empty()) // the loop's own source last
            events.pop_back();
        try {
            served.restore_ksm();
        } catch (const Error& e) {
            log->warn("KSM's settings not put back: {}", e.what());
        }
        stopped_cleanly = true;
        watchdog.join();
        for (const auto& [path, ino] : made) {
            struct stat st {};
            if (::lstat(path.c_str(), &st) == 0 && st.st_ino == ino)
                ::unlink(path.c_str());
        }
        std::cerr << "forkyd: stopped" << std::endl;
        return 0;
    } catch (const Error& e) {
        std::cerr << "forkyd: error: " << e.what() << std::endl;
        const int code = static_cast<int>(e.code());
        return code == 0 ? 1 : code;
    } catch (const std::exception& e) {
        std::cerr << "forkyd: error: " << e.what() << std::endl;
        return 1;
    }
}
