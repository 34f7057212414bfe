// forky revert VM SNAP [--discard]: the VM back at a snapshot, same name and UUID.
#include "commands.hpp"
#include "forky.hpp"
#include "json_out.hpp"
#include "remote.hpp"

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
    // VM NAME, VM@NAME, or VM VM@NAME.
    std::string vm = cmd.vm;
    std::string snap = cmd.snap;
    if (auto ref = parse_point_ref(cmd.vm)) {
        if (!snap.empty())
            throw UsageError("Write 'forky revert " + cmd.vm + "' or 'forky revert " + ref->vm +
                             " " + ref->name + "', not both");
        vm = ref->vm;
        snap = ref->name;
    } else if (auto in_snap = parse_point_ref(snap)) {
        if (in_snap->vm != vm)
            throw UsageError(forky::quoted(snap) + " is a snapshot of '" + in_snap->vm +
                             "', not of '" + vm + "'");
        snap = in_snap->name;
    }
    if (snap.empty())
        throw UsageError("Which snapshot? 'forky revert VM NAME' or 'forky revert VM@NAME' "
                         "(forky snapshots " +
                         vm + " lists them)");
    Remote* remote = ctx.remote();
    RevertResult r = remote ? remote->revert(vm, snap, cmd.discard, o.lock_wait)
                            : vm_revert(ctx.host_of(vm), vm, snap, o);
    if (cmd.json) {
        print_json({{"vm", vm},
                    {"reverted_to", r.to.label()},
                    {"kept", r.kept ? Json(r.kept->label()) : Json(nullptr)},
                    {"ms", static_cast<std::uint64_t>(r.ms)},
                    {"clock_not_set", r.clock_not_set}});
        return;
    }
    std::cout << "Reverted VM '" << vm << "' to '" << r.to.label() << "'";
    if (r.kept)
        std::cout << "; the state it left is kept as '" << r.kept->label() << "'";
    std::cout << '\n';
    std::fprintf(stderr, "Revert took %.0f ms\n", r.ms);
    print_clock_notes(r.clock_not_set);
}

} // namespace

void setup_revert(CLI::App& app, Context& ctx) {
    auto cmd = std::make_shared<RevertCommand>();
    CLI::App* sub = app.add_subcommand(
        "revert",
        "Put a VM back to one of its snapshots: the memory and disk state of that instant,\n"
        "under the same name and UUID. The state it leaves is kept as a snapshot\n"
        "(pre-revert-N) unless --discard. Children it has are not touched.\n"
        "Examples: forky revert web before-upgrade\n"
        "          forky revert web@before-upgrade");
    sub->add_option("vm", cmd->vm, "the VM, or VM@SNAPSHOT")->required();
    sub->add_option("snapshot", cmd->snap, "one of its snapshots (forky snapshots VM)");
    sub->add_flag("--discard", cmd->discard,
                  "do not keep the state the VM leaves (it cannot be brought back)");
    sub->add_option("--wait", cmd->wait_s, "seconds to wait while another operation runs")
        ->capture_default_str();
    sub->add_flag("--json", cmd->json, "print the result as JSON");
    sub->callback([cmd, &ctx] { run_revert(*cmd, ctx); });
}

} // namespace forky::cli
