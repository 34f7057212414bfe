#include "child_xml.hpp"

#include "errors.hpp"

#include <pugixml.hpp>

#include <cstdio>
#include <random>
#include <sstream>

namespace forky {

namespace {

pugi::xml_document parse(std::string_view xml) {
    pugi::xml_document doc;
    if (!doc.load_buffer(xml.data(), xml.size()))
        throw Error("Malformed domain XML in a memory image");
    return doc;
}

void set_child_text(pugi::xml_node parent, const char* name, const std::string& text) {
    pugi::xml_node n = parent.child(name);
    if (!n)
        n = parent.append_child(name);
    n.text().set(text.c_str());
}

} // namespace

std::map<std::string, std::string> disk_sources(std::string_view domain_xml) {
    pugi::xml_document doc = parse(domain_xml);
    std::map<std::string, std::string> out;
    for (auto d : doc.select_nodes("/domain/devices/disk[@device='disk']")) {
        std::string target = d.node().child("target").attribute("dev").value();
        std::string file = d.node().child("source").attribute("file").value();
        if (!target.empty() && !file.empty())
            out[target] = file;
    }
    return out;
}

std::string make_child_xml(std::string_view parent_xml, const ChildPlan& plan) {
    pugi::xml_document doc = parse(parent_xml);
    pugi::xml_node dom = doc.child("domain");
    dom.remove_attribute("id");
    set_child_text(dom, "name", plan.name);
    set_child_text(dom, "uuid", plan.uuid);
    dom.remove_child("title");
    // A new VM generation ID where the parent has the device (one cannot be added: the
    // device is part of the migration stream).
    if (pugi::xml_node genid = dom.child("genid"); genid && !plan.lineage.genid.empty())
        genid.text().set(plan.lineage.genid.c_str());
    while (dom.remove_child("seclabel")) {
    }

    pugi::xml_node metadata = dom.child("metadata");
    if (!metadata)
        metadata = dom.insert_child_after("metadata", dom.child("uuid"));
    for (pugi::xml_node c = metadata.first_child(); c;) {
        pugi::xml_node next = c.next_sibling();
        std::string_view n = c.name();
        if (n == std::string(lineage_prefix) + ":lineage" ||
            std::string_view(
                c.attribute((std::string("xmlns:") + lineage_prefix).c_str()).value()) ==
                lineage_namespace)
            metadata.remove_child(c);
        c = next;
    }
    pugi::xml_document lineage;
    lineage.load_string(lineage_to_xml(plan.lineage).c_str());
    metadata.append_copy(lineage.document_element());

    pugi::xml_node devices = dom.child("devices");
    for (pugi::xml_node disk : devices.children("disk")) {
        if (std::string_view(disk.attribute("device").value()) != "disk")
            continue;
        std::string target = disk.child("target").attribute("dev").value();
        auto path = plan.disk_paths.find(target);
        if (path == plan.disk_paths.end())
            throw Error("The memory image has disk '" + target + "' that forky did not plan for");
        disk.remove_child("backingStore");
        pugi::xml_node source = disk.child("source");
        source.attribute("file").set_value(path->second.c_str());
        while (source.remove_child("seclabel")) {
        }
        disk.attribute("type").set_value("file");
    }
    for (const char* kind : {"serial", "console"}) {
        for (pugi::xml_node chr : devices.children(kind)) {
            if (std::string_view(chr.attribute("type").value()) == "pty")
                chr.remove_child("source"); // the parent's /dev/pts/N
            chr.remove_attribute("tty");
            pugi::xml_node log = chr.child("log");
            if (!log)
                continue;
            if (plan.console_log_path.empty())
                chr.remove_child(log);
            else
                log.attribute("file").set_value(plan.console_log_path.c_str());
        }
    }
    std::ostringstream out;
    doc.save(out, "  ", pugi::format_indent | pugi::format_no_declaration);
    return out.str();
}

std::string domain_genid(std::string_view domain_xml) {
    return parse(domain_xml).child("domain").child("genid").text().get();
}

std::string random_uuid() {
    std::random_device rd;
    unsigned char b[16];
    for (auto& x : b)
        x = static_cast<unsigned char>(rd());
    b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);
    b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);
    char s[37];
    std::snprintf(s, sizeof s,
                  "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                  b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
                  b[14], b[15]);
    return s;
}

} // namespace forky
