// forky pin VM / forky unpin VM: keep a VM past its TTL, or let it expire again.
#include "commands.hpp"
#include "forky.hpp"
#include "remote.hpp"

#include <iostream>
#include <memory>

namespace forky::cli {

namespace {

struct PinCommand {
    std::string name;
};

void run_pin(const PinCommand& cmd, Context& ctx, bool pinned) {
    require_valid_name(cmd.name);
    Remote* remote = ctx.remote();
    const bool changed = remote ? remote->pin(cmd.name, pinned)
                                : vm_pin(ctx.host_of(cmd.name), cmd.name, pinned, ctx.cancel());
    std::cout << "VM '" << cmd.name << "' " << (changed ? "" : "was ") << (changed ? "is now " : "")
              << (pinned ? "pinned" : "unpinned") << (changed ? "" : " already") << '\n';
}

} // namespace

void setup_pin(CLI::App& app, Context& ctx) {
    for (const bool pinned : {true, false}) {
        auto cmd = std::make_shared<PinCommand>();
        CLI::App* sub = app.add_subcommand(
            pinned ? "pin" : "unpin",
            pinned ? "Keep a VM past its TTL (a spec's ttl:, or policies/ttl.yaml for children):\n"
                     "forkyd's reaper leaves a pinned VM alone; forky ls shows it pinned.\n"
                     "Example: forky pin web-3"
                   : "Let a pinned VM expire again at the end of its TTL (at once if it is past\n"
                     "it: forkyd's reaper removes it on its next round).");
        sub->add_option("vm", cmd->name, "name of the VM")->required();
        sub->callback([cmd, &ctx, pinned] { run_pin(*cmd, ctx, pinned); });
    }
}

} // namespace forky::cli
