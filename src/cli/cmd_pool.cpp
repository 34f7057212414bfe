// forky pool create|ls|resize|rm|refill, forky acquire, forky release: warm pools,
// children of a snapshot restored and paused before they are asked for.
#include "commands.hpp"
#include "forky.hpp"
#include "json_out.hpp"
#include "remote.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

extern char** environ;

namespace forky::cli {

namespace {

struct PoolCommand {
    std::string name;
    std::string from;
    unsigned size = 0;
    std::string host;
    bool spread = false;
    bool json = false;
    unsigned wait_s = 0;
    std::string new_name;
    bool no_refill = false;
    std::vector<std::string> vms;
};

// What a refill forks with: the caller's Ctrl-C, the quota and TTL policies.
ForkOptions refill_options(Context& ctx) {
    ForkOptions o;
    o.ctx = ctx.op_context();
    o.lock_wait = std::chrono::minutes(10);
    load_fork_policies(o, env_or("FORKY_POLICIES", default_policies_dir));
    return o;
}

void print_refill(const std::string& name, const RefillResult& r) {
    for (const auto& why : r.placement)
        std::fprintf(stderr, "placement: %s\n", why.c_str());
    for (const auto& c : r.made)
        std::cout << c << '\n';
    // Removed: stale children (resumed or stopped behind forky's back) and ready ones above
    // the size; a refill may do both and make others in one go.
    std::fprintf(stderr, "Warm pool '%s': %u ready, %zu made", name.c_str(), r.ready_before,
                 r.made.size());
    if (!r.removed.empty())
        std::fprintf(stderr, ", %zu removed (stale, or above its size)", r.removed.size());
    std::fprintf(stderr, "\n");
}

void run_create(const PoolCommand& cmd, Context& ctx) {
    WarmPool pool;
    pool.name = cmd.name;
    pool.source = cmd.from;
    pool.size = cmd.size;
    pool.host = cmd.host;
    pool.spread = cmd.spread;
    pool.created_at = utc_now_rfc3339();
    // Filled before it returns, so that it is ready then.
    if (Remote* remote = ctx.remote())
        print_refill(cmd.name, remote->pool_create(pool));
    else
        print_refill(cmd.name,
                     warm_pool_make(ctx.fleet(), pool, ctx.placement(), refill_options(ctx)));
}

std::string format_pool_size(std::uint64_t bytes) {
    return bytes == 0 ? "-" : format_size(bytes);
}

void run_ls(const PoolCommand& cmd, Context& ctx) {
    std::vector<std::string> unreachable;
    Remote* remote = ctx.remote();
    const auto pools = remote ? remote->pool_list(&unreachable)
                              : list_warm_pools(ctx.fleet(), /*with_memory=*/true, &unreachable);
    bool fleet = !remote && ctx.fleet_mode();
    for (const auto& p : pools)
        fleet = fleet || p.host_name != "default";
    if (cmd.json) {
        Json out = Json::array();
        for (const auto& p : pools) {
            Json ready = Json::array();
            for (const auto& c : p.ready)
                ready.push_back(
                    {{"name", c.name}, {"host", c.host_name}, {"rss_bytes", c.rss_bytes}});
            out.push_back(
                {{"name", p.pool.name},
                 {"from", p.pool.source},
                 {"host", p.host_name},
                 {"size", p.pool.size},
                 {"ready", p.ready.size()},
                 {"children", ready},
                 {"held", p.held},
                 {"stale", p.stale},
                 {"snapshot_missing", p.snapshot_missing},
                 {"memory_bytes", p.memory_bytes},
                 {"placement", p.pool.spread ? Json("spread") : text_or_null(p.pool.host)},
                 {"declared", p.pool.declared},
                 {"created_at", p.pool.created_at}});
        }
        print_json(out);
    } else {
        std::printf("%-20s %-28s %5s %5s %10s%s\n", "NAME", "FROM", "SIZE", "READY", "MEMORY",
                    fleet ? "  HOST" : "");
        for (const auto& p : pools)
            std::printf("%-20s %-28s %5u %5zu %10s%s%s\n", p.pool.name.c_str(),
                        p.pool.source.c_str(), p.pool.size, p.ready.size(),
                        format_pool_size(p.memory_bytes).c_str(), fleet ? "  " : "",
                        fleet ? p.host_name.c_str() : "");
    }
    for (const auto& p : pools) {
        if (p.snapshot_missing)
            std::fprintf(stderr,
                         "warning: the snapshot of warm pool '%s', '%s', is gone: its refills "
                         "fail (forky pool rm removes the pool)\n",
                         p.pool.name.c_str(), p.pool.source.c_str());
        if (p.held > 0)
            std::fprintf(stderr,
                         "note: %u child(ren) of warm pool '%s' held by an operation (those of "
                         "a killed one: forky gc)\n",
                         p.held, p.pool.name.c_str());
        if (p.stale > 0)
            std::fprintf(stderr,
                         "note: %u child(ren) of warm pool '%s' resumed or stopped behind "
                         "forky's back: the next refill removes them\n",
                         p.stale, p.pool.name.c_str());
    }
    for (const auto& u : unreachable)
        std::fprintf(stderr, "%s\n", u.c_str());
    if (!unreachable.empty())
        throw LibvirtError(std::to_string(unreachable.size()) + " host(s) did not answer", 0, 0);
}

void run_resize(const PoolCommand& cmd, Context& ctx) {
    if (Remote* remote = ctx.remote())
        print_refill(cmd.name, remote->pool_resize(cmd.name, cmd.size));
    else
        print_refill(cmd.name, warm_pool_resize(ctx.fleet(), cmd.name, cmd.size, ctx.placement(),
                                                refill_options(ctx)));
}

void run_rm(const PoolCommand& cmd, Context& ctx) {
    Remote* remote = ctx.remote();
    const PoolRemoved r = remote ? remote->pool_remove(cmd.name)
                                 : warm_pool_remove(ctx.fleet(), cmd.name, ctx.cancel());
    std::fprintf(stderr, "Removed warm pool '%s' and %zu ready child(ren)%s\n", cmd.name.c_str(),
                 r.removed, r.removed < r.ready ? " (the others were being handed out)" : "");
    if (r.declared)
        std::fprintf(stderr,
                     "note: policies/pools.yaml declares '%s': forkyd makes it again unless "
                     "the declaration goes too\n",
                     cmd.name.c_str());
}

void run_refill(const PoolCommand& cmd, Context& ctx) {
    if (Remote* remote = ctx.remote())
        print_refill(cmd.name, remote->pool_refill(cmd.name));
    else
        print_refill(cmd.name,
                     warm_pool_refill(ctx.fleet(), cmd.name, ctx.placement(), refill_options(ctx)));
}

// `forky pool refill NAME` in its own session, detached (stdio on /dev/null): the refill
// after an acquire, which must not delay the acquire's answer.
void start_background_refill(const std::string& name, const Context& ctx) {
    std::vector<std::string> args{"forky"};
    const GlobalOptions& g = ctx.options;
    if (g.uri_named)
        args.insert(args.end(), {"--connect", g.uri});
    args.insert(args.end(), {"--pool", g.pool, "--pool-dir", g.pool_dir});
    if (g.config_named)
        args.insert(args.end(), {"--config", g.config});
    if (g.hosts_named)
        args.insert(args.end(), {"--hosts", g.hosts});
    if (g.placement_named)
        args.insert(args.end(), {"--placement", g.placement});
    args.insert(args.end(), {"pool", "refill", name});
    std::vector<char*> argv;
    for (auto& a : args)
        argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t files;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&files);
    for (int fd = 0; fd <= 2; ++fd)
        posix_spawn_file_actions_addopen(&files, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0);
    // Nothing else of the caller's: a pipe it inherited would keep a reader of the
    // caller's output (forky acquire | cat) waiting for the refill.
    posix_spawn_file_actions_addclosefrom_np(&files, 3);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, "/proc/self/exe", &files, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&files);
    posix_spawnattr_destroy(&attr);
    if (rc != 0)
        std::fprintf(stderr,
                     "warning: could not start the refill of warm pool '%s' (forky pool refill "
                     "%s does it): %s\n",
                     name.c_str(), name.c_str(), std::strerror(rc));
}

