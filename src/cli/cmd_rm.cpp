// forky rm VM... | VM@SNAP... [--recursive]: undefine VMs and delete their own volumes, or
// remove snapshots (never a base image, never a layer that something else still needs).
#include "commands.hpp"
#include "forky.hpp"
#include "remote.hpp"

#include <iostream>
#include <memory>
#include <set>
#include <utility>

namespace forky::cli {

namespace {

struct RmCommand {
    std::vector<std::string> names;
    bool force = false;
    bool recursive = false;
};

void print_recursive(const RecursiveRemoveResult& r) {
    for (const auto& vm : r.removed_vms)
        std::cout << "Removed VM '" << vm << "'\n";
    for (const auto& p : r.removed_points)
        std::cout << "Removed snapshot '" << p << "'\n";
    std::cout << "Deleted " << r.deleted.size() << " volume(s)\n";
}

void run_rm(const RmCommand& cmd, Context& ctx) {
    for (const auto& name : cmd.names)
        if (!parse_point_ref(name))
            require_valid_name(name);
    HistoryOptions o;
    o.ctx = ctx.op_context();
    Remote* remote = ctx.remote();
    for (const auto& name : cmd.names) {
        if (parse_point_ref(name)) {
            if (cmd.recursive)
                throw UsageError("--recursive removes a VM and its family, not a snapshot ('" +
                                 name + "')");
            RemoveSnapshotResult r =
                remote ? remote->remove_snapshot(name)
                       : vm_remove_snapshot(ctx.host_of(name.substr(0, name.find('@'))), name, o);
            std::cout << "Removed snapshot '" << name << "' and " << r.deleted.size()
                      << " volume(s)\n";
            continue;
        }
        if (cmd.recursive && remote) {
            RemoteRecursiveRemove r = remote->remove_recursive(name);
            for (const auto& [h, vm] : r.elsewhere)
                std::cout << "Removed VM '" << vm << "' on host '" << h << "'\n";
            print_recursive(r.result);
            continue;
        }
        if (cmd.recursive) {
            std::string host_name;
            Host& host = ctx.host_of(name, &host_name);
            // Its family on other hosts first (each with its own family there).
            for (const auto& [h, child] : ctx.fleet().children_elsewhere(host_name, name)) {
                RecursiveRemoveResult c = vm_remove_recursive(ctx.host_named(h), child, o);
                for (const auto& vm : c.removed_vms)
                    std::cout << "Removed VM '" << vm << "' on host '" << h << "'\n";
            }
            print_recursive(vm_remove_recursive(host, name, o));
            continue;
        }
        RemoveResult r = remote ? remote->remove(name, cmd.force)
                                : vm_remove(ctx.host_of(name), name, cmd.force, ctx.cancel());
        std::cout << "Removed VM '" << name << "'";
        if (!r.deleted.empty())
            std::cout << " and " << r.deleted.size() << " volume(s)";
        std::cout << '\n';
        for (const auto& kept : r.kept)
            std::cout << "  kept " << kept << '\n';
    }
}

} // namespace

void setup_rm(CLI::App& app, Context& ctx) {
    auto cmd = std::make_shared<RmCommand>();
    CLI::App* sub = app.add_subcommand(
        "rm", "Remove VMs: undefine them and delete their own overlays and console logs.\n"
              "Base images are never touched; a layer another VM or a kept snapshot needs is\n"
              "kept. Their snapshots stay until removed: 'forky rm VM@NAME' (refused while VMs\n"
              "forked from it exist, naming them), or everything with --recursive.\n"
              "Examples: forky rm web-3 web-4\n"
              "          forky rm web@before-upgrade\n"
              "          forky rm web --recursive");
    sub->add_option("vm", cmd->names, "VMs, or snapshots as VM@NAME")->required();
    sub->add_flag("-f,--force", cmd->force, "stop a running VM first");
    sub->add_flag("-r,--recursive", cmd->recursive,
                  "the VM, its snapshots and every VM descended from it (running or not)");
    sub->callback([cmd, &ctx] { run_rm(*cmd, ctx); });
}

} // namespace forky::cli
