// forky hosts [--json]: the fleet, as each host reports itself.
#include "commands.hpp"
#include "forky.hpp"
#include "json_out.hpp"
#include "remote.hpp"

#include <cstdio>
#include <memory>

namespace forky::cli {

namespace {

struct HostsCommand {
    bool json = false;
    unsigned timeout_s = 15;
};

std::string labels_text(const std::map<std::string, std::string>& labels) {
    std::string s;
    for (const auto& [k, v] : labels)
        s += (s.empty() ? "" : ",") + k + "=" + v;
    return s.empty() ? "-" : s;
}

void run_hosts(const HostsCommand& cmd, Context& ctx) {
    Remote* remote = ctx.remote();
    const auto reports =
        remote ? remote->hosts()
               : survey_hosts(ctx.inventory(), std::chrono::seconds(cmd.timeout_s), ctx.cancel());
    unsigned down = 0;
    for (const auto& r : reports)
        down += r.reachable ? 0 : 1;
    // After the listing: exit 6 when a host did not answer, so scripts can tell.
    auto report_down = [&] {
        if (down > 0)
            throw LibvirtError(std::to_string(down) + " of " + std::to_string(reports.size()) +
                                   (reports.size() == 1 ? " host" : " hosts") + " did not answer",
                               0, 0);
    };
    if (cmd.json) {
        Json out = Json::array();
        for (const auto& r : reports) {
            Json labels = Json::object();
            for (const auto& [k, v] : r.entry.labels)
                labels[k] = v;
            Json h = {{"name", r.entry.name},
                      {"uri", r.entry.uri},
                      {"pool", r.entry.pool},
                      {"labels", labels},
                      {"max_forks", value_or_null(r.entry.max_forks)},
                      {"reachable", r.reachable},
                      {"problem", text_or_null(r.problem)}};
            if (r.reachable) {
                h["hostname"] = r.hostname;
                h["libvirt_version"] = r.libvirt_version;
                h["qemu_version"] = text_or_null(r.qemu_version);
                h["cpus"] = r.cpus;
                h["memory_bytes"] = r.memory_bytes;
                h["memory_free_bytes"] = r.memory_free_bytes;
                h["forky_vms"] = r.forky_vms;
                h["forky_vms_running"] = r.forky_vms_running;
                h["fork_points"] = r.fork_points;
                h["pool_exists"] = r.pool_exists;
                h["pool_free_bytes"] = r.pool_exists ? Json(r.pool_free_bytes) : Json(nullptr);
            }
            out.push_back(std::move(h));
        }
        print_json(out);
        report_down();
        return;
    }
    std::printf("%-12s %-5s %-8s %-7s %-4s %-17s %-9s %-11s %-10s %s\n", "HOST", "UP", "LIBVIRT",
                "QEMU", "CPUS", "MEMORY FREE", "VMS", "FORK POINTS", "POOL FREE", "LABELS");
    for (const auto& r : reports) {
        if (!r.reachable) {
            std::printf("%-12s %-5s %s (%s)\n", r.entry.name.c_str(), "no", r.problem.c_str(),
                        r.entry.uri.c_str());
            continue;
        }
        const std::string memory =
            format_size(r.memory_free_bytes) + " / " + format_size(r.memory_bytes);
        const std::string vms =
            std::to_string(r.forky_vms_running) + "/" + std::to_string(r.forky_vms) + " run";
        std::printf("%-12s %-5s %-8s %-7s %-4u %-17s %-9s %-11u %-10s %s\n", r.entry.name.c_str(),
                    "yes", r.libvirt_version.c_str(),
                    r.qemu_version.empty() ? "-" : r.qemu_version.c_str(), r.cpus, memory.c_str(),
                    vms.c_str(), r.fork_points,
                    r.pool_exists ? format_size(r.pool_free_bytes).c_str() : "no pool",
                    labels_text(r.entry.labels).c_str());
        if (!r.problem.empty() && r.pool_exists)
            std::printf("%-12s       %s\n", "", r.problem.c_str());
    }
    report_down();
}

} // namespace

void setup_hosts(CLI::App& app, Context& ctx) {
    auto cmd = std::make_shared<HostsCommand>();
    CLI::App* sub = app.add_subcommand(
        "hosts",
        "The fleet: for each host of the inventory, whether it answers (and why not), its\n"
        "libvirt and QEMU versions, CPUs, free memory, forky's VMs (running/all) and fork\n"
        "points in its pool, and the pool's free space. Hosts are asked side by side; one\n"
        "that does not answer within --timeout is reported, not waited for.\n"
        "The inventory is /etc/forky/hosts.yaml, or --hosts FILE, or $FORKY_HOSTS:\n"
        "  hosts:\n"
        "    - name: a\n"
        "      uri: qemu+tls://a.example.org/system\n"
        "      pool: forky          # optional, default forky\n"
        "      labels: {rack: r1}   # optional\n"
        "      max_forks: 64        # optional\n"
        "Without one, the fleet is the one host of --connect (named 'default').\n"
        "Exits 6 (after the listing) when a host did not answer. Asking changes nothing on\n"
        "the hosts (a stopped pool is reported, not started).");
    sub->add_flag("--json", cmd->json, "print a JSON array, one object per host");
    sub->add_option("--timeout", cmd->timeout_s, "seconds to wait for each host")
        ->capture_default_str()
        ->check(CLI::Range(1, 3600));
    sub->callback([cmd, &ctx] { run_hosts(*cmd, ctx); });
}

} // namespace forky::cli
