// forky ls [--json]: forky's VMs on the host with their lineage.
#include "commands.hpp"
#include "json.hpp"
#include "units.hpp"
#include "vm.hpp"

#include <cstdio>
#include <iostream>
#include <memory>

namespace forky::cli {

namespace {

struct LsCommand {
    bool json = false;
};

void print_json(const std::vector<VmInfo>& vms) {
    JsonWriter w;
    w.begin_array();
    for (const auto& vm : vms) {
        w.begin_object();
        w.key("name").value(vm.name);
        w.key("uuid").value(vm.uuid);
        w.key("state").value(vm.state);
        w.key("accel").value(vm.domain_type == "kvm" ? "kvm" : "tcg");
        w.key("memory_bytes").value(vm.memory_bytes);
        w.key("vcpus").value(static_cast<std::uint64_t>(vm.vcpus));
        w.key("generation").value(static_cast<std::uint64_t>(vm.lineage.generation));
        w.key("parent");
        vm.lineage.parent.empty() ? w.null() : w.value(vm.lineage.parent);
        w.key("fork_point");
        vm.lineage.fork_point.empty() ? w.null() : w.value(vm.lineage.fork_point);
        w.key("created_at").value(vm.lineage.created_at);
        w.key("pool").value(vm.lineage.pool);
        w.key("ports").begin_array();
        for (const auto& p : vm.lineage.ports) {
            w.begin_object();
            w.key("guest").value(static_cast<std::uint64_t>(p.guest));
            w.key("host");
            p.host != 0 ? w.value(static_cast<std::uint64_t>(p.host)) : w.null();
            w.end_object();
        }
        w.end_array();
        w.key("volumes").begin_array();
        for (const auto& v : vm.lineage.volumes) {
            w.begin_object();
            w.key("role").value(v.role);
            if (!v.target.empty())
                w.key("target").value(v.target);
            w.key("name").value(v.name);
            w.end_object();
        }
        w.end_array();
        w.end_object();
    }
    w.end_array();
    std::cout << w.str() << '\n';
}

void run_ls(const LsCommand& cmd, Context& ctx) {
    std::vector<VmInfo> vms = vm_list(ctx.host());
    if (cmd.json) {
        print_json(vms);
        return;
    }
    std::printf("%-24s %-10s %-5s %-4s %-8s %-5s %-16s %-20s %s\n", "NAME", "STATE", "ACCEL", "GEN",
                "MEMORY", "VCPUS", "PARENT", "PORTS", "CREATED");
    for (const auto& vm : vms) {
        std::string ports;
        for (const auto& p : vm.lineage.ports) {
            if (p.host == 0 || vm.state == "shut off") // forwards live as long as QEMU does
                continue;
            ports += (ports.empty() ? "" : ",") + std::to_string(p.host) + "->" +
                     std::to_string(p.guest);
        }
        std::printf("%-24s %-10s %-5s %-4u %-8s %-5u %-16s %-20s %s\n", vm.name.c_str(),
                    vm.state.c_str(), vm.domain_type == "kvm" ? "kvm" : "tcg",
                    vm.lineage.generation, format_size(vm.memory_bytes).c_str(), vm.vcpus,
                    vm.lineage.parent.empty() ? "-" : vm.lineage.parent.c_str(),
                    ports.empty() ? "-" : ports.c_str(), vm.lineage.created_at.c_str());
    }
}

} // namespace

void setup_ls(CLI::App& app, Context& ctx) {
    auto cmd = std::make_shared<LsCommand>();
    CLI::App* sub = app.add_subcommand(
        "ls", "List forky's VMs on the host: state, accelerator, generation and parent.\n"
              "Domains that forky did not make are left out (virsh list shows them).");
    sub->alias("list");
    sub->add_flag("--json", cmd->json, "print a JSON array instead of a table");
    sub->callback([cmd, &ctx] { run_ls(*cmd, ctx); });
}

} // namespace forky::cli
