// forky: fork running VMs through libvirt. Parses, calls libforky, prints; errors map to
// the exit codes below in exactly one place.
#include "commands.hpp"
#include "forky.hpp"
#include "log.hpp"
#include "remote.hpp"

#include <atomic>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>

namespace forky::cli {

void print_clock_notes(const std::vector<std::string>& clock_not_set) {
    if (clock_not_set.empty())
        return;
    for (const auto& c : clock_not_set)
        std::fprintf(stderr, "note: clock not set for %s\n", c.c_str());
    std::fprintf(stderr, "note: a guest's clock goes on from the moment its fork point was "
                         "frozen until the guest corrects it (NTP); with a guest agent "
                         "('guest_agent: true' in the spec, qemu-guest-agent in the guest) "
                         "forky sets it\n");
}

namespace {
std::atomic<bool> interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free, "set from a signal handler");
} // namespace

Context::Context() = default;
Context::~Context() = default;

Remote* Context::remote() {
    if (options.server.empty())
        return nullptr;
    const char* chooser = options.uri_named         ? "--connect"
                          : options.hosts_named     ? "--hosts (or FORKY_HOSTS)"
                          : options.placement_named ? "--placement (or FORKY_PLACEMENT)"
                          : options.pool_named      ? "--pool, --pool-dir or --create-pool"
                                                    : nullptr;
    if (chooser != nullptr)
        throw UsageError(std::string(chooser) +
                         " with --server: forkyd's configuration says "
                         "which hypervisor and pool it serves (leave out one or the other)");
    if (!remote_)
        remote_ = std::make_unique<Remote>(options.server, cancel());
    return remote_.get();
}

// A command forkyd does not serve, asked through it.
void not_served(const char* what, const Context& ctx) {
    throw UsageError("forky " + std::string(what) + " is not served through forkyd (--server " +
                     ctx.options.server + "); run it on the host, without --server");
}

Fleet& Context::fleet() {
    if (!fleet_) {
        Inventory hosts = inventory();
        if (!fleet_mode()) // --connect's host alone
            hosts = one_host_inventory(options.uri, options.pool);
        // Connected when first asked for, with the options as they are then (forky up
        // sets create_pool before it connects).
        fleet_.emplace(std::move(hosts), [this](const HostEntry& e) {
            HostOptions h;
            h.uri = e.uri;
            h.pool = e.pool;
            h.pool_dir = options.pool_dir;
            h.create_pool = options.create_pool;
            return h;
        });
    }
    return *fleet_;
}

Host& Context::host() {
    if (!fleet_mode())
        return fleet().host("default");
    if (!host_) { // --connect's default URI beside an inventory (up --print-xml)
        HostOptions h;
        h.uri = options.uri;
        h.pool = options.pool;
        h.pool_dir = options.pool_dir;
        h.create_pool = options.create_pool;
        host_.emplace(std::move(h));
    }
    return *host_;
}

const Config& Context::config() {
    if (!config_)
        config_ = load_config(options.config, options.config_named);
    return *config_;
}

const Inventory& Context::inventory() {
    if (!inventory_) {
        inventory_ = load_inventory(options.hosts, options.hosts_named);
        if (inventory_->hosts.empty())
            inventory_->hosts = one_host_inventory(options.uri, options.pool).hosts;
    }
    return *inventory_;
}

bool Context::fleet_mode() {
    return !options.uri_named && !inventory().source.empty();
}

std::set<std::string> Context::names_elsewhere(const std::string& except) {
    return fleet().names_elsewhere(except);
}

const std::string& Context::require_host(const std::string& name) {
    return fleet().require_host(name);
}

Host& Context::host_named(const std::string& name) {
    return fleet_mode() ? fleet().host(name) : host();
}

Host& Context::host_of(const std::string& vm, std::string* host_name) {
    return fleet().host_of(vm, host_name);
}

const PlacementPolicy& Context::placement() {
    if (!placement_) {
        if (options.placement_named && !std::filesystem::exists(options.placement))
            throw NotFoundError("No placement policy at '" + options.placement +
                                "' (named by --placement or FORKY_PLACEMENT)");
        placement_ = load_placement_policy(options.placement);
    }
    return *placement_;
}

