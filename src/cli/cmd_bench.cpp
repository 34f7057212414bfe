// forky bench -f SPEC: fork vs cold boot of the same guest, side by side in one run.
#include "commands.hpp"
#include "forky.hpp"
#include "json_out.hpp"
#include "remote.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>

namespace forky::cli {

namespace {

struct BenchCommand {
    std::string spec_file;
    std::string name = "forky-bench";
    std::vector<unsigned> counts{1, 4, 8};
    unsigned pool_size = 8;
    bool no_export = false;
    bool json = false;
};

std::string mib(std::uint64_t bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
    return buf;
}

std::string kib(std::uint64_t bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.0f KiB", static_cast<double>(bytes) / 1024);
    return buf;
}

// forky ls's listing, through libvirt (a connection of its own each time, as every forky
// command opens) against forkyd's API (--server): the median of 20 of each.
struct ApiRoundTrip {
    unsigned vms = 0;
    double direct_ms = 0;
    double api_ms = 0;
};

ApiRoundTrip measure_api(Context& ctx) {
    using Clock = std::chrono::steady_clock;
    const auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    };
    ApiRoundTrip a;
    Remote remote(ctx.options.server, ctx.cancel());
    remote.list(); // the channel connected
    std::vector<double> direct, api;
    for (int i = 0; i < 20; ++i) {
        auto t0 = Clock::now();
        HostOptions h = ctx.host().options();
        h.create_pool = false;
        Host fresh(h);
        a.vms = static_cast<unsigned>(vm_list(fresh).size());
        direct.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        t0 = Clock::now();
        remote.list();
        api.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    a.direct_ms = median(direct);
    a.api_ms = median(api);
    return a;
}

void print_api(const ApiRoundTrip& a) {
    std::printf("\nlisting %u VM(s), median of 20\n\n", a.vms);
    std::printf("%-44s %9.1f ms   1.00\n", "through libvirt (forky ls, new connection)",
                a.direct_ms);
    std::printf("%-44s %9.1f ms   %.2f x libvirt\n", "through forkyd's API (forky --server ls)",
                a.api_ms, a.api_ms / a.direct_ms);
}

Json api_json(const ApiRoundTrip& a) {
    return {{"vms", a.vms}, {"direct_ms", a.direct_ms}, {"api_ms", a.api_ms}};
}

Json ksm_round_json(const std::optional<KsmRound>& k) {
    if (!k)
        return Json(nullptr);
    return {{"children", k->count},
            {"settle_ms", static_cast<std::uint64_t>(k->settle_ms)},
            {"full_scans", k->full_scans},
            {"saved_bytes", k->saved_bytes},
            {"children_pss_bytes", k->children_pss_bytes},
            {"children_rss_bytes", k->children_rss_bytes}};
}

Json pool_json(const std::optional<PoolBench>& p) {
    if (!p)
        return Json(nullptr);
    return {{"size", p->size},
            {"refill_ms", static_cast<std::uint64_t>(p->refill_ms)},
            {"refill_children_per_s", p->refill_ms > 0 ? p->size * 1000.0 / p->refill_ms : 0.0},
            {"paused_rss_bytes", p->paused_rss_bytes},
            {"ksm", ksm_round_json(p->ksm)},
            {"acquire_call_ms", p->acquire_call_ms},
            {"acquire_print_ms", p->acquire_print_ms}};
}

Json export_json(const std::optional<ExportBench>& e) {
    if (!e)
        return nullptr;
    return {{"export_ms", static_cast<std::uint64_t>(e->export_ms)},
            {"export_bytes", e->export_bytes},
            {"import_print_ms", static_cast<std::uint64_t>(e->import_print_ms)},
            {"diff_blocks_ms", static_cast<std::uint64_t>(e->diff_blocks_ms)},
            {"diff_ms", e->diff_ms ? Json(static_cast<std::uint64_t>(*e->diff_ms)) : Json()},
            {"diff_appliance_ms", static_cast<std::uint64_t>(e->diff_appliance_ms)},
            {"diff_appliance_tcg", e->diff_tcg}};
}

Json report_json(const BenchReport& r) {
    Json rounds = Json::array();
    for (const auto& x : r.rounds)
        rounds.push_back(
            {{"children", x.count},
             {"fork_ms", static_cast<std::uint64_t>(x.fork_ms)},
             {"first_child_print_ms", static_cast<std::uint64_t>(x.first_child_print_ms)},
             {"snapshot_ms", static_cast<std::uint64_t>(x.snapshot_ms)},
             {"parent_downtime_ms", value_or_null(x.parent_downtime_ms)},
             {"memory_image_bytes", x.memory_image_bytes},
             {"child_disk_bytes", x.child_disk_bytes},
             {"header_bytes_per_child", x.header_bytes_per_child},
             {"children_rss_bytes", x.children_rss_bytes}});
    return Json({{"accel", r.domain_type == "kvm" ? "kvm" : "tcg"},
                 {"memory_bytes", r.memory_bytes},
                 {"cold_boot_ms", static_cast<std::uint64_t>(r.cold_boot_ms)},
                 {"parent_rss_bytes", r.parent_rss_bytes},
                 {"tick_period_ms", r.tick_period_ms},
                 {"rounds", rounds},
                 {"snapshot_ms", static_cast<std::uint64_t>(r.snapshot_ms)},
                 {"snapshot_paused_ms", value_or_null(r.snapshot_paused_ms)},
                 {"fork_from_snapshot_ms", static_cast<std::uint64_t>(r.fork_from_snapshot_ms)},
                 {"revert_ms", static_cast<std::uint64_t>(r.revert_ms)},
                 {"ksm", ksm_round_json(r.ksm)},
                 {"ksm_skipped", text_or_null(r.ksm_skipped)},
                 {"warm_pool", pool_json(r.pool)},
                 {"export", export_json(r.exported)}});
}

void print_table(const DomainSpec& spec, const BenchReport& r) {
    std::printf("\nforky bench: '%s' (%s), %s, %u vCPU, %s\n\n", spec.name.c_str(),
                spec.source.filename().c_str(), format_size(r.memory_bytes).c_str(), r.vcpus,
                r.domain_type == "kvm" ? "KVM" : "software emulation (TCG)");
    std::printf("%-44s %12s   %s\n", "measure", "value", "ratio (goal)");
    std::printf("%-44s %9.0f ms   1.00\n", "cold boot: forky up -> boot line", r.cold_boot_ms);
    const BenchRound* one = nullptr;
    for (const auto& x : r.rounds)
        if (x.count == 1)
            one = &x;
    if (one != nullptr) {
        std::printf("%-44s %9.0f ms   %.2f x cold boot (<= 0.10)\n",
                    "fork -> first child running and printing", one->first_child_print_ms,
                    one->first_child_print_ms / r.cold_boot_ms);
        std::printf("%-44s %9.0f ms   snapshot of the parent: %.0f ms\n",
                    "fork -> child running (forky fork returns)", one->fork_ms, one->snapshot_ms);
    }
    for (const auto& x : r.rounds) {
        std::string label = "fork into " + std::to_string(x.count) + " children, total";
        if (one != nullptr && x.count != 1)
            std::printf("%-44s %9.0f ms   %.2f x 1 child%s\n", label.c_str(), x.fork_ms,
                        x.fork_ms / one->fork_ms, x.count == 8 ? " (<= 3)" : "");
        else if (x.count != 1)
            std::printf("%-44s %9.0f ms\n", label.c_str(), x.fork_ms);
    }
    std::printf("%-44s %9.0f ms   %.2f x cold boot\n", "fork VM@SNAP -> child printing",
                r.fork_from_snapshot_ms, r.fork_from_snapshot_ms / r.cold_boot_ms);
    std::printf("%-44s %9.0f ms   %.2f x cold boot\n", "revert -> VM printing again", r.revert_ms,
                r.revert_ms / r.cold_boot_ms);
    std::printf("%-44s %9.0f ms\n", "snapshot (forky snapshot returns)", r.snapshot_ms);
    if (const auto& e = r.exported) {
        std::printf("%-44s %9.0f ms   %.2f x cold boot (%s)\n", "export of the running VM",
                    e->export_ms, e->export_ms / r.cold_boot_ms,
                    format_size(e->export_bytes).c_str());
        std::printf("%-44s %9.0f ms   %.2f x cold boot\n", "import -> copy printing",
                    e->import_print_ms, e->import_print_ms / r.cold_boot_ms);
        std::printf("%-44s %9.0f ms   %.3f x cold boot\n", "diff --blocks", e->diff_blocks_ms,
                    e->diff_blocks_ms / r.cold_boot_ms);
        if (e->diff_ms)
            std::printf("%-44s %9.0f ms   %.2f x cold boot (libguestfs %.0f ms, %s)\n",
                        "diff, file by file", *e->diff_ms, *e->diff_ms / r.cold_boot_ms,
                        e->diff_appliance_ms, e->diff_tcg ? "under emulation" : "KVM");
    }
    if (r.snapshot_paused_ms)
        std::printf("%-44s %9llu ms   (<= 50 ms)\n", "VM paused, snapshot",
                    static_cast<unsigned long long>(*r.snapshot_paused_ms));
    for (const auto& x : r.rounds) {
        std::string label = "parent paused, fork into " + std::to_string(x.count);
        if (x.parent_downtime_ms)
            std::printf("%-44s %9llu ms   (<= 50 ms)\n", label.c_str(),
                        static_cast<unsigned long long>(*x.parent_downtime_ms));
    }
    for (const auto& x : r.rounds) {
        std::string label = "disk per child (" + std::to_string(x.count) + " children)";
        std::printf("%-44s %12s   + %s header rewritten in place (<= 1 MiB)\n", label.c_str(),
                    kib(x.child_disk_bytes).c_str(), kib(x.header_bytes_per_child).c_str());
    }
    if (!r.rounds.empty())
        std::printf("%-44s %12s   written once per fork point, shared\n", "memory image",
                    mib(r.rounds.front().memory_image_bytes).c_str());
    std::printf("%-44s %12s   1.00\n", "resident memory: the booted guest",
                mib(r.parent_rss_bytes).c_str());
    for (const auto& x : r.rounds) {
        std::string label = "resident memory: " + std::to_string(x.count) + " children";
        std::printf("%-44s %12s   %.2f x one guest\n", label.c_str(),
                    mib(x.children_rss_bytes).c_str(),
                    static_cast<double>(x.children_rss_bytes) /
                        static_cast<double>(r.parent_rss_bytes ? r.parent_rss_bytes : 1));
    }
    if (r.ksm) {
        const KsmRound& k = *r.ksm;
        std::string label = "memory: " + std::to_string(k.count) + " children after KSM (PSS)";
        std::printf("%-44s %12s   %.2f x one guest (< 2)\n", label.c_str(),
                    mib(k.children_pss_bytes).c_str(),
                    static_cast<double>(k.children_pss_bytes) /
                        static_cast<double>(r.parent_rss_bytes ? r.parent_rss_bytes : 1));
        std::printf("%-44s %12s   settled in %.0f s, %llu full scans\n", "KSM saved (whole host)",
                    mib(k.saved_bytes).c_str(), k.settle_ms / 1000,
                    static_cast<unsigned long long>(k.full_scans));
    } else if (!r.ksm_skipped.empty()) {
        std::printf("%-44s %12s   %s\n", "memory after KSM", "-", r.ksm_skipped.c_str());
    }
    if (r.pool) {
        const PoolBench& p = *r.pool;
        const double one = static_cast<double>(r.parent_rss_bytes ? r.parent_rss_bytes : 1);
        std::printf("%-44s %9.1f ms   %.3f x cold boot (<= 0.02)\n",
                    "acquire from a warm pool -> child printing", p.acquire_print_ms,
                    p.acquire_print_ms / r.cold_boot_ms);
        std::printf("%-44s %9.1f ms   %.3f x cold boot\n", "acquire (the resume) returns",
                    p.acquire_call_ms, p.acquire_call_ms / r.cold_boot_ms);
        if (r.tick_period_ms > 0)
            std::printf("%-44s %9.1f ms   what 'printing' waits for at most after the resume\n",
                        "the guest's tick period", r.tick_period_ms);
        std::printf("%-44s %9.0f ms   %.1f children/s\n",
                    ("refill of " + std::to_string(p.size) + " ready children").c_str(),
                    p.refill_ms, p.refill_ms > 0 ? p.size * 1000.0 / p.refill_ms : 0.0);
        std::printf("%-44s %12s   %.2f x one guest\n",
                    ("memory: " + std::to_string(p.size) + " paused ready children").c_str(),
                    mib(p.paused_rss_bytes).c_str(), static_cast<double>(p.paused_rss_bytes) / one);
        if (p.ksm)
            std::printf("%-44s %12s   %.2f x one guest, settled in %.0f s\n",
                        ("memory: " + std::to_string(p.size) + " ready children after KSM").c_str(),
                        mib(p.ksm->children_pss_bytes).c_str(),
                        static_cast<double>(p.ksm->children_pss_bytes) / one,
                        p.ksm->settle_ms / 1000);
    }
}

void print_cross_host(const CrossHostReport& x) {
    std::printf("\nacross hosts: '%s' -> '%s' (fork of a stored snapshot, until the child "
                "prints)\n\n",
                x.from.c_str(), x.to.c_str());
    std::printf("%-44s %9.0f ms   1.00\n", "fork on the same host", x.same_host_ms);
    std::printf("%-44s %9.0f ms   %.2f x same host; shipping + same host: %.2f\n",
                "first fork to the other host", x.first_ms, x.first_ms / x.same_host_ms,
                (x.ship_ms + x.same_host_ms) / x.same_host_ms);
    std::printf("%-44s %9.0f ms   %.2f x same host (<= 1.3)\n", "later fork to the other host",
                x.later_ms, x.later_ms / x.same_host_ms);
    std::printf("%-44s %12s   %s at %.1f MiB/s (memory image %s)\n", "shipped by the first",
                mib(x.first_bytes).c_str(), x.ship_ms > 0 ? "" : "-",
                x.ship_ms > 0 ? static_cast<double>(x.first_bytes) / (1 << 20) / (x.ship_ms / 1000)
                              : 0.0,
                mib(x.memory_image_bytes).c_str());
    std::printf("%-44s %12s\n", "shipped by the later one", mib(x.later_bytes).c_str());
}

Json cross_host_json(const CrossHostReport& x) {
    return {{"from", x.from},
            {"to", x.to},
            {"same_host_ms", static_cast<std::uint64_t>(x.same_host_ms)},
            {"first_ms", static_cast<std::uint64_t>(x.first_ms)},
            {"later_ms", static_cast<std::uint64_t>(x.later_ms)},
            {"first_bytes_shipped", x.first_bytes},
            {"later_bytes_shipped", x.later_bytes},
            {"ship_ms", static_cast<std::uint64_t>(x.ship_ms)},
            {"memory_image_bytes", x.memory_image_bytes}};
}

void run_bench_command(const BenchCommand& cmd, Context& ctx) {
    DomainSpec spec = load_spec(cmd.spec_file);
    ctx.options.create_pool = true; // it runs `forky up`
    BenchOptions o;
    o.image_dirs = ctx.config().image_dirs;
    o.ctx = ctx.op_context();
    o.name = cmd.name;
    o.counts = cmd.counts;
    o.pool_size = cmd.pool_size;
    o.export_diff = !cmd.no_export;
    o.progress = [](const std::string& line) { std::fprintf(stderr, "bench: %s\n", line.c_str()); };
    if (!ctx.fleet_mode()) {
        std::optional<ApiRoundTrip> api;
        if (!ctx.options.server.empty())
            o.while_forked = [&] {
                o.progress("listing through libvirt and through forkyd's API");
                api = measure_api(ctx);
            };
        BenchReport r = run_bench(ctx.host(), spec, o);
        if (cmd.json) {
            Json j = report_json(r);
            j["api_list"] = api ? api_json(*api) : Json(nullptr);
            print_json(j);
            return;
        }
        print_table(spec, r);
        if (api)
            print_api(*api);
        return;
    }
    if (!ctx.options.server.empty())
        throw UsageError("forky bench --server compares listings on one host, not a fleet");
    // A fleet: the usual figures on its first host, then forks from it to the second.
    const auto& hosts = ctx.inventory().hosts;
    if (hosts.size() < 2)
        throw UsageError("forky bench with a host inventory compares forks across hosts: " +
                         ctx.inventory().source.string() + " lists " +
                         std::to_string(hosts.size()) + " host; it needs two");
    Host& a = ctx.host_named(hosts[0].name);
    Host& b = ctx.host_named(hosts[1].name);
    o.upload = true;
    BenchReport r = run_bench(a, spec, o);
    CrossHostReport x = run_cross_host_bench(a, hosts[0].name, b, hosts[1].name, spec, o);
    if (cmd.json) {
        Json j = report_json(r);
        j["across_hosts"] = cross_host_json(x);
        print_json(j);
        return;
    }
    print_table(spec, r);
    print_cross_host(x);
}

} // namespace

void setup_bench(CLI::App& app, Context& ctx) {
    auto cmd = std::make_shared<BenchCommand>();
    CLI::App* sub = app.add_subcommand(
        "bench",
        "Measure forks against a cold boot of the same guest, side by side in one run:\n"
        "boot time, fork-to-child-printing, parent pause, N children, disk written per child,\n"
        "resident memory. The guest must print FORKY-BOOT and FORKY-TICK lines on its\n"
        "console, as the test guest does. Everything it creates is removed afterwards.\n"
        "With a host inventory (--hosts FILE), the figures are taken on its first host,\n"
        "and forks from there to its second host are compared with a fork on the same\n"
        "host: the first fork of a fork point (all shipped) and a later one (its copy\n"
        "there), with MiB shipped and the rate.\n"
        "After the largest round KSM is turned on (a local hypervisor; the settings it found\n"
        "are put back) until its savings settle, and the children's memory is measured\n"
        "again (PSS: a page they share counted once).\n"
        "Then a warm pool of the stored snapshot (--pool-size children): its refill rate,\n"
        "the memory its paused children hold (and after KSM), and an acquire until the\n"
        "child prints, against the cold boot.\n"
        "Then an export of the running VM and its import until the copy prints, and diffs\n"
        "against its snapshot: --blocks, and file by file (libguestfs's appliance; only where\n"
        "the host is this machine). --no-export leaves them out.\n"
        "With --server (forkyd serving the same host), a listing through forkyd's API is\n"
        "timed against forky ls's own call to libvirt.\n"
        "Example: forky bench -f domains/tiny.yaml --counts 1,4,8\n"
        "         forky --hosts fleet.yaml bench -f domains/tiny.yaml --counts 1\n"
        "         forky --server unix:///run/forky/forkyd.sock bench -f domains/tiny.yaml");
    sub->add_option("-f,--file", cmd->spec_file, "YAML domain spec of the guest")->required();
    sub->add_option("--name", cmd->name, "name of the benchmark VM")->capture_default_str();
    sub->add_option("--counts", cmd->counts, "numbers of children to fork, one round each")
        ->delimiter(',')
        ->check(CLI::Range(1u, 256u));
    sub->add_option("--pool-size", cmd->pool_size,
                    "children of the warm pool measured (0: no warm pool)")
        ->capture_default_str()
        ->check(CLI::Range(0u, 64u));
    sub->add_flag("--no-export", cmd->no_export, "no export, import and diff figures");
    sub->add_flag("--json", cmd->json, "print the figures as JSON");
    sub->callback([cmd, &ctx] { run_bench_command(*cmd, ctx); });
}

} // namespace forky::cli
