#include "lineage.hpp"

#include "errors.hpp"

#include <pugixml.hpp>

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

std::string qualified(const char* local) {
    return std::string(lineage_prefix) + ":" + local;
}

void add_text(pugi::xml_node parent, const char* local, const std::string& text) {
    parent.append_child(qualified(local).c_str()).text().set(text.c_str());
}

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

std::string lineage_to_xml(const Lineage& l) {
    pugi::xml_document doc;
    pugi::xml_node root = doc.append_child(qualified("lineage").c_str());
    root.append_attribute((std::string("xmlns:") + lineage_prefix).c_str()) = lineage_namespace;
    add_text(root, "generation", std::to_string(l.generation));
    if (!l.parent.empty())
        add_text(root, "parent", l.parent);
    if (!l.fork_point.empty())
        add_text(root, "fork-point", l.fork_point);
    add_text(root, "created-at", l.created_at);
    if (l.ttl)
        add_text(root, "ttl", std::to_string(l.ttl->count()));
    add_text(root, "pool", l.pool);
    for (const auto& v : l.volumes) {
        pugi::xml_node n = root.append_child(qualified("volume").c_str());
        n.append_attribute("role") = v.role.c_str();
        if (!v.target.empty())
            n.append_attribute("target") = v.target.c_str();
        n.text().set(v.name.c_str());
    }
    if (!l.spec.empty())
        add_text(root, "spec", l.spec);
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
    l.fork_point = child_local(root, "fork-point").text().get();
    l.created_at = child_local(root, "created-at").text().get();
    if (pugi::xml_node ttl = child_local(root, "ttl"))
        l.ttl = std::chrono::seconds(ttl.text().as_llong());
    l.pool = child_local(root, "pool").text().get();
    for (pugi::xml_node c : root.children()) {
        if (local_name(c) == "volume")
            l.volumes.push_back(
                {c.attribute("role").value(), c.attribute("target").value(), c.text().get()});
    }
    l.spec = child_local(root, "spec").text().get();
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

} // namespace forky
