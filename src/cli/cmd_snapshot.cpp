// forky snapshot VM [NAME]: a named snapshot (memory and disk) that is kept until removed.
#include "commands.hpp"
#include "forky.hpp"
#include "json_out.hpp"
#include "remote.hpp"

#include <cstdio>
#include <iostream>
#include <memory>

namespace forky::cli {

namespace {

struct SnapshotCommand {
    std::string vm;
    std::string name;
    bool name_given = false;
    unsigned wait_s = 120;
    bool json = false;
};

void run_snapshot(const SnapshotCommand& cmd, Context& ctx) {
    HistoryOptions o;
    o.lock_wait = std::chrono::seconds(cmd.wait_s);
    o.ctx = ctx.op_context();
    if (cmd.name_given && cmd.name.empty())
        throw UsageError("The snapshot's name is empty; leave it out for the default (snapN)");
    Remote* remote = ctx.remote();
    SnapshotResult r = remote ? remote->snapshot(cmd.vm, cmd.name, o.lock_wait)
                              : vm_snapshot(ctx.host_of(cmd.vm), cmd.vm, cmd.name, o);
    if (cmd.json) {
        print_json({{"snapshot", r.point.label()},
                    {"id", r.point.id},
                    {"memory_image", text_or_null(r.point.memory_image)},
                    {"paused_ms", value_or_null(r.paused_ms)},
                    {"ms", static_cast<std::uint64_t>(r.ms)}});
        return;
    }
    std::cout << r.point.label() << '\n';
    std::fprintf(stderr, "Snapshot '%s' taken in %.0f ms", r.point.label().c_str(), r.ms);
    if (r.paused_ms)
        std::fprintf(stderr, " (VM paused %llu ms)", static_cast<unsigned long long>(*r.paused_ms));
    else if (r.point.memory_image.empty())
        std::fprintf(stderr, " (disks only: the VM is off)");
    std::fprintf(stderr, "\n");
}

} // namespace

void setup_snapshot(CLI::App& app, Context& ctx) {
    auto cmd = std::make_shared<SnapshotCommand>();
    CLI::App* sub = app.add_subcommand(
        "snapshot",
        "Take a named snapshot of a VM: its memory and disks at one instant (of a VM that is\n"
        "off, its disks). The VM keeps running, paused only for the final switch-over. The\n"
        "snapshot is kept until 'forky rm VM@NAME'; children can be forked from it at any\n"
        "time ('forky fork VM@NAME'), and the VM reverted to it ('forky revert VM NAME').\n"
        "virsh snapshot-list shows it too. Prints VM@NAME.\n"
        "Example: forky snapshot web before-upgrade");
    sub->add_option("vm", cmd->vm, "the VM")->required();
    sub->add_option("name", cmd->name, "the snapshot's name (default: snapN)")
        ->each([cmd](const std::string&) { cmd->name_given = true; });
    sub->add_option("--wait", cmd->wait_s, "seconds to wait while another operation runs")
        ->capture_default_str();
    sub->add_flag("--json", cmd->json, "print the result as JSON");
    sub->callback([cmd, &ctx] { run_snapshot(*cmd, ctx); });
}

} // namespace forky::cli
