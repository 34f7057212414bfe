#include "tree.hpp"

#include "child_xml.hpp"
#include "errors.hpp"
#include "vm.hpp"

#include <algorithm>
#include <functional>
#include <map>
#include <set>

namespace forky {

const char* to_string(TreeNode::Kind k) {
    switch (k) {
    case TreeNode::Kind::vm:
        return "vm";
    case TreeNode::Kind::removed_vm:
        return "removed-vm";
    case TreeNode::Kind::fork_point:
        return "fork-point";
    }
    return "?";
}

namespace {

// One host's VMs and fork points into `nodes` (by id). A node seen on another host
// already wins over a copy of it: a VM over a removed VM's stand-in, a fork point over
// the copy shipped from it.
void gather(Host& host, const std::string& host_name, std::map<std::string, TreeNode>& nodes,
            LineageTree& tree) {
    std::map<std::string, VolumeInfo> volumes;
    for (auto& v : host.volumes())
        volumes[v.name] = std::move(v);
    auto allocation = [&volumes](const std::string& name) -> std::uint64_t {
        auto v = volumes.find(name);
        return v == volumes.end() ? 0 : v->second.allocation;
    };
    std::set<std::string> paths;
    for (const auto& [name, v] : volumes)
        paths.insert(v.path);

    for (const auto& dom : host.domains()) {
        try {
            auto lineage = read_lineage(dom.get());
            if (!lineage || lineage->pool != host.options().pool)
                continue;
            TreeNode n;
            n.kind = TreeNode::Kind::vm;
            n.host = host_name;
            n.id = domain_uuid(dom.get());
            n.name = domain_name(dom.get());
            n.state = domain_state(dom.get());
            n.generation = lineage->generation;
            n.created_at = lineage->created_at;
            for (const auto& v : lineage->volumes)
                n.disk_bytes += allocation(v.name);
            // Its fork point, else its parent (by UUID, else by the name an old record
            // kept), else none: made by `forky up`.
            if (!lineage->fork_point_id.empty())
                n.parent = lineage->fork_point_id;
            else if (!lineage->parent_uuid.empty())
                n.parent = lineage->parent_uuid;
            else if (!lineage->parent.empty())
                n.parent = "name:" + lineage->parent;
            for (const auto& [target, file] : disk_sources(domain_xml(dom.get())))
                if (!paths.count(file))
                    tree.problems.push_back("VM '" + n.name + "': the top layer of disk " + target +
                                            ", '" + file + "', is not in pool '" +
                                            host.options().pool + "'");
            nodes[n.id] = n;
        } catch (const NotFoundError&) {
            // undefined while read
        }
    }
    std::vector<UnreadableRecord> unreadable;
    const auto points = read_fork_points(host, &unreadable);
    for (const auto& u : unreadable)
        tree.problems.push_back("fork point record '" + u.volume + "' is unreadable (" + u.why +
                                "); gc keeps it and every volume of VM '" +
                                u.volume.substr(0, u.volume.rfind(".fp")) +
                                "' until it is mended or deleted by hand");
    for (const auto& p : points) {
        TreeNode n;
        n.kind = TreeNode::Kind::fork_point;
        n.host = host_name;
        n.copy = !p.shipped_from.empty();
        n.id = p.id;
        n.name = p.label();
        n.parent = p.vm_uuid;
        n.point_kind = p.kind;
        n.created_at = p.created_at;
        n.state = p.state;
        n.disk_bytes = allocation(p.memory_image);
        if (!p.memory_image.empty() && !volumes.count(p.memory_image))
            tree.problems.push_back("fork point '" + p.label() + "': its memory image '" +
                                    p.memory_image + "' is missing");
        for (const auto& [target, layer] : p.layers) {
            n.disk_bytes += allocation(layer);
            if (!volumes.count(layer))
                tree.problems.push_back("fork point '" + p.label() + "': its layer '" + layer +
                                        "' (disk " + target + ") is missing");
        }
        auto there = nodes.find(n.id);
        if (there == nodes.end() || (there->second.copy && !n.copy))
            nodes[n.id] = n;
        // A copy's VM runs on another host: its stand-in only if it is nowhere (below).
        if (!n.copy && !nodes.count(p.vm_uuid)) {
            TreeNode gone;
            gone.kind = TreeNode::Kind::removed_vm;
            gone.host = host_name;
            gone.id = p.vm_uuid;
            gone.name = p.vm;
            nodes.emplace(gone.id, gone);
        }
    }
}

// Parents before children, the part under `root` when asked.
void arrange(std::map<std::string, TreeNode>& nodes, const std::string& root,
             const std::string& where, LineageTree& tree) {
    // A VM that turned up on a later host replaces the stand-in an earlier host's kept
    // snapshots made for it.
    for (auto& [id, n] : nodes)
        if (n.kind == TreeNode::Kind::fork_point && n.copy && !nodes.count(n.parent)) {
            TreeNode gone;
            gone.kind = TreeNode::Kind::removed_vm;
            gone.id = n.parent;
            gone.name = n.name.substr(0, n.name.find('@'));
            nodes.emplace(gone.id, gone);
        }
    // Parents that are nowhere: a record gone behind forky's back, a parent removed.
    std::vector<TreeNode> missing;
    for (auto& [id, n] : nodes) {
        if (n.parent.empty() || nodes.count(n.parent))
            continue;
        if (n.kind == TreeNode::Kind::vm) {
            if (n.parent.rfind("name:", 0) != 0)
                tree.problems.push_back("VM '" + n.name + "' came from a fork point or parent (" +
                                        n.parent + ") that is gone");
            TreeNode gone;
            gone.kind = TreeNode::Kind::removed_vm;
            gone.id = n.parent;
            gone.name = n.parent.rfind("name:", 0) == 0 ? n.parent.substr(5) : "(gone)";
            missing.push_back(gone);
        }
    }
    for (auto& g : missing)
        nodes.emplace(g.id, g);

    // Parents first, children by time; the part under `root` when asked.
    std::map<std::string, std::vector<std::string>> kids;
    std::vector<std::string> roots;
    for (const auto& [id, n] : nodes)
        (n.parent.empty() ? roots : kids[n.parent]).push_back(id);
    auto by_time = [&nodes](const std::string& a, const std::string& b) {
        const TreeNode& x = nodes.at(a);
        const TreeNode& y = nodes.at(b);
        return std::tie(x.created_at, x.name) < std::tie(y.created_at, y.name);
    };
    std::sort(roots.begin(), roots.end(), [&nodes](const std::string& a, const std::string& b) {
        return nodes.at(a).name < nodes.at(b).name;
    });
    if (!root.empty()) {
        roots.clear();
        for (const auto& [id, n] : nodes)
            if (n.kind != TreeNode::Kind::fork_point && n.name == root)
                roots.push_back(id);
        if (roots.empty())
            throw NotFoundError("No VM named '" + root + "' in the lineage of " + where);
    }
    std::set<std::string> seen;
    std::function<void(const std::string&)> emit = [&](const std::string& id) {
        if (!seen.insert(id).second)
            return;
        TreeNode n = nodes.at(id);
        if (!root.empty() && std::find(roots.begin(), roots.end(), id) != roots.end())
            n.parent.clear();
        tree.nodes.push_back(n);
        auto k = kids[id];
        std::sort(k.begin(), k.end(), by_time);
        for (const auto& c : k)
            emit(c);
    };
    for (const auto& r : roots)
        emit(r);
}

} // namespace

LineageTree lineage_tree(Host& host, const std::string& root) {
    LineageTree tree;
    std::map<std::string, TreeNode> nodes;
    gather(host, "", nodes, tree);
    arrange(nodes, root, "pool '" + host.options().pool + "'", tree);
    return tree;
}

LineageTree fleet_lineage_tree(const std::vector<std::pair<std::string, Host*>>& hosts,
                               const std::string& root) {
    LineageTree tree;
    std::map<std::string, TreeNode> nodes;
    for (const auto& [name, host] : hosts) {
        try {
            gather(*host, name, nodes, tree);
        } catch (const Error& e) {
            tree.problems.push_back("host '" + name + "' did not answer: " + e.what());
        }
    }
    arrange(nodes, root, "the fleet", tree);
    return tree;
}

} // namespace forky