ProgressFn progress_line(std::string what) {
    if (!::isatty(STDERR_FILENO))
        return {};
    struct State {
        std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
        std::uint64_t total = 0;
        bool shown = false;
    };
    auto st = std::make_shared<State>();
    return [st, what](std::uint64_t done, std::uint64_t total) {
        if (total != st->total) { // the next volume
            st->start = std::chrono::steady_clock::now();
            st->total = total;
        }
        const double s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - st->start).count();
        if (s < 0.5 && !st->shown)
            return; // a moment: no bar
        st->shown = true;
        const double rate = s > 0 ? static_cast<double>(done) / s : 0;
        const double left = rate > 0 ? static_cast<double>(total - done) / rate : 0;
        const int width = 24;
        const int filled = total > 0 ? static_cast<int>(width * done / total) : width;
        std::fprintf(stderr, "\r%s [%s%s] %s of %s, %s/s, %.0f s left   ", what.c_str(),
                     std::string(static_cast<std::size_t>(filled), '#').c_str(),
                     std::string(static_cast<std::size_t>(width - filled), '.').c_str(),
                     format_size(done).c_str(), format_size(total).c_str(),
                     format_size(static_cast<std::uint64_t>(rate)).c_str(), left);
        if (done >= total) {
            std::fprintf(stderr, "\n");
            st->shown = false;
        }
    };
}

CancelToken Context::cancel() const {
    return CancelToken(&interrupted);
}

OpContext Context::op_context() const {
    OpContext ctx;
    ctx.cancel = cancel();
    ctx.faults = faults_from_environment(); // the test seam
    return ctx;
}

const char* env_or(const char* name, const char* fallback) {
    const char* v = std::getenv(name);
    return (v != nullptr && *v != '\0') ? v : fallback;
}

namespace {

// The command list of forky --help gives each command's first sentence; forky CMD --help
// (and the man page, built from both) has the whole text with its examples.
class SummaryFormatter : public CLI::Formatter {
public:
    std::string make_subcommand(const CLI::App* sub) const override {
        std::string text = sub->get_description();
        std::size_t end = std::min(text.find(". "), text.find(".\n"));
        if (end != std::string::npos)
            text.resize(end + 1);
        std::string wrapped; // words again, in lines of at most 70 columns
        std::istringstream words(text);
        std::size_t column = 0;
        for (std::string word; words >> word; column += word.size()) {
            if (column > 0 && column + 1 + word.size() > 70) {
                wrapped += '\n';
                column = 0;
            } else if (column > 0) {
                wrapped += ' ';
                ++column;
            }
            wrapped += word;
        }
        text = wrapped;
        std::stringstream out;
        CLI::detail::format_help(out, sub->get_display_name(true), text, 28);
        return out.str();
    }
};

constexpr const char* exit_codes_help = R"(Exit codes:
  0    success
  1    internal error (a bug: please report it)
  2    bad command line or invalid VM name
  3    invalid spec file (the message names file, line and key)
  4    not found: no such VM, volume or pool
  5    conflict: name already taken, VM in the wrong state, resource in use
  6    libvirt failed or refused (connection, API call)
  7    storage pool or volume failure
  130  interrupted

Environment:
  FORKY_URI         libvirt URI used when --connect is not given (default qemu:///system)
  FORKY_POOL        storage pool used when --pool is not given (default forky)
  FORKY_POOL_DIR    directory of the pool when forky creates it (default /var/lib/forky)
  FORKY_CONFIG      forky's settings when --config is not given (default
                    /etc/forky/forky.yaml)
  FORKY_HOSTS       the host inventory when --hosts is not given (default
                    /etc/forky/hosts.yaml)
  FORKY_PLACEMENT   the placement policy when --placement is not given
                    (default /etc/forky/placement.yaml; missing: the defaults)
  FORKY_POLICIES    the folder of ttl.yaml and quotas.yaml (default /etc/forky/policies;
                    a file missing there: no such rule)
  FORKY_SERVER      forkyd's address when --server is not given (empty: libvirt directly)
  FORKY_SERVER_CA   for --server tcp://: the CA that signed forkyd's certificate
  FORKY_SERVER_CERT, FORKY_SERVER_KEY
                    this client's certificate and key, when forkyd asks for one
  FORKY_GPU_POLICY  what children of a VM with GPUs get when --gpu-policy is not given
                    (default /etc/forky/policies/gpu.yaml; missing: no GPU)

Ctrl-C (or SIGTERM) undoes what the command had done and exits 130.
)";

