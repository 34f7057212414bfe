// forky tree [VM] [--json | --dot]: the family of forky's VMs, their fork points and
// snapshots, as text, JSON or Graphviz.
#include "commands.hpp"
#include "forky.hpp"
#include "json_out.hpp"
#include "remote.hpp"

#include <iostream>
#include <map>
#include <memory>

namespace forky::cli {

namespace {

struct TreeCommand {
    std::string vm;
    bool json = false;
    bool dot = false;
};

std::string on_host(const TreeNode& n) {
    return n.host.empty() ? "" : " on " + n.host;
}

std::string describe(const TreeNode& n) {
    switch (n.kind) {
    case TreeNode::Kind::vm:
        return n.name + "  [" + to_string(n.state) + ", gen " + std::to_string(n.generation) +
               ", " + format_size(n.disk_bytes) + on_host(n) + "]";
    case TreeNode::Kind::removed_vm:
        return n.name + "  [removed]";
    case TreeNode::Kind::fork_point:
        return n.name + "  (" + to_string(n.point_kind) + ", " + n.created_at + ", " +
               format_size(n.disk_bytes) + on_host(n) + ")";
    }
    return n.name;
}

void draw(const LineageTree& t) {
    std::map<std::string, std::vector<const TreeNode*>> kids;
    for (const auto& n : t.nodes)
        kids[n.parent].push_back(&n);
    std::function<void(const TreeNode&, const std::string&)> below = [&](const TreeNode& n,
                                                                         const std::string& in) {
        const auto& k = kids[n.id];
        for (std::size_t i = 0; i < k.size(); ++i) {
            const bool last = i + 1 == k.size();
            std::cout << in << (last ? "└── " : "├── ") << describe(*k[i]) << '\n';
            below(*k[i], in + (last ? "    " : "│   "));
        }
    };
    for (const auto* r : kids[""]) {
        std::cout << describe(*r) << '\n';
        below(*r, "");
    }
    if (t.nodes.empty())
        std::cout << "No forky VMs or snapshots in this pool\n";
}

std::string dot_quoted(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '\n') { // a line break in a label
            out += "\\n";
            continue;
        }
        if (c == '"' || c == '\\')
            out += '\\';
        out += c;
    }
    return out + "\"";
}

void print_dot(const LineageTree& t) {
    std::cout << "digraph forky {\n"
                 "  rankdir=LR;\n"
                 "  node [fontname=\"Helvetica\", fontsize=10];\n"
                 "  edge [color=\"#777777\"];\n";
    for (const auto& n : t.nodes) {
        std::string label;
        std::string style;
        switch (n.kind) {
        case TreeNode::Kind::vm:
            label = n.name + "\n" + to_string(n.state) + ", gen " + std::to_string(n.generation) +
                    "\n" + format_size(n.disk_bytes) + (n.host.empty() ? "" : "\non " + n.host);
            style = n.state == VmState::running
                        ? "shape=box, style=\"rounded,filled\", fillcolor=\"#d8f0d8\""
                        : "shape=box, style=\"rounded,filled\", fillcolor=\"#eeeeee\"";
            break;
        case TreeNode::Kind::removed_vm:
            label = n.name + "\n(removed)";
            style = "shape=box, style=\"rounded,dashed\"";
            break;
        case TreeNode::Kind::fork_point:
            label = n.name + "\n" + to_string(n.point_kind) + ", " + format_size(n.disk_bytes);
            style = n.point_kind == ForkPoint::Kind::fork
                        ? "shape=ellipse, style=filled, fillcolor=\"#fff3c4\""
                        : "shape=note, style=filled, fillcolor=\"#d6e6ff\"";
            break;
        }
        std::cout << "  " << dot_quoted(n.id) << " [label=" << dot_quoted(label) << ", " << style
                  << "];\n";
    }
    for (const auto& n : t.nodes)
        if (!n.parent.empty())
            std::cout << "  " << dot_quoted(n.parent) << " -> " << dot_quoted(n.id) << ";\n";
    for (const auto& p : t.problems)
        std::cout << "  // problem: " << p << '\n';
    std::cout << "}\n";
}

void run_tree(const TreeCommand& cmd, Context& ctx) {
    if (cmd.json && cmd.dot)
        throw UsageError("--json and --dot: pick one");
    LineageTree t;
    if (Remote* remote = ctx.remote()) {
        t = remote->tree(cmd.vm);
    } else if (ctx.fleet_mode()) {
        std::vector<std::pair<std::string, Host*>> hosts;
        for (const auto& h : ctx.inventory().hosts) {
            try {
                hosts.emplace_back(h.name, &ctx.host_named(h.name));
            } catch (const InterruptedError&) {
                throw;
            } catch (const Error& e) {
                t.problems.push_back("host '" + h.name + "' did not answer: " + e.what());
            }
        }
        LineageTree all = fleet_lineage_tree(hosts, cmd.vm);
        t.nodes = std::move(all.nodes);
        t.problems.insert(t.problems.end(), all.problems.begin(), all.problems.end());
    } else {
        t = lineage_tree(ctx.host(), cmd.vm);
    }
    if (cmd.json) {
        Json nodes = Json::array();
        for (const auto& n : t.nodes) {
            Json j = {{"kind", to_string(n.kind)},
                      {"id", n.id},
                      {"name", n.name},
                      {"parent", text_or_null(n.parent)}};
            if (n.kind == TreeNode::Kind::vm) {
                j["state"] = to_string(n.state);
                j["generation"] = n.generation;
            }
            if (n.kind == TreeNode::Kind::fork_point) {
                j["fork_point_kind"] = to_string(n.point_kind);
                j["created_at"] = n.created_at;
            }
            if (n.kind != TreeNode::Kind::removed_vm)
                j["disk_bytes"] = n.disk_bytes;
            j["host"] = text_or_null(n.host); // with an inventory: the node's host
            if (n.kind == TreeNode::Kind::fork_point)
                j["copy"] = n.copy;
            nodes.push_back(std::move(j));
        }
        print_json({{"nodes", nodes}, {"problems", t.problems}});
        return;
    }
    if (cmd.dot) {
        print_dot(t);
        return;
    }
    draw(t);
    for (const auto& p : t.problems)
        std::cerr << "forky: problem: " << p << '\n';
}

} // namespace

void setup_tree(CLI::App& app, Context& ctx) {
    auto cmd = std::make_shared<TreeCommand>();
    CLI::App* sub = app.add_subcommand(
        "tree", "Draw the family of forky's VMs: each VM (state, generation, disk it uses), its\n"
                "fork points and snapshots (kind, time, disk), the VMs spawned from each, and\n"
                "removed VMs whose snapshots were kept. What libvirt and the pool disagree on\n"
                "(a layer missing, a record gone) is reported, never fatal.\n"
                "Examples: forky tree; forky tree web; forky tree --dot | dot -Tsvg > tree.svg");
    sub->add_option("vm", cmd->vm, "only this VM and its descendants");
    sub->add_flag("--json", cmd->json, "print {nodes: [...], problems: [...]} as JSON");
    sub->add_flag("--dot", cmd->dot, "print Graphviz (dot -Tsvg renders it)");
    sub->callback([cmd, &ctx] { run_tree(*cmd, ctx); });
}

} // namespace forky::cli
