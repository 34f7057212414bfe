// forky revert VM SNAP [--discard]: the VM back at a snapshot, same name and UUID.
#include "commands.hpp"
#include "forky.hpp"
#include "json_out.hpp"

#include <cstdio>
#include <iostream>
#include <memory>

namespace forky::cli {

namespace {

struct RevertCommand {
    std::string vm;
    std::string snap;
    bool discard = false;
    unsigned wait_s = 120;
    bool json = false;
};

void run_revert(const RevertCommand& cmd, Context& ctx) {
    RevertOptions o;
    o.discard = cmd.discard;
    o.lock_wait = std::chrono::seconds(cmd.wait_s);
    o.ctx = ctx.op_context();
    RevertResult r = vm_revert(ctx.host(), cmd.vm, cmd.snap, o);
    if (cmd.json) {
        print_json({{"vm", cmd.vm},
                    {"reverted_to", r.to.label()},
                    {"kept", r.kept ? Json(r.kept->label()) : Json(nullptr)},
                    {"ms", static_cast<std::uint64_t>(r.ms)}});
        return;
    }
    std::cout << "Reverted VM '" << cmd.vm << "' to '" << r.to.label() << "'";
    if (r.kept)
        std::cout << "; the state it left is kept as '" << r.kept->label() << "'";
    std::cout << '\n';
    std::fprintf(stderr, "Revert took %.0f ms\n", r.ms);
}

} // namespace

void setup_revert(CLI::App& app, Context& ctx) {
    auto cmd = std::make_shared<RevertCommand>();
    CLI::App* sub = app.add_subcommand(
        "revert",
        "Put a VM back to one of its snapshots: the memory and disk state of that instant,\n"
        "under the same name and UUID. The state it leaves is kept as a snapshot\n"
        "(pre-revert-N) unless --discard. Children it has are not touched.\n"
        "Example: forky revert web before-upgrade");
    sub->add_option("vm", cmd->vm, "the VM")->required();
    sub->add_option("snapshot", cmd->snap, "one of its snapshots (forky snapshots VM)")->required();
    sub->add_flag("--discard", cmd->discard,
                  "do not keep the state the VM leaves (it cannot be brought back)");
    sub->add_option("--wait", cmd->wait_s, "seconds to wait while another operation runs")
        ->capture_default_str();
    sub->add_flag("--json", cmd->json, "print the result as JSON");
    sub->callback([cmd, &ctx] { run_revert(*cmd, ctx); });
}

} // namespace forky::cli
