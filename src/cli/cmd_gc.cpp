// forky gc: reclaim fork points nothing depends on and undo operations that were killed.
#include "commands.hpp"
#include "forky.hpp"
#include "json_out.hpp"
#include "remote.hpp"

#include <iostream>
#include <memory>

namespace forky::cli {

namespace {

struct GcCommand {
    bool dry_run = false;
    bool json = false;
    std::string host; // --host: only this host of the fleet
};

void print_list(const char* what, const std::vector<std::string>& items) {
    for (const auto& i : items)
        std::cout << what << ' ' << i << '\n';
}

Json result_json(const GcCommand& cmd, const GcResult& r) {
    return {{"dry_run", cmd.dry_run},
            {"removed_domains", r.removed_domains},
            {"resumed_domains", r.resumed_domains},
            {"deleted_volumes", r.deleted_volumes},
            {"released_locks", r.released_locks},
            {"busy", r.busy},
            {"refused", r.refused},
            {"problems", r.problems},
            {"reattached_gpus", r.reattached_gpus},
            {"removed_mdevs", r.removed_mdevs}};
}

void print_result(const GcCommand& cmd, const GcResult& r);

// Each host's collection, or why it could not be done, printed alike whether forky
// collected them itself or forkyd did.
struct HostGc {
    std::string host;
    GcResult result;
    std::string error;
};

void print_fleet(const GcCommand& cmd, const std::vector<HostGc>& hosts) {
    Json all = Json::array();
    unsigned failed = 0;
    for (const auto& h : hosts) {
        if (!h.error.empty()) {
            ++failed;
            if (cmd.json)
                all.push_back({{"host", h.host}, {"error", h.error}});
            else
                std::cerr << "forky: host '" << h.host << "': " << h.error << '\n';
            continue;
        }
        if (cmd.json) {
            Json j = result_json(cmd, h.result);
            j["host"] = h.host;
            j["error"] = nullptr;
            all.push_back(std::move(j));
        } else {
            std::cout << "host " << h.host << ":\n";
            print_result(cmd, h.result);
        }
    }
    if (cmd.json)
        print_json({{"hosts", all}});
    if (failed > 0)
        throw LibvirtError(std::to_string(failed) + " of " + std::to_string(hosts.size()) +
                               " hosts could not be collected (run gc again once they answer)",
                           0, 0);
}

void run_gc(const GcCommand& cmd, Context& ctx) {
    GcOptions o;
    o.dry_run = cmd.dry_run;
    if (Remote* remote = ctx.remote()) {
        RemoteGc r = remote->gc(cmd.dry_run, cmd.host);
        if (r.fleet) {
            std::vector<HostGc> hosts;
            for (auto& h : r.hosts)
                hosts.push_back({h.host, std::move(h.result), h.error});
            print_fleet(cmd, hosts);
        } else if (cmd.json) {
            print_json(result_json(cmd, r.result));
        } else {
            print_result(cmd, r.result);
        }
        return;
    }
    if (!ctx.fleet_mode()) {
        if (!cmd.host.empty())
            throw UsageError("--host names a host of the inventory, and there is none ('forky "
                             "hosts --help' shows its form)");
        GcResult r = collect_garbage(ctx.host(), o);
        if (cmd.json)
            print_json(result_json(cmd, r));
        else
            print_result(cmd, r);
        return;
    }
    // Across the fleet, host after host (or the one --host names).
    std::vector<std::string> names;
    if (!cmd.host.empty())
        names.push_back(ctx.require_host(cmd.host));
    else
        for (const auto& h : ctx.inventory().hosts)
            names.push_back(h.name);
    std::vector<HostGc> hosts;
    for (const auto& name : names) {
        try {
            hosts.push_back({name, collect_garbage(ctx.host_named(name), o), ""});
        } catch (const InterruptedError&) {
            throw;
        } catch (const Error& e) {
            hosts.push_back({name, {}, e.what()});
        }
    }
    print_fleet(cmd, hosts);
}

void print_result(const GcCommand& cmd, const GcResult& r) {
    print_list(cmd.dry_run ? "would remove domain" : "removed domain", r.removed_domains);
    print_list(cmd.dry_run ? "would resume domain" : "resumed domain", r.resumed_domains);
    print_list(cmd.dry_run ? "would reattach GPU of" : "reattached GPU of", r.reattached_gpus);
    print_list(cmd.dry_run ? "would remove mediated device" : "removed mediated device",
               r.removed_mdevs);
    print_list(cmd.dry_run ? "would delete volume" : "deleted volume", r.deleted_volumes);
    print_list(cmd.dry_run ? "would release lock" : "released lock", r.released_locks);
    print_list("busy, left alone:", r.busy);
    print_list("not acted on:", r.refused);
    print_list("problem:", r.problems);
    if (r.removed_domains.empty() && r.resumed_domains.empty() && r.deleted_volumes.empty() &&
        r.reattached_gpus.empty() && r.removed_mdevs.empty() && r.released_locks.empty() &&
        r.busy.empty() && r.refused.empty())
        std::cout << "Nothing to collect\n";
}

} // namespace

void setup_gc(CLI::App& app, Context& ctx) {
    auto cmd = std::make_shared<GcCommand>();
    CLI::App* sub = app.add_subcommand(
        "gc", "Reclaim what nothing needs any more: memory images and frozen layers of fork\n"
              "points whose last dependant is gone, and everything a killed forky left (its\n"
              "journal in the pool says what, including half-made children).\n"
              "Operations still running are left alone. A journal is evidence, not an order:\n"
              "gc removes only VMs that carry forky's lineage for that very operation, and\n"
              "reports journals that do not parse without acting on them. It resumes a\n"
              "parent that a killed --cold fork left paused, and reports (as 'problem:')\n"
              "what it cannot mend: a layer or memory image deleted behind forky's back.");
    sub->add_flag("--dry-run", cmd->dry_run, "only say what would go");
    sub->add_option("--host", cmd->host,
                    "with a host inventory: only this host (default: every host of the fleet)");
    sub->add_flag("--json", cmd->json,
                  "print the result as JSON (with an inventory: {hosts: [{host, ...}]})");
    sub->callback([cmd, &ctx] { run_gc(*cmd, ctx); });
}

} // namespace forky::cli
