// forky ls [--json]: forky's VMs on the host with their lineage.
#include "commands.hpp"
#include "forky.hpp"
#include "json_out.hpp"
#include "remote.hpp"

#include <cstdio>
#include <ctime>
#include <iostream>
#include <memory>

namespace forky::cli {

namespace {

struct LsCommand {
    bool json = false;
};

struct Listed {
    std::string host;
    VmInfo vm;
};

void print_table(const std::vector<Listed>& listed, bool fleet);

void print_vms_json(const std::vector<Listed>& listed) {
    const std::int64_t now = std::time(nullptr);
    Json out = Json::array();
    for (const auto& [host, vm] : listed) {
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
                       {"volumes", volumes},
                       {"host", host}, // its host in the fleet ("default": no inventory)
                       {"parent_host", text_or_null(vm.lineage.parent_host)},
                       {"ttl_left_s", value_or_null(ttl_left(vm.lineage, now))},
                       {"pinned", vm.lineage.pinned}});
    }
    print_json(out);
}

void run_ls(const LsCommand& cmd, Context& ctx) {
    // Every host of the fleet (with an inventory), else --connect's.
    std::vector<Listed> listed;
    std::vector<std::string> down;
    bool fleet = false;
    std::size_t hosts = 1;
    if (Remote* remote = ctx.remote()) { // forkyd's host, or its fleet
        RemoteListing l = remote->list();
        for (auto& [host, vm] : l.vms)
            listed.push_back({host, std::move(vm)});
        fleet = l.fleet;
        down = l.unreachable;
        hosts = l.hosts;
    } else {
        fleet = ctx.fleet_mode();
        std::vector<std::string> names{"default"};
        if (fleet) {
            names.clear();
            for (const auto& h : ctx.inventory().hosts)
                names.push_back(h.name);
        }
        hosts = names.size();
        for (const auto& name : names) {
            try {
                for (auto& vm : vm_list(fleet ? ctx.host_named(name) : ctx.host()))
                    listed.push_back({name, std::move(vm)});
            } catch (const InterruptedError&) {
                throw;
            } catch (const Error& e) {
                if (!fleet)
                    throw;
                down.push_back("'" + name + "': " + e.what());
            }
        }
    }
    if (cmd.json)
        print_vms_json(listed);
    else
        print_table(listed, fleet);
    if (!down.empty()) {
        for (const auto& d : down)
            std::cerr << "forky: host " << d << '\n';
        throw LibvirtError(std::to_string(down.size()) + " of " + std::to_string(hosts) +
                               " hosts did not answer; their VMs are not listed",
                           0, 0);
    }
}

void print_table(const std::vector<Listed>& listed, bool fleet) {
    if (fleet)
        std::printf("%-12s ", "HOST");
    std::printf("%-24s %-10s %-5s %-4s %-8s %-5s %-16s %-20s %-20s %s\n", "NAME", "STATE", "ACCEL",
                "GEN", "MEMORY", "VCPUS", "PARENT", "PORTS", "CREATED", "EXPIRES");
    const std::int64_t now = std::time(nullptr);
    for (const auto& [host, vm] : listed) {
        if (fleet)
            std::printf("%-12s ", host.c_str());
        std::string ports;
        for (const auto& p : vm.lineage.ports) {
            if (p.host == 0 || vm.state == VmState::shut_off) // forwards live as long as QEMU does
                continue;
            ports += (ports.empty() ? "" : ",") + std::to_string(p.host) + "->" +
                     std::to_string(p.guest);
        }
        const std::string parent = vm.lineage.parent.empty() ? std::string("-")
                                   : vm.lineage.parent_host.empty()
                                       ? vm.lineage.parent
                                       : vm.lineage.parent + "@" + vm.lineage.parent_host;
        std::string expires = vm.lineage.pinned ? "pinned" : "-";
        if (auto left = ttl_left(vm.lineage, now))
            expires = *left <= 0 ? "expired" : "in " + format_duration(*left);
        std::printf("%-24s %-10s %-5s %-4u %-8s %-5u %-16s %-20s %-20s %s\n", vm.name.c_str(),
                    to_string(vm.state), vm.domain_type == "kvm" ? "kvm" : "tcg",
                    vm.lineage.generation, format_size(vm.memory_bytes).c_str(), vm.vcpus,
                    parent.c_str(), ports.empty() ? "-" : ports.c_str(),
                    vm.lineage.created_at.c_str(), expires.c_str());
    }
}

} // namespace

void setup_ls(CLI::App& app, Context& ctx) {
    auto cmd = std::make_shared<LsCommand>();
    CLI::App* sub = app.add_subcommand(
        "ls", "List forky's VMs on the host: state, accelerator, generation and parent.\n"
              "With a host inventory, the VMs of every host of the fleet, each with its host\n"
              "(a parent on another host shows as PARENT@HOST); a host that does not answer\n"
              "is said on stderr and the exit status is 6, after the listing.\n"
              "Domains that forky did not make are left out (virsh list shows them).");
    sub->alias("list");
    sub->add_flag("--json", cmd->json, "print a JSON array instead of a table");
    sub->callback([cmd, &ctx] { run_ls(*cmd, ctx); });
}

} // namespace forky::cli
