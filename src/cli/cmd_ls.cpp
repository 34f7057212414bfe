// forky ls [--json]: forky's VMs on the host with their lineage.
#include "commands.hpp"
#include "forky.hpp"
#include "json_out.hpp"

#include <cstdio>
#include <iostream>
#include <memory>

namespace forky::cli {

namespace {

struct LsCommand {
    bool json = false;
};

void print_vms_json(const std::vector<VmInfo>& vms) {
    Json out = Json::array();
    for (const auto& vm : vms) {
        Json ports = Json::array();
        for (const auto& p : vm.lineage.ports)
            ports.push_back({{"guest", p.guest}, {"host", p.host != 0 ? Json(p.host) : Json()}});
        Json volumes = Json::array();
        for (const auto& v : vm.lineage.volumes) {
            Json vol = {{"role", v.role}};
            if (!v.target.empty())
                vol["target"] = v.target;
            vol["name"] = v.name;
            volumes.push_back(std::move(vol));
        }
        out.push_back({{"name", vm.name},
                       {"uuid", vm.uuid},
                       {"state", to_string(vm.state)},
                       {"accel", vm.domain_type == "kvm" ? "kvm" : "tcg"},
                       {"memory_bytes", vm.memory_bytes},
                       {"vcpus", vm.vcpus},
                       {"genid", text_or_null(vm.genid)},
                       {"generation", vm.lineage.generation},
                       {"parent", text_or_null(vm.lineage.parent)},
                       {"fork_point", text_or_null(vm.lineage.fork_point)},
                       {"created_at", vm.lineage.created_at},
                       {"pool", vm.lineage.pool},
                       {"ports", ports},
                       {"volumes", volumes}});
    }
    print_json(out);
}

void run_ls(const LsCommand& cmd, Context& ctx) {
    std::vector<VmInfo> vms = vm_list(ctx.host());
    if (cmd.json) {
        print_vms_json(vms);
        return;
    }
    std::printf("%-24s %-10s %-5s %-4s %-8s %-5s %-16s %-20s %s\n", "NAME", "STATE", "ACCEL", "GEN",
                "MEMORY", "VCPUS", "PARENT", "PORTS", "CREATED");
    for (const auto& vm : vms) {
        std::string ports;
        for (const auto& p : vm.lineage.ports) {
            if (p.host == 0 || vm.state == VmState::shut_off) // forwards live as long as QEMU does
                continue;
            ports += (ports.empty() ? "" : ",") + std::to_string(p.host) + "->" +
                     std::to_string(p.guest);
        }
        std::printf("%-24s %-10s %-5s %-4u %-8s %-5u %-16s %-20s %s\n", vm.name.c_str(),
                    to_string(vm.state), vm.domain_type == "kvm" ? "kvm" : "tcg",
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
