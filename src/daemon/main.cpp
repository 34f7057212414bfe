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
#include "host.hpp"
#include "log.hpp"

#include <CLI/CLI.hpp>
#include <grp.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>
#include <signal.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

namespace fs = std::filesystem;
using namespace forky;
using namespace forky::daemon;

namespace {

std::string read_pem(const fs::path& p) {
    std::ifstream in(p);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// The socket's folder: made root's (group forky may enter) when missing; one that others
// can write is refused (anyone could swap the socket under a client).
void prepare_socket_dir(const fs::path& socket, gid_t group) {
    const fs::path dir = socket.parent_path();
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0) {
        fs::create_directories(dir);
        ::chmod(dir.c_str(), 0750);
        if (::chown(dir.c_str(), 0, group) != 0)
            throw Error("Cannot give '" + dir.string() + "' to group forky");
        return;
    }
    if (!S_ISDIR(st.st_mode))
        throw ConflictError("The socket's folder '" + dir.string() + "' is not a folder");
    if (st.st_uid != ::geteuid() || (st.st_mode & 0022) != 0)
        throw ConflictError("The socket's folder '" + dir.string() +
                            "' may be written by others than forkyd's user: refused (make it "
                            "root's, mode 0750 or 0755)");
    if (::lstat(socket.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode))
        throw ConflictError("'" + socket.string() + "' exists and is no socket: refused");
}

std::atomic<bool> stopping{false};

} // namespace

int main(int argc, char** argv) {
    std::string config_file = default_config_file;
    bool check = false;
    bool verbose = false;
    bool version = false;
    CLI::App app{
        "forkyd: forky's service on a hypervisor host. It serves the forky.v1.Forky gRPC\n"
        "API (up, list, fork, snapshot, revert, remove, tree, gc, hosts, gpus, console,\n"
        "events) on a Unix socket, by default unix:///run/forky/forkyd.sock (owner root,\n"
        "group forky, mode 0660: a caller who cannot open it never reaches forky), and\n"
        "on TCP only with TLS (or on loopback). Server reflection is on: grpcurl -plaintext\n"
        "-unix /run/forky/forkyd.sock list. Runs in the foreground; systemd Type=notify.\n"
        "Exit codes: 0 ok, 2 usage, 3 bad configuration, 6 libvirt unreachable."};
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
        if (check) {
            std::cout << "forkyd: " << config.source.string() << " is valid (connect "
                      << config.connect << ", pool " << config.pool << ", " << config.listen.size()
                      << " listener(s))\n";
            return 0;
        }
        // Signals are taken by one thread (sigwait), never by the gRPC or libvirt threads.
        sigset_t signals;
        sigemptyset(&signals);
        sigaddset(&signals, SIGTERM);
        sigaddset(&signals, SIGINT);
        pthread_sigmask(SIG_BLOCK, &signals, nullptr);
        ::signal(SIGPIPE, SIG_IGN);

        init_event_loop();
        sd_notify(0, "STATUS=Connecting to libvirt");
        EventHub hub;
        ForkyService served(config, settings, hub, stopping);
        {
            HostOptions h = served.host_options();
            h.create_pool = true;
            Host host(h);
            host.pool(); // libvirt answers, and the pool is there
        }
        EventSource events(config.connect, hub);
        if (!events.wait_connected(10000))
            log->warn("libvirt's domain events are not flowing yet from '{}'", config.connect);

        const group* forky_group = ::getgrnam("forky");
        const gid_t gid = forky_group ? forky_group->gr_gid : 0;
        if (!forky_group)
            log->warn("No group 'forky' on this host: only root can use forkyd's socket");
        grpc::reflection::InitProtoReflectionServerBuilderPlugin();
        grpc::ServerBuilder builder;
        for (const auto& l : config.listen) {
            if (l.kind == Listen::Kind::unix_socket) {
                prepare_socket_dir(l.address, gid);
                builder.AddListeningPort(l.grpc_uri(), grpc::InsecureServerCredentials());
            } else if (config.tls) {
                grpc::SslServerCredentialsOptions ssl(
                    config.tls->client_ca.empty()
                        ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                        : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
                ssl.pem_key_cert_pairs.push_back(
                    {read_pem(config.tls->key), read_pem(config.tls->cert)});
                if (!config.tls->client_ca.empty())
                    ssl.pem_root_certs = read_pem(config.tls->client_ca);
                builder.AddListeningPort(l.grpc_uri(), grpc::SslServerCredentials(ssl));
            } else {
                builder.AddListeningPort(l.grpc_uri(),
                                         grpc::InsecureServerCredentials()); // loopback
            }
        }
        builder.RegisterService(&served);
        // The socket appears with mode 0660 (0600 without the group): never readable by
        // all, not even for a moment.
        const mode_t old_umask = ::umask(forky_group ? 0117 : 0177);
        std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
        ::umask(old_umask);
        if (!server)
            throw LibvirtError("forkyd could not listen on its addresses (in use? see above)", 0,
                               0);
        for (const auto& l : config.listen)
            if (l.kind == Listen::Kind::unix_socket) {
                if (::chown(l.address.c_str(), 0, gid) != 0 ||
                    ::chmod(l.address.c_str(), forky_group ? 0660 : 0600) != 0)
                    throw Error("Cannot set the owner and mode of '" + l.address + "'");
            }
        std::string where;
        for (const auto& l : config.listen)
            where += std::string(where.empty() ? "" : ", ") +
                     (l.kind == Listen::Kind::unix_socket ? "unix://" : "tcp://") + l.address;
        sd_notify(0, ("READY=1\nSTATUS=Serving " + config.connect + " on " + where).c_str());
        std::cerr << "forkyd: serving " << config.connect << " (pool " << config.pool << ") on "
                  << where << std::endl;

        int sig = 0;
        sigwait(&signals, &sig);
        stopping = true;
        sd_notify(0, "STOPPING=1\nSTATUS=Stopping: calls in flight finish or roll back");
        std::cerr << "forkyd: stopping (signal " << sig << ")" << std::endl;
        hub.close_all();
        server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(60));
        server->Wait();
        for (const auto& l : config.listen)
            if (l.kind == Listen::Kind::unix_socket)
                ::unlink(l.address.c_str());
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
