#include "lineage.hpp"

#include "errors.hpp"

#include <pugixml.hpp>

#include <cstdio>
#include <ctime>
#include <sstream>

namespace forky {

const OwnedVolume* Lineage::console_volume() const {
    for (const auto& v : volumes)
        if (v.role == "console")
            return &v;
    return nullptr;
}

namespace {

// Appends elements named with the prefix, or without it for bare XML.
struct ElementWriter {
    std::string prefix; // "forky:" or ""

    pugi::xml_node element(pugi::xml_node parent, const char* local) const {
        return parent.append_child((prefix + local).c_str());
    }
    void text(pugi::xml_node parent, const char* local, const std::string& value) const {
        element(parent, local).text().set(value.c_str());
    }
};

// An element's name without its prefix: whatever prefix the document gave the
// namespace (libvirt keeps ours, but a hand-edited domain may not).
std::string_view local_name(pugi::xml_node node) {
    std::string_view n = node.name();
    auto colon = n.find(':');
    return colon == std::string_view::npos ? n : n.substr(colon + 1);
}

pugi::xml_node child_local(pugi::xml_node parent, std::string_view local) {
    for (pugi::xml_node c : parent.children())
        if (local_name(c) == local)
            return c;
    return {};
}

} // namespace

std::string lineage_to_xml(const Lineage& l, bool bare) {
    const ElementWriter w{bare ? "" : std::string(lineage_prefix) + ":"};
    pugi::xml_document doc;
    pugi::xml_node root = w.element(doc, "lineage");
    if (!bare)
        root.append_attribute((std::string("xmlns:") + lineage_prefix).c_str()) = lineage_namespace;
    w.text(root, "generation", std::to_string(l.generation));
    if (!l.parent.empty())
        w.text(root, "parent", l.parent);
    if (!l.parent_uuid.empty())
        w.text(root, "parent-uuid", l.parent_uuid);
    if (!l.parent_host.empty())
        w.text(root, "parent-host", l.parent_host);
    if (!l.fork_point.empty())
        w.text(root, "fork-point", l.fork_point);
    if (!l.fork_point_id.empty())
        w.text(root, "fork-point-id", l.fork_point_id);
    w.text(root, "created-at", l.created_at);
    if (!l.operation.empty())
        w.text(root, "operation", l.operation);
    if (l.ttl)
        w.text(root, "ttl", std::to_string(l.ttl->count()));
    w.text(root, "pool", l.pool);
    for (const auto& v : l.volumes) {
        pugi::xml_node n = w.element(root, "volume");
        n.append_attribute("role") = v.role.c_str();
        if (!v.target.empty())
            n.append_attribute("target") = v.target.c_str();
        n.text().set(v.name.c_str());
    }
    if (!l.spec.empty())
        w.text(root, "spec", l.spec);
    if (!l.memory_image.empty())
        w.text(root, "memory-image", l.memory_image);
    for (const auto& v : l.layers) {
        pugi::xml_node n = w.element(root, "layer");
        n.append_attribute("target") = v.target.c_str();
        n.text().set(v.name.c_str());
    }
    if (l.forks != 0)
        w.text(root, "forks", std::to_string(l.forks));
    if (l.children_made != 0)
        w.text(root, "children-made", std::to_string(l.children_made));
    for (const auto& p : l.ports) {
        pugi::xml_node n = w.element(root, "port");
        n.append_attribute("guest") = p.guest;
        n.append_attribute("host") = p.host;
    }
    if (!l.genid.empty())
        w.text(root, "genid", l.genid);
    if (l.gpu_fork_detach)
        w.text(root, "gpu-fork", "detach");
    if (l.pinned)
        w.text(root, "pinned", "yes");
    for (const auto& m : l.mdevs)
        w.text(root, "mdev", m);
    if (!l.warm_pool.empty())
        w.text(root, "warm-pool", l.warm_pool);
    if (!l.acquired_from.empty())
        w.text(root, "acquired-from", l.acquired_from);
    std::ostringstream out;
    doc.save(out, "  ", pugi::format_indent | pugi::format_no_declaration);
    return out.str();
}

Lineage lineage_from_xml(std::string_view xml) {
    pugi::xml_document doc;
    auto parsed = doc.load_buffer(xml.data(), xml.size());
    if (!parsed)
        throw Error(std::string("Malformed forky metadata: ") + parsed.description());
    pugi::xml_node root = doc.document_element();
    Lineage l;
    try {
        l.generation =
            static_cast<unsigned>(std::stoul(child_local(root, "generation").text().get()));
    } catch (const std::exception&) {
        throw Error("Malformed forky metadata: no valid generation");
    }
    l.parent = child_local(root, "parent").text().get();
    l.parent_uuid = child_local(root, "parent-uuid").text().get();
    l.parent_host = child_local(root, "parent-host").text().get();
    l.fork_point = child_local(root, "fork-point").text().get();
    l.fork_point_id = child_local(root, "fork-point-id").text().get();
    l.created_at = child_local(root, "created-at").text().get();
    l.operation = child_local(root, "operation").text().get();
    if (pugi::xml_node ttl = child_local(root, "ttl")) {
        // Only a whole number of seconds, 1 to 100 years: anything else (edited by hand)
        // is no TTL, never one that has run out.
        const std::string text = ttl.text().get();
        if (!text.empty() && text.size() <= 10 &&
            text.find_first_not_of("0123456789") == std::string::npos) {
            const long long s = std::stoll(text);
            if (s > 0 && s <= 100LL * 366 * 86400)
                l.ttl = std::chrono::seconds(s);
        }
    }
    l.pool = child_local(root, "pool").text().get();
    for (pugi::xml_node c : root.children()) {
        if (local_name(c) == "volume")
            l.volumes.push_back(
                {c.attribute("role").value(), c.attribute("target").value(), c.text().get()});
    }
    l.spec = child_local(root, "spec").text().get();
    l.memory_image = child_local(root, "memory-image").text().get();
    for (pugi::xml_node c : root.children()) {
        if (local_name(c) == "layer")
            l.layers.push_back({"layer", c.attribute("target").value(), c.text().get()});
        else if (local_name(c) == "port")
            l.ports.push_back({c.attribute("guest").as_uint(), c.attribute("host").as_uint()});
    }
    l.forks = child_local(root, "forks").text().as_uint();
    l.children_made = child_local(root, "children-made").text().as_uint();
    l.genid = child_local(root, "genid").text().get();
    l.gpu_fork_detach = std::string_view(child_local(root, "gpu-fork").text().get()) == "detach";
    l.pinned = std::string_view(child_local(root, "pinned").text().get()) == "yes";
    for (pugi::xml_node c : root.children())
        if (local_name(c) == "mdev")
            l.mdevs.emplace_back(c.text().get());
    l.warm_pool = child_local(root, "warm-pool").text().get();
    l.acquired_from = child_local(root, "acquired-from").text().get();
    return l;
}

std::string utc_now_rfc3339() {
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

std::optional<std::int64_t> parse_rfc3339(std::string_view text) {
    if (text.size() != 20 || text[4] != '-' || text[7] != '-' || text[10] != 'T' ||
        text[13] != ':' || text[16] != ':' || text[19] != 'Z')
        return std::nullopt;
    std::tm tm{};
    const std::string s(text);
    if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                    &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
        return std::nullopt;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return static_cast<std::int64_t>(timegm(&tm));
}

} // namespace forky
