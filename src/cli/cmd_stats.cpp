// forky stats [--json]: what KSM shares on the host, per family of forky's VMs and in all.
#include "commands.hpp"
#include "forky.hpp"
#include "json_out.hpp"
#include "remote.hpp"

#include <cstdio>
#include <memory>
#include <optional>

namespace forky::cli {

namespace {

struct StatsCommand {
    bool json = false;
    std::string host; // --host: this host of the fleet (default: its first)
};

void run_stats(const StatsCommand& cmd, Context& ctx) {
    Remote* remote = ctx.remote();
    std::optional<MemoryStats> got;
    if (remote) {
        got = remote->stats(cmd.host);
    } else {
        // Said before connecting: the figures are this machine's.
        Fleet& fleet = ctx.fleet();
        const std::string& host_name = fleet.host_or_first(cmd.host);
        require_local_uri(fleet.inventory().find(host_name)->uri);
        got = host_memory_stats(fleet.host(host_name));
    }
    const MemoryStats& s = *got;
    const std::uint64_t page = s.ksm.page_size;
    if (cmd.json) {
        Json families = Json::array();
        for (const auto& f : s.families)
            families.push_back({{"root", f.root},
                                {"vms", f.vms},
                                {"rss_bytes", f.rss_bytes},
                                {"merging_pages", f.merging_pages},
                                {"merged_bytes", f.merging_pages * page},
                                {"saved_bytes_estimate", f.saved_bytes}});
        print_json({{"ksm",
                     {{"available", s.ksm.available},
                      {"running", s.ksm.settings.run == 1},
                      {"tuned_by_forkyd", s.tuned_by_forkyd},
                      {"pages_to_scan", s.ksm.settings.pages_to_scan},
                      {"sleep_ms", s.ksm.settings.sleep_ms},
                      {"page_size", page},
                      {"pages_shared", s.ksm.pages_shared},
                      {"pages_sharing", s.ksm.pages_sharing},
                      {"saved_bytes", s.ksm.saved_bytes()}}},
                    {"families", families}});
        return;
    }
    if (!s.ksm.available) {
        std::printf("KSM: not in this kernel (no %s)\n", default_ksm_dir);
    } else {
        std::printf("KSM: %s%s (pages_to_scan %u, sleep_millisecs %u)\n",
                    s.ksm.settings.run == 1 ? "running" : "stopped",
                    s.tuned_by_forkyd ? ", turned on by forkyd while forks run" : "",
                    s.ksm.settings.pages_to_scan, s.ksm.settings.sleep_ms);
        std::printf("Host: %llu pages shared, %llu mapped onto them: %s saved\n",
                    static_cast<unsigned long long>(s.ksm.pages_shared),
                    static_cast<unsigned long long>(s.ksm.pages_sharing),
                    format_size(s.ksm.saved_bytes()).c_str());
    }
    if (s.families.empty()) {
        std::printf("No forky VM runs here\n");
        return;
    }
    std::printf("%-24s %-4s %-10s %-10s %s\n", "FAMILY", "VMS", "RESIDENT", "MERGED",
                "SAVED (est.)");
    for (const auto& f : s.families)
        std::printf("%-24s %-4zu %-10s %-10s %s\n", f.root.c_str(), f.vms.size(),
                    format_size(f.rss_bytes).c_str(), format_size(f.merging_pages * page).c_str(),
                    format_size(f.saved_bytes).c_str());
}

} // namespace

void setup_stats(CLI::App& app, Context& ctx) {
    auto cmd = std::make_shared<StatsCommand>();
    CLI::App* sub = app.add_subcommand(
        "stats",
        "Show what KSM (the kernel's same-page merging) shares: for the host, the pages\n"
        "shared and the memory saved; per family of forky's VMs (a VM and every VM forked\n"
        "from it), their QEMU processes' resident memory, the part KSM merged, and an\n"
        "estimate of what that saves (n VMs sharing a page save n - 1 copies). Children of\n"
        "one fork point start with identical memory, so KSM can merge most of it; forkyd\n"
        "turns KSM on while forks run (its ksm: settings).\n"
        "Read from this machine's /proc and /sys/kernel/mm/ksm: for another host, ask its\n"
        "forkyd (--server).\n"
        "Example: forky stats --json");
    sub->add_flag("--json", cmd->json, "print {ksm: {...}, families: [...]} as JSON");
    sub->add_option("--host", cmd->host,
                    "with a host inventory: this host, which must be this machine (default: its "
                    "first)");
    sub->callback([cmd, &ctx] { run_stats(*cmd, ctx); });
}

} // namespace forky::cli