void print_acquired(const PoolCommand& cmd, const Acquired& got);

void run_acquire(const PoolCommand& cmd, Context& ctx) {
    Acquired got;
    Remote* remote = ctx.remote();
    if (remote) {
        // forkyd refills the pool behind it.
        got = remote->acquire(cmd.name, cmd.new_name, cmd.wait_s);
    } else if (!cmd.new_name.empty()) {
        ForkOptions o = refill_options(ctx);
        o.lock_wait = std::chrono::seconds(120);
        got = warm_pool_acquire_as(ctx.fleet(), cmd.name, cmd.new_name, o);
    } else {
        // An empty pool that is waited for is refilled now (and again after: the
        // refill started now may have counted the child this call then took).
        got = warm_pool_acquire(ctx.fleet(), cmd.name, std::chrono::seconds(cmd.wait_s),
                                ctx.cancel(), [&] {
                                    if (cmd.wait_s > 0 && !cmd.no_refill)
                                        start_background_refill(cmd.name, ctx);
                                });
    }
    if (!cmd.new_name.empty())
        std::fprintf(stderr,
                     "note: libvirt renames only shut-off domains, so '%s' was restored from "
                     "the pool's snapshot (a fork, not a resume); its ready children stay "
                     "ready\n",
                     cmd.new_name.c_str());
    print_acquired(cmd, got);
    if (!remote && cmd.new_name.empty() && !cmd.no_refill)
        start_background_refill(cmd.name, ctx);
}

