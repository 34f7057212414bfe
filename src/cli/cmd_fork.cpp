// forky fork VM [--count N] [--cold] [--prefix P]: children that carry on from VM's memory.
#include "commands.hpp"
#include "forky.hpp"
#include "json_out.hpp"

#include <cstdio>
#include <iostream>
#include <memory>

namespace forky::cli {

namespace {

struct ForkCommand {
    std::string parent;
    unsigned count = 1;
    bool cold = false;
    bool keep_paused = false;
    bool children_paused = false;
    std::string prefix;
    unsigned wait_s = 120;
    bool json = false;
};

void run_fork(const ForkCommand& cmd, Context& ctx) {
    ForkOptions o;
    o.count = cmd.count;
    o.cold = cmd.cold;
    o.keep_paused = cmd.keep_paused;
    o.children_paused = cmd.children_paused;
    o.prefix = cmd.prefix;
    o.lock_wait = std::chrono::seconds(cmd.wait_s);
    // Ctrl-C: finish the step at hand, undo, exit 130.
    o.ctx = ctx.op_context();
    ForkResult r = vm_fork(ctx.host(), cmd.parent, o);
    if (cmd.json) {
        print_json({{"parent", r.parent},
                    {"fork_point", r.fork_point},
                    {"children", r.children},
                    {"parent_downtime_ms", value_or_null(r.parent_downtime_ms)},
                    {"parent_left_paused", r.parent_left_paused},
                    {"snapshot_ms", static_cast<std::uint64_t>(r.snapshot_ms)},
                    {"children_ms", static_cast<std::uint64_t>(r.children_ms)},
                    {"total_ms", static_cast<std::uint64_t>(r.total_ms)},
                    {"memory_image_bytes", r.memory_image_bytes},
                    {"clock_not_set", r.clock_not_set}});
        return;
    }
    for (const auto& c : r.children)
        std::cout << c << '\n';
    std::fprintf(stderr, "Forked '%s' at fork point '%s' into %zu %s in %.0f ms", r.parent.c_str(),
                 r.fork_point.c_str(), r.children.size(),
                 r.children.size() == 1 ? "child" : "children", r.total_ms);
    if (r.parent_left_paused)
        std::fprintf(stderr, " (parent left paused)");
    else if (r.parent_downtime_ms)
        std::fprintf(stderr, " (parent paused %llu ms%s)",
                     static_cast<unsigned long long>(*r.parent_downtime_ms),
                     cmd.cold ? ", the whole cut" : "");
    std::fprintf(stderr, "\n");
    print_clock_notes(r.clock_not_set);
}

} // namespace

void setup_fork(CLI::App& app, Context& ctx) {
    auto cmd = std::make_shared<ForkCommand>();
    CLI::App* sub = app.add_subcommand(
        "fork",
        "Fork a running VM into children that carry on from its exact memory and disk.\n"
        "Each child has its own name (VM-1, VM-2, ...; never reused), UUID, qcow2 top layer\n"
        "over the frozen fork point, console log and user-mode network. The parent keeps\n"
        "running on a new top layer; a hot fork pauses it only for the final switch-over.\n"
        "Prints the children's names, one a line.\n"
        "A stored fork point or snapshot forks too, at any later time, as often as wanted,\n"
        "while the VM moves on (or is off, or removed with its snapshots kept): VM@NAME.\n"
        "Examples: forky fork web --count 8\n"
        "          forky fork web --cold --keep-paused --prefix probe\n"
        "          forky fork web@before-upgrade --count 4");
    sub->add_option("vm", cmd->parent, "the running VM to fork, or VM@NAME")->required();
    sub->add_option("-n,--count", cmd->count, "number of children")->capture_default_str();
    sub->add_flag("--cold", cmd->cold,
                  "pause the parent for the cut (no live snapshot), then resume it");
    sub->add_flag("--keep-paused", cmd->keep_paused, "with --cold: leave the parent paused");
    sub->add_flag("--paused", cmd->children_paused,
                  "leave the children paused (resume them with virsh resume)");
    sub->add_option("--prefix", cmd->prefix, "name children PREFIX-N (default: the VM's name)");
    sub->add_option("--wait", cmd->wait_s, "seconds to wait while another fork of the same VM runs")
        ->capture_default_str();
    sub->add_flag("--json", cmd->json, "print the result as JSON, with timings");
    sub->callback([cmd, &ctx] { run_fork(*cmd, ctx); });
}

} // namespace forky::cli
