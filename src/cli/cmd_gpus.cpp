// forky gpus [--json] [--host NAME]: the GPUs of a host, from libvirt's node devices.
#include "commands.hpp"
#include "forky.hpp"
#include "json_out.hpp"
#include "remote.hpp"

#include <cstdio>
#include <iostream>
#include <memory>

namespace forky::cli {

namespace {

struct GpusCommand {
    bool json = false;
    std::string host;
};

std::string joined(const std::vector<std::string>& items, const char* none = "-") {
    std::string out;
    for (const auto& i : items)
        out += (out.empty() ? "" : ",") + i;
    return out.empty() ? none : out;
}

// The mediated devices cut from GPU `address` now, with the domains holding each.
Json existing_mdevs(const GpuInventory& inv, const std::string& address) {
    Json out = Json::array();
    for (const auto& m : inv.mdevs)
        if (m.parent == address)
            out.push_back({{"uuid", m.uuid}, {"type", m.type}, {"held_by", m.held_by}});
    return out;
}

void run_gpus(const GpusCommand& cmd, Context& ctx) {
    Remote* remote = ctx.remote();
    Host* host = remote ? nullptr : &ctx.fleet().host(ctx.fleet().host_or_first(cmd.host));
    const GpuInventory inv = remote ? remote->gpus(cmd.host) : read_inventory(*host);
    const std::vector<Gpu>& gpus = inv.gpus;
    if (cmd.json) {
        Json out = Json::array();
        for (const auto& g : gpus) {
            Json mdevs = Json::array();
            for (const auto& m : g.mdev_types)
                mdevs.push_back({{"type", m.id}, {"name", m.name}, {"available", m.available}});
            out.push_back({{"address", g.address},
                           {"device", g.device},
                           {"class", g.pci_class},
                           {"vendor_id", g.vendor_id},
                           {"vendor", g.vendor},
                           {"product_id", g.product_id},
                           {"product", g.product},
                           {"driver", text_or_null(g.driver)},
                           {"iommu_group", g.iommu_group ? Json(*g.iommu_group) : Json()},
                           {"iommu_group_others", g.group_members},
                           {"numa_node", g.numa_node ? Json(*g.numa_node) : Json()},
                           {"mdev_types", mdevs},
                           {"held_by", g.held_by},
                           {"mdevs", existing_mdevs(inv, g.address)}});
        }
        print_json(out);
        return;
    }
    if (gpus.empty()) {
        std::cout << "No GPUs (PCI display or 3D controllers) on '"
                  << (remote ? remote->server() : host->options().uri) << "'\n";
        return;
    }
    std::printf("%-13s %-34s %-9s %-6s %-5s %-18s %s\n", "ADDRESS", "PRODUCT", "DRIVER", "GROUP",
                "NUMA", "MDEV TYPES", "HELD BY");
    for (const auto& g : gpus) {
        // A GPU passed through whole has no slices to give.
        std::vector<std::string> types;
        if (g.held_by.empty())
            for (const auto& m : g.mdev_types)
                types.push_back(m.id + "(" + std::to_string(m.available) + ")");
        std::vector<std::string> holders = g.held_by;
        for (const auto& m : inv.mdevs)
            if (m.parent == g.address)
                for (const auto& h : m.held_by)
                    holders.push_back(h + "(mdev)");
        std::string group = g.iommu_group ? std::to_string(*g.iommu_group) : "-";
        if (!g.group_members.empty())
            group += "+" + std::to_string(g.group_members.size());
        std::printf(
            "%-13s %-34s %-9s %-6s %-5s %-18s %s\n", g.address.c_str(),
            (g.vendor_id == "0x10de" ? "NVIDIA " + g.product : g.product).substr(0, 34).c_str(),
            g.driver.empty() ? "-" : g.driver.c_str(), group.c_str(),
            g.numa_node ? std::to_string(*g.numa_node).c_str() : "-", joined(types).c_str(),
            joined(holders).c_str());
    }
}

} // namespace

void setup_gpus(CLI::App& app, Context& ctx) {
    auto cmd = std::make_shared<GpusCommand>();
    CLI::App* sub = app.add_subcommand(
        "gpus",
        "List a host's GPUs from libvirt's node devices (PCI display and 3D controllers):\n"
        "address, vendor and product, driver in use, IOMMU group (+N: other members that go\n"
        "with it), NUMA node, mediated-device types with free instances, and the domains\n"
        "that pass each one through (--json also lists the mediated devices cut from each).\n"
        "Read-only; works on a remote host through its URI.\n"
        "A spec asks for GPUs with gpus: [{pci: \"0000:65:00.0\"}], [{vendor: nvidia, count: 2}]\n"
        "or [{mdev_type: nvidia-593}]; forky up checks passthrough support, the device and its\n"
        "whole IOMMU group first (forky up --print-xml shows the <hostdev> it would write).\n"
        "A VM with GPUs forks only with gpu_fork: detach in its spec; what children get comes\n"
        "from the GPU policy (forky fork --help, policies/gpu.yaml).\n"
        "Examples: forky gpus; forky --hosts fleet.yaml gpus --host b --json");
    sub->add_flag("--json", cmd->json, "print a JSON array instead of a table");
    sub->add_option("--host", cmd->host,
                    "with a host inventory: this host (default: its first host)");
    sub->callback([cmd, &ctx] { run_gpus(*cmd, ctx); });
}

} // namespace forky::cli