void print_acquired(const PoolCommand& cmd, const Acquired& got) {
    if (cmd.json) {
        Json ports = Json::array();
        for (const auto& p : got.ports)
            ports.push_back({{"guest", p.guest}, {"host", p.host}});
        print_json({{"name", got.name},
                    {"pool", cmd.name},
                    {"host", got.host_name},
                    {"ports", ports},
                    {"clock_not_set", value_or_null(got.clock_not_set)}});
    } else {
        std::cout << got.name << '\n';
        for (const auto& p : got.ports)
            std::fprintf(stderr, "port %u of '%s' is localhost:%u\n", p.guest, got.name.c_str(),
                         p.host);
    }
    std::cout.flush();
}

void run_release(const PoolCommand& cmd, Context& ctx) {
    for (const auto& vm : cmd.vms) {
        require_valid_name(vm);
        Remote* remote = ctx.remote();
        const std::string pool =
            remote ? remote->release(vm) : warm_pool_release(ctx.fleet(), vm, ctx.cancel());
        std::fprintf(stderr, "Released '%s' (from warm pool '%s')\n", vm.c_str(), pool.c_str());
    }
}

} // namespace

void setup_pool(CLI::App& app, Context& ctx) {
    auto cmd = std::make_shared<PoolCommand>();
    CLI::App* pool = app.add_subcommand(
        "pool", "Warm pools: children of a snapshot restored and paused before anyone asks, so\n"
                "'forky acquire' hands one out with a resume (milliseconds) instead of a restore.\n"
                "A pool lives on its snapshot's host, recorded in forky's storage pool; its ready\n"
                "children are ordinary forky VMs (paused, named POOL-N) that forky ls shows.\n"
                "Pools declared in policies/pools.yaml are kept filled by forkyd, which refills\n"
                "every pool (every 2 s, and at once after an acquire through it).\n"
                "Examples: forky snapshot web seeded\n"
                "          forky pool create sandbox --from web@seeded --size 8\n"
                "          forky pool ls\n"
                "          forky acquire sandbox");
    pool->require_subcommand(1);

    CLI::App* create = pool->add_subcommand(
        "create", "Make a warm pool of SIZE children of the snapshot VM@SNAP, and fill it (prints "
                  "the children made).");
    create->add_option("name", cmd->name, "the pool's name (its children are NAME-N)")->required();
    create->add_option("--from", cmd->from, "the snapshot, VM@SNAP")->required();
    create->add_option("--size", cmd->size, "children kept ready")
        ->required()
        ->check(CLI::Range(0u, max_warm_pool_size));
    create->add_option("--host", cmd->host,
                       "with a host inventory: the host its children run on (the snapshot "
                       "travels there once)");
    create->add_flag("--spread", cmd->spread,
                     "with a host inventory: the placement policy spreads its children");
    create->callback([cmd, &ctx] { run_create(*cmd, ctx); });

    CLI::App* ls = pool->add_subcommand(
        "ls", "List warm pools: snapshot, size, children ready, the memory they hold (their "
              "QEMUs' resident memory).");
    ls->alias("list");
    ls->add_flag("--json", cmd->json, "print a JSON array instead of a table");
    ls->callback([cmd, &ctx] { run_ls(*cmd, ctx); });

    CLI::App* resize = pool->add_subcommand(
        "resize", "Change how many children a pool keeps ready: the missing ones are made, "
                  "ready ones above the size removed (those handed out are not touched).");
    resize->add_option("name", cmd->name, "the pool")->required();
    resize->add_option("size", cmd->size, "children kept ready")
        ->required()
        ->check(CLI::Range(0u, max_warm_pool_size));
    resize->callback([cmd, &ctx] { run_resize(*cmd, ctx); });

    CLI::App* rm = pool->add_subcommand(
        "rm", "Remove a warm pool and its ready children (children handed out stay: forky "
              "release removes them).");
    rm->add_option("name", cmd->name, "the pool")->required();
    rm->callback([cmd, &ctx] { run_rm(*cmd, ctx); });

    CLI::App* refill = pool->add_subcommand(
        "refill", "Bring a pool to its size now (what acquire starts in the background, and "
                  "forkyd does every round). Prints the children made.");
    refill->add_option("name", cmd->name, "the pool")->required();
    refill->callback([cmd, &ctx] { run_refill(*cmd, ctx); });

    CLI::App* acquire = app.add_subcommand(
        "acquire",
        "Hand out a ready child of a warm pool: resume it and print its name. It is then an\n"
        "ordinary VM (its lineage names the snapshot; its TTL runs from now), never handed\n"
        "out twice, also with many clients at once. A refill starts in the background\n"
        "(detached: 'forky pool ls' shows its progress, 'forky pool refill' its errors;\n"
        "through forkyd, --server, forkyd refills).\n"
        "Each child has its own name, UUID, VM generation ID, disk and user-mode network;\n"
        "all share the snapshot's MAC address and in-guest state (random pools, clock): a\n"
        "guest should reseed on a VM generation ID change (Linux 5.18+) and correct its\n"
        "clock (NTP); with a guest agent (guest_agent: true) forky sets the clock.\n"
        "Exit status 5 when the pool is empty (--wait waits for a refill).\n"
        "Examples: vm=$(forky acquire sandbox)\n"
        "          forky acquire sandbox --wait 30 --json");
    acquire->add_option("pool", cmd->name, "the warm pool")->required();
    acquire->add_option("--name", cmd->new_name,
                        "the child's name: restored from the snapshot under it now (libvirt "
                        "renames only shut-off domains: a fork, not a resume)");
    acquire
        ->add_option("--wait", cmd->wait_s,
                     "seconds to wait for a ready child when the pool is empty (default 0)")
        ->check(CLI::Range(0u, 3600u));
    acquire->add_flag("--no-refill", cmd->no_refill,
                      "start no refill (forkyd's, or a later 'forky pool refill', does it)");
    acquire->add_flag("--json", cmd->json, "print a JSON object: name, host, ports");
    acquire->callback([cmd, &ctx] { run_acquire(*cmd, ctx); });

    CLI::App* release = app.add_subcommand(
        "release", "Remove children a warm pool handed out (as forky rm does; refuses other VMs).\n"
                   "Example: forky release sandbox-3");
    release->add_option("vm", cmd->vms, "the children")->required();
    release->callback([cmd, &ctx] { run_release(*cmd, ctx); });
}

} // namespace forky::cli
