// forky rm VM: undefine the VM and delete its own volumes (never a base image, never a
// layer that something else still needs).
#include "commands.hpp"
#include "names.hpp"
#include "vm.hpp"

#include <iostream>
#include <memory>

namespace forky::cli {

namespace {

struct RmCommand {
    std::vector<std::string> names;
    bool force = false;
};

void run_rm(const RmCommand& cmd, Context& ctx) {
    for (const auto& name : cmd.names)
        require_valid_name(name);
    for (const auto& name : cmd.names) {
        RemoveResult r = vm_remove(ctx.host(), name, cmd.force, ctx.cancel());
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
              "Base images are never touched; a layer another VM needs is kept.");
    sub->add_option("vm", cmd->names, "names of the VMs")->required();
    sub->add_flag("-f,--force", cmd->force, "stop a running VM first");
    sub->callback([cmd, &ctx] { run_rm(*cmd, ctx); });
}

} // namespace forky::cli
