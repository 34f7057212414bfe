// forky snapshots VM [--json]: a VM's snapshots and fork points, and what depends on each.
#include "commands.hpp"
#include "forky.hpp"
#include "json_out.hpp"

#include <cstdio>
#include <iostream>
#include <memory>

namespace forky::cli {

namespace {

struct SnapshotsCommand {
    std::string vm;
    bool json = false;
};

std::string joined(const std::vector<std::string>& items) {
    std::string out;
    for (const auto& i : items)
        out += (out.empty() ? "" : ",") + i;
    return out.empty() ? "-" : out;
}

void run_snapshots(const SnapshotsCommand& cmd, Context& ctx) {
    if (!ctx.options.server.empty())
        not_served("snapshots", ctx);
    std::string host_name;
    Host& host = ctx.host_of(cmd.vm, &host_name);
    const auto list = vm_snapshots(host, cmd.vm);
    if (cmd.json) {
        Json out = Json::array();
        for (const auto& s : list) {
            Json layers = Json::object();
            for (const auto& [target, layer] : s.point.layers)
                layers[target] = layer;
            out.push_back({{"name", s.point.name},
                           {"snapshot", s.point.label()},
                           {"id", s.point.id},
                           {"kind", to_string(s.point.kind)},
                           {"vm", s.point.vm},
                           {"vm_uuid", s.point.vm_uuid},
                           {"created_at", s.point.created_at},
                           {"state", to_string(s.point.state)},
                           {"memory_image", text_or_null(s.point.memory_image)},
                           {"layers", layers},
                           {"disk_bytes", s.disk_bytes},
                           {"children", s.children},
                           {"dependants", s.dependants},
                           {"host", host_name}});
        }
        print_json(out);
        return;
    }
    std::printf("%-20s %-10s %-20s %-8s %-9s %-24s %s\n", "NAME", "KIND", "CREATED", "STATE",
                "SIZE", "CHILDREN", "DEPENDANTS");
    for (const auto& s : list)
        std::printf("%-20s %-10s %-20s %-8s %-9s %-24s %s\n", s.point.name.c_str(),
                    to_string(s.point.kind), s.point.created_at.c_str(),
                    s.point.state == VmState::shut_off ? "off" : to_string(s.point.state),
                    format_size(s.disk_bytes).c_str(), joined(s.children).c_str(),
                    joined(s.dependants).c_str());
    if (list.empty())
        std::cout << "VM '" << cmd.vm << "' has no snapshots or fork points\n";
}

} // namespace

void setup_snapshots(CLI::App& app, Context& ctx) {
    auto cmd = std::make_shared<SnapshotsCommand>();
    CLI::App* sub = app.add_subcommand(
        "snapshots",
        "List a VM's snapshots and fork points, oldest first: kind (snapshot, fork,\n"
        "pre-revert), time, the VM's state then, size on disk (memory image and frozen\n"
        "layers), the VMs forked from each, and what else depends on it (later snapshots\n"
        "and VMs whose disks it backs). Works for a removed VM whose snapshots were kept.");
    sub->alias("snapshot-list");
    sub->add_option("vm", cmd->vm, "the VM")->required();
    sub->add_flag("--json", cmd->json, "print a JSON array");
    sub->callback([cmd, &ctx] { run_snapshots(*cmd, ctx); });
}

} // namespace forky::cli
