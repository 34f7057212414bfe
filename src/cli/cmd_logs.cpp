// forky logs VM [--follow]: the VM's serial console, read through the storage API so it
// works against a remote host too.
#include "commands.hpp"
#include "forky.hpp"
#include "remote.hpp"

#include <chrono>
#include <iostream>
#include <memory>
#include <thread>

namespace forky::cli {

namespace {

struct LogsCommand {
    std::string name;
    bool follow = false;
};

void run_logs(const LogsCommand& cmd, Context& ctx) {
    require_valid_name(cmd.name);
    if (Remote* remote = ctx.remote()) {
        try {
            remote->console(cmd.name, cmd.follow, [](const std::string& data, bool restarted) {
                if (restarted)
                    std::cout
                        << "\n--- console log was truncated or rotated; reading it anew ---\n";
                std::cout << data << std::flush;
            });
        } catch (const InterruptedError&) {
            throw InterruptedError("stopped following the console of '" + cmd.name + "'");
        }
        return;
    }
    Host& host = ctx.host_of(cmd.name);
    VolumeChunk chunk = vm_console(host, cmd.name, 0);
    std::cout << chunk.data << std::flush;
    if (!cmd.follow)
        return;
    const CancelToken cancel = ctx.cancel();
    while (!cancel.requested()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        try {
            chunk = vm_console(host, cmd.name, chunk.next_offset);
        } catch (const NotFoundError&) {
            return; // the VM (or its log) was removed: nothing more will come
        }
        if (chunk.restarted)
            std::cout << "\n--- console log was truncated or rotated; reading it anew ---\n";
        std::cout << chunk.data << std::flush;
    }
    // Ctrl-C is how following ends: exit 130, as every interrupted command does.
    throw InterruptedError("stopped following the console of '" + cmd.name + "'");
}

} // namespace

void setup_logs(CLI::App& app, Context& ctx) {
    auto cmd = std::make_shared<LogsCommand>();
    CLI::App* sub =
        app.add_subcommand("logs", "Print a VM's serial console log (every boot, appended).\n"
                                   "Example: forky logs tiny --follow");
    sub->add_option("vm", cmd->name, "name of the VM")->required();
    sub->add_flag("-f,--follow", cmd->follow, "keep printing new output until Ctrl-C");
    sub->callback([cmd, &ctx] { run_logs(*cmd, ctx); });
}

} // namespace forky::cli
