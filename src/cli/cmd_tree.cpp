// forky tree [--json]: the family of forky's VMs, drawn from their lineage metadata.
#include "commands.hpp"
#include "json_out.hpp"
#include "vm.hpp"

#include <iostream>
#include <map>
#include <memory>
#include <set>

namespace forky::cli {

namespace {

struct TreeCommand {
    bool json = false;
};

struct Family {
    std::map<std::string, const VmInfo*> by_name;
    // parent -> fork point -> children
    std::map<std::string, std::map<std::string, std::vector<const VmInfo*>>> forks;
};

void draw_vm(const Family& f, const VmInfo& vm, const std::string& indent);

// The fork points of `name` and the children forked at each.
void draw_forks(const Family& f, const std::string& name, const std::string& indent) {
    auto it = f.forks.find(name);
    if (it == f.forks.end())
        return;
    std::size_t i = 0;
    for (const auto& [point, children] : it->second) {
        bool last_point = ++i == it->second.size();
        std::cout << indent << (last_point ? "└── " : "├── ") << point << '\n';
        std::string inner = indent + (last_point ? "    " : "│   ");
        for (std::size_t c = 0; c < children.size(); ++c) {
            bool last = c + 1 == children.size();
            std::cout << inner << (last ? "└── " : "├── ");
            draw_vm(f, *children[c], inner + (last ? "    " : "│   "));
        }
    }
}

void draw_vm(const Family& f, const VmInfo& vm, const std::string& indent) {
    std::cout << vm.name << "  [" << to_string(vm.state) << ", gen " << vm.lineage.generation
              << "]\n";
    draw_forks(f, vm.name, indent);
}

void run_tree(const TreeCommand& cmd, Context& ctx) {
    std::vector<VmInfo> vms = vm_list(ctx.host());
    if (cmd.json) {
        Json out = Json::array();
        for (const auto& vm : vms)
            out.push_back({{"name", vm.name},
                           {"state", to_string(vm.state)},
                           {"generation", vm.lineage.generation},
                           {"parent", text_or_null(vm.lineage.parent)},
                           {"fork_point", text_or_null(vm.lineage.fork_point)}});
        print_json(out);
        return;
    }
    Family f;
    for (const auto& vm : vms)
        f.by_name[vm.name] = &vm;
    for (const auto& vm : vms)
        if (!vm.lineage.parent.empty())
            f.forks[vm.lineage.parent][vm.lineage.fork_point].push_back(&vm);
    // Roots: VMs made by `forky up`, and children whose parent has been removed.
    std::set<std::string> gone_parents;
    for (const auto& vm : vms) {
        if (vm.lineage.parent.empty())
            draw_vm(f, vm, "");
        else if (!f.by_name.count(vm.lineage.parent))
            gone_parents.insert(vm.lineage.parent);
    }
    for (const auto& parent : gone_parents) {
        std::cout << parent << "  [removed]\n";
        draw_forks(f, parent, "");
    }
    if (vms.empty())
        std::cout << "No forky VMs on this host\n";
}

} // namespace

void setup_tree(CLI::App& app, Context& ctx) {
    auto cmd = std::make_shared<TreeCommand>();
    CLI::App* sub = app.add_subcommand(
        "tree", "Draw the lineage of forky's VMs: each VM, its fork points (@VM.fpN) and the\n"
                "children forked at each.");
    sub->add_flag("--json", cmd->json, "print a JSON array of {name, parent, fork_point, ...}");
    sub->callback([cmd, &ctx] { run_tree(*cmd, ctx); });
}

} // namespace forky::cli
