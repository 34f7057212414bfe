// forky stop VM: ACPI shutdown, then power off after --timeout; --force powers off now.
#include "commands.hpp"
#include "forky.hpp"
#include "remote.hpp"

#include <iostream>
#include <memory>

namespace forky::cli {

namespace {

struct StopCommand {
    std::string name;
    bool force = false;
    unsigned timeout_s = 10;
    unsigned wait_s = 120;
};

void run_stop(const StopCommand& cmd, Context& ctx) {
    require_valid_name(cmd.name);
    StopOptions options;
    options.force = cmd.force;
    options.timeout = std::chrono::seconds(cmd.timeout_s);
    options.lock_wait = std::chrono::seconds(cmd.wait_s);
    options.cancel = ctx.cancel();
    Remote* remote = ctx.remote();
    if (remote ? remote->stop(cmd.name, options)
               : vm_stop(ctx.host_of(cmd.name), cmd.name, options))
        std::cout << "Stopped VM '" << cmd.name << "'\n";
    else
        std::cout << "VM '" << cmd.name << "' was not running\n";
}

} // namespace

void setup_stop(CLI::App& app, Context& ctx) {
    auto cmd = std::make_shared<StopCommand>();
    CLI::App* sub = app.add_subcommand(
        "stop", "Stop one of forky's VMs: ask the guest to shut down (ACPI), power it off if\n"
                "it has not within --timeout seconds. Its disks and console log stay.\n"
                "Waits while another forky operation (a fork, say) runs on the VM. Domains\n"
                "that forky did not make are refused: stop them with virsh.");
    sub->add_option("vm", cmd->name, "name of the VM")->required();
    sub->add_flag("--force", cmd->force, "power off at once, as pulling the plug");
    sub->add_option("--timeout", cmd->timeout_s, "seconds to wait for the guest")
        ->capture_default_str();
    sub->add_option("--wait", cmd->wait_s, "seconds to wait while another operation runs")
        ->capture_default_str();
    sub->callback([cmd, &ctx] { run_stop(*cmd, ctx); });
}

} // namespace forky::cli