int run(int argc, char** argv) {
    Context ctx;
    ctx.options.uri = env_or("FORKY_URI", default_uri);
    ctx.options.pool = env_or("FORKY_POOL", default_pool);
    ctx.options.pool_dir = env_or("FORKY_POOL_DIR", default_pool_dir);
    ctx.options.config = env_or("FORKY_CONFIG", default_config_path);
    ctx.options.config_named = ctx.options.config != default_config_path;
    ctx.options.hosts = env_or("FORKY_HOSTS", default_hosts_file);
    ctx.options.hosts_named = ctx.options.hosts != default_hosts_file;
    ctx.options.placement = env_or("FORKY_PLACEMENT", default_placement_file);
    ctx.options.placement_named = ctx.options.placement != default_placement_file;
    ctx.options.server = env_or("FORKY_SERVER", "");

    CLI::App app{"forky forks virtual machines the way fork(2) forks processes: a running VM\n"
                 "becomes children that carry on from its memory and disk. Every forky VM is\n"
                 "an ordinary libvirt domain. 'forky COMMAND --help' gives a command's whole\n"
                 "description, options and examples.",
                 "forky"};
    app.footer(exit_codes_help);
    app.formatter(std::make_shared<SummaryFormatter>());
    app.set_version_flag("--version", "forky " FORKY_VERSION, "print the version and exit");
    app.require_subcommand(1);
    app.fallthrough(); // global options also after the subcommand: forky gc --pool x
    app.add_option("-c,--connect", ctx.options.uri,
                   "libvirt URI of the hypervisor (that host alone, even with an inventory)")
        ->capture_default_str()
        ->each([&ctx](const std::string&) { ctx.options.uri_named = true; });
    app.add_option("--pool", ctx.options.pool, "libvirt storage pool for forky's volumes")
        ->capture_default_str()
        ->each([&ctx](const std::string&) { ctx.options.pool_named = true; });
    app.add_option("--pool-dir", ctx.options.pool_dir,
                   "where the pool lives when forky has to create it")
        ->capture_default_str()
        ->each([&ctx](const std::string&) { ctx.options.pool_named = true; });
    app.add_flag("--create-pool", ctx.options.create_pool,
                 "create the pool if it does not exist (forky up always may)")
        ->each([&ctx](const std::string&) { ctx.options.pool_named = true; });
    app.add_option("--config", ctx.options.config,
                   "forky's settings (image_dirs: where specs may take images from)")
        ->capture_default_str()
        ->each([&ctx](const std::string&) { ctx.options.config_named = true; });
    app.add_option("--hosts", ctx.options.hosts,
                   "the host inventory (forky hosts --help shows its form)")
        ->capture_default_str()
        ->each([&ctx](const std::string&) { ctx.options.hosts_named = true; });
    app.add_option("--placement", ctx.options.placement,
                   "the placement policy for --spread and up/fork --host")
        ->capture_default_str()
        ->each([&ctx](const std::string&) { ctx.options.placement_named = true; });
    app.add_option("--server", ctx.options.server,
                   "ask forkyd at this address instead of libvirt (unix:///run/forky/forkyd.sock "
                   "or tcp://ADDR:PORT); same output and exit codes")
        ->check(CLI::Validator(
            [](const std::string& v) {
                return v.empty() ? std::string("--server names forkyd's address; leave it out "
                                               "to use libvirt directly")
                                 : std::string();
            },
            "URI"));
    app.add_flag("-v,--verbose", ctx.options.verbosity, "more logging (-vv for debug)");
    app.parse_complete_callback([&ctx] {
        set_log_level(ctx.options.verbosity >= 2   ? spdlog::level::debug
                      : ctx.options.verbosity == 1 ? spdlog::level::info
                                                   : spdlog::level::warn);
    });

    setup_up(app, ctx);
    setup_ls(app, ctx);
    setup_logs(app, ctx);
    setup_stop(app, ctx);
    setup_rm(app, ctx);
    setup_fork(app, ctx);
    setup_snapshot(app, ctx);
    setup_snapshots(app, ctx);
    setup_revert(app, ctx);
    setup_squash(app, ctx);
    setup_tree(app, ctx);
    setup_gc(app, ctx);
    setup_bench(app, ctx);
    setup_hosts(app, ctx);
    setup_gpus(app, ctx);
    setup_pin(app, ctx);
    setup_stats(app, ctx);
    setup_pool(app, ctx);
    setup_diff(app, ctx);
    setup_export(app, ctx);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        // Help (exit 0) prints the help of the subcommand asked about.
        int rc = app.exit(e);
        return rc == 0 ? 0 : static_cast<int>(ExitCode::usage);
    }
    return 0;
}

} // namespace
} // namespace forky::cli

int main(int argc, char** argv) {
    // Ctrl-C and SIGTERM: the command at hand undoes its work and exits 130. A lost
    // libvirt connection is an error to handle, never a silent death by SIGPIPE.
    std::signal(SIGINT, [](int) { forky::cli::interrupted = true; });
    std::signal(SIGTERM, [](int) { forky::cli::interrupted = true; });
    std::signal(SIGPIPE, SIG_IGN);
    try {
        return forky::cli::run(argc, argv);
    } catch (const forky::InterruptedError& e) {
        std::cerr << "forky: " << e.what() << '\n';
        return static_cast<int>(e.code());
    } catch (const forky::Error& e) {
        std::cerr << "forky: error: " << e.what() << '\n';
        return static_cast<int>(e.code());
    } catch (const std::exception& e) {
        std::cerr << "forky: internal error: " << e.what() << '\n';
        return static_cast<int>(forky::ExitCode::internal);
    }
}
