// forky fork VM [--count N] [--cold] [--prefix P]: children that carry on from VM's memory.
#include "commands.hpp"
#include "forky.hpp"
#include "json_out.hpp"
#include "remote.hpp"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
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
    std::string gpu_policy;
    std::string host; // --host
    bool spread = false;
};

// --gpu-policy, else $FORKY_GPU_POLICY (each must exist), else /etc/forky/policies/gpu.yaml
// when there is one, else none: children get no GPU.
GpuPolicy gpu_policy(const std::string& named) {
    const std::string file = named.empty() ? env_or("FORKY_GPU_POLICY", "") : named;
    std::error_code ec;
    if (!file.empty()) {
        if (!std::filesystem::exists(file, ec) && !ec)
            throw NotFoundError("No GPU policy at " + forky::quoted(file) +
                                " (named by --gpu-policy or FORKY_GPU_POLICY)");
        return load_gpu_policy(file); // a file it cannot read is a SpecError, with the reason
    }
    if (std::filesystem::exists(default_gpu_policy_file, ec))
        return load_gpu_policy(default_gpu_policy_file);
    return {};
}

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
    ForkResult r;
    bool several_hosts = false;
    if (Remote* remote = ctx.remote()) {
        // forkyd's policies (quotas, TTL, GPUs, placement) apply.
        if (!cmd.gpu_policy.empty())
            throw UsageError("--gpu-policy with --server: forkyd's own GPU policy decides");
        RemoteFork f = remote->fork(cmd.parent, o, cmd.host, cmd.spread);
        for (const auto& why : f.placement)
            std::fprintf(stderr, "placement: %s\n", why.c_str());
        r = std::move(f.result);
        for (const auto& h : r.child_hosts)
            several_hosts = several_hosts || h != f.parent_host;
    } else {
        const std::optional<PointRef> ref = parse_point_ref(cmd.parent);
        Host& host = ctx.host_of(ref ? ref->vm : cmd.parent, &o.host_name);
        if (!cmd.host.empty() || cmd.spread)
            for (const auto& why :
                 ctx.fleet().place_children(ctx.placement(), cmd.parent, cmd.count, cmd.host,
                                            cmd.spread, host, o.host_name, o, ctx.cancel()))
                std::fprintf(stderr, "placement: %s\n", why.c_str());
        o.names_elsewhere = ctx.names_elsewhere(o.host_name);
        o.progress = progress_line("shipping");
        o.load_gpu_policy = [named = cmd.gpu_policy] { return gpu_policy(named); };
        load_fork_policies(o, env_or("FORKY_POLICIES", default_policies_dir));
        r = vm_fork(host, cmd.parent, o);
        several_hosts = !o.elsewhere.empty();
    }
    if (cmd.json) {
        print_json({{"parent", r.parent},
                    {"fork_point", r.fork_point},
                    {"children", r.children},
                    {"child_hosts", r.child_hosts},
                    {"bytes_shipped", r.bytes_shipped},
                    {"volumes_shipped", r.volumes_shipped},
                    {"volumes_reused", r.volumes_reused},
                    {"ship_ms", static_cast<std::uint64_t>(r.ship_ms)},
                    {"parent_downtime_ms", value_or_null(r.parent_downtime_ms)},
                    {"parent_left_paused", r.parent_left_paused},
                    {"snapshot_ms", static_cast<std::uint64_t>(r.snapshot_ms)},
                    {"children_ms", static_cast<std::uint64_t>(r.children_ms)},
                    {"total_ms", static_cast<std::uint64_t>(r.total_ms)},
                    {"memory_image_bytes", r.memory_image_bytes},
                    {"clock_not_set", r.clock_not_set},
                    {"child_gpus", r.child_gpus},
                    {"parent_gpus_detached", r.parent_gpus_detached}});
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
    if (several_hosts) {
        std::map<std::string, std::vector<std::string>> on;
        for (std::size_t i = 0; i < r.children.size(); ++i)
            on[r.child_hosts[i]].push_back(r.children[i]);
        for (const auto& [h, names] : on) {
            std::string list;
            for (const auto& n : names)
                list += (list.empty() ? "" : ", ") + n;
            std::fprintf(stderr, "On host '%s': %s\n", h.c_str(), list.c_str());
        }
    }
    if (several_hosts)
        std::fprintf(stderr, "Shipped %u volume(s), %s, in %.0f ms; %u there already\n",
                     r.volumes_shipped, format_size(r.bytes_shipped).c_str(), r.ship_ms,
                     r.volumes_reused);
    if (r.parent_gpus_detached > 0)
        std::fprintf(stderr,
                     "The parent's %u GPU(s) were detached for the cut and attached again\n",
                     r.parent_gpus_detached);
    for (std::size_t i = 0; i < r.children.size() && i < r.child_gpus.size(); ++i) {
        std::string list;
        for (const auto& g : r.child_gpus[i])
            list += (list.empty() ? "" : ", ") + g;
        if (!list.empty())
            std::fprintf(stderr, "GPU of '%s': %s\n", r.children[i].c_str(), list.c_str());
    }
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
        "With a host inventory (forky hosts --help), children may run on other hosts:\n"
        "--host NAME puts them all there, --spread lets the placement policy spread them\n"
        "(policies/placement.yaml, --placement). The fork point travels there once\n"
        "(memory image and layers through libvirt streams, checked by SHA-256) and is\n"
        "reused by later forks (stderr says which host took which child; --json has\n"
        "child_hosts). A failure on any host undoes the fork on all of them.\n"
        "A VM with GPUs passed through forks only if its spec says gpu_fork: detach: cold,\n"
        "its GPUs detached for the cut and attached again. Each child gets what the GPU\n"
        "policy says (--gpu-policy: none, a free GPU of the same model, or a new mdev of the\n"
        "same type); when the host has too few, nothing changes and the error says what is\n"
        "missing.\n"
        "Examples: forky fork web --count 8\n"
        "          forky fork web --cold --keep-paused --prefix probe\n"
        "          forky fork web@before-upgrade --count 4\n"
        "          forky --hosts fleet.yaml fork web --count 64 --spread");
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
    sub->add_option("--host", cmd->host, "put the children on this host of the inventory")
        ->check(CLI::Validator(
            [](const std::string& v) {
                return v.empty() ? std::string("--host names a host of the inventory")
                                 : std::string();
            },
            "NAME"));
    sub->add_flag("--spread", cmd->spread,
                  "spread the children over the fleet by the placement policy");
    sub->add_flag("--json", cmd->json, "print the result as JSON, with timings");
    sub->add_option("--gpu-policy", cmd->gpu_policy,
                    "what children of a VM with GPUs get (policies/gpu.yaml: none, exclusive, "
                    "mdev); default $FORKY_GPU_POLICY, else /etc/forky/policies/gpu.yaml, else "
                    "none");
    sub->callback([cmd, &ctx] { run_fork(*cmd, ctx); });
}

} // namespace forky::cli
