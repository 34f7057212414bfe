// forky squash VM [--keep N]: a shorter disk chain for a VM with many snapshots.
#include "commands.hpp"
#include "forky.hpp"
#include "json_out.hpp"

#include <iostream>
#include <memory>

namespace forky::cli {

namespace {

struct SquashCommand {
    std::string vm;
    int keep = -1;
    unsigned wait_s = 120;
    bool json = false;
};

void run_squash(const SquashCommand& cmd, Context& ctx) {
    if (!ctx.options.server.empty())
        not_served("squash", ctx);
    SquashOptions o;
    if (cmd.keep >= 0)
        o.keep = static_cast<unsigned>(cmd.keep);
    o.lock_wait = std::chrono::seconds(cmd.wait_s);
    o.ctx = ctx.op_context();
    SquashResult r = vm_squash(ctx.host_of(cmd.vm), cmd.vm, o);
    if (cmd.json) {
        print_json({{"vm", cmd.vm},
                    {"depth_before", r.depth_before},
                    {"depth_after", r.depth_after},
                    {"merged", r.merged},
                    {"removed_snapshots", r.removed_points},
                    {"deleted_volumes", r.deleted}});
        return;
    }
    for (const auto& [target, before] : r.depth_before)
        std::cout << "disk " << target << ": " << before << " layers -> " << r.depth_after[target]
                  << '\n';
    for (const auto& p : r.removed_points)
        std::cout << "removed snapshot " << p << '\n';
    for (const auto& v : r.merged)
        std::cout << "merged layer " << v << '\n';
    for (const auto& v : r.deleted)
        std::cout << "deleted volume " << v << '\n';
    if (r.merged.empty())
        std::cout << "Nothing to squash: every layer below the top is needed\n";
}

} // namespace

void setup_squash(CLI::App& app, Context& ctx) {
    auto cmd = std::make_shared<SquashCommand>();
    CLI::App* sub = app.add_subcommand(
        "squash",
        "Shorten a running VM's disk chains: the layers above the newest one something\n"
        "still needs (a kept snapshot, a VM forked from it, another disk backed by it) are\n"
        "merged into the VM's top (libvirt's block pull, which writes only the VM's own\n"
        "top layer) and freed. Reports each disk's depth before and after.\n"
        "Example: forky squash web --keep 2");
    sub->add_option("vm", cmd->vm, "the VM (running)")->required();
    sub->add_option("--keep", cmd->keep,
                    "keep only the N newest snapshots; older ones nothing was forked from go")
        ->check(CLI::Range(0, 1000000));
    sub->add_option("--wait", cmd->wait_s, "seconds to wait while another operation runs")
        ->capture_default_str();
    sub->add_flag("--json", cmd->json, "print the result as JSON");
    sub->callback([cmd, &ctx] { run_squash(*cmd, ctx); });
}

} // namespace forky::cli
