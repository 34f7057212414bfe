#include "fork_point.hpp"

#include "errors.hpp"
#include "lineage.hpp"
#include "log.hpp"
#include "names.hpp"

#include <libvirt/virterror.h>
#include <pugixml.hpp>

#include <cctype>
#include <sstream>

namespace forky {

namespace {

constexpr std::string_view record_suffix = ".point";

std::string to_xml(const pugi::xml_document& doc, bool indent) {
    std::ostringstream out;
    if (indent)
        doc.save(out, "  ", pugi::format_indent | pugi::format_no_declaration);
    else
        doc.save(out, "", pugi::format_raw | pugi::format_no_declaration);
    return out.str();
}

VmState state_from(std::string_view s) {
    for (VmState v : {VmState::running, VmState::idle, VmState::paused, VmState::shutting_down,
                      VmState::shut_off, VmState::crashed, VmState::suspended})
        if (s == to_string(v))
            return v;
    return VmState::unknown;
}

} // namespace

const char* to_string(ForkPoint::Kind k) {
    switch (k) {
    case ForkPoint::Kind::fork:
        return "fork";
    case ForkPoint::Kind::snapshot:
        return "snapshot";
    case ForkPoint::Kind::pre_revert:
        return "pre-revert";
    }
    return "?";
}

std::string fork_point_to_xml(const ForkPoint& fp) {
    pugi::xml_document doc;
    pugi::xml_node root = doc.append_child("fork-point");
    root.append_attribute("xmlns") = fork_point_namespace;
    auto text = [&root](const char* name, const std::string& value) {
        root.append_child(name).text().set(value.c_str());
    };
    text("id", fp.id);
    text("name", fp.name);
    text("kind", to_string(fp.kind));
    text("seq", std::to_string(fp.seq));
    pugi::xml_node vm = root.append_child("vm");
    vm.append_attribute("uuid") = fp.vm_uuid.c_str();
    vm.text().set(fp.vm.c_str());
    text("created-at", fp.created_at);
    text("host", fp.host);
    text("pool", fp.pool);
    text("state", to_string(fp.state));
    text("operation", fp.operation);
    if (!fp.memory_image.empty())
        text("memory-image", fp.memory_image);
    for (const auto& [target, layer] : fp.layers) {
        pugi::xml_node l = root.append_child("layer");
        l.append_attribute("target") = target.c_str();
        l.text().set(layer.c_str());
    }
    if (!fp.vm_lineage.empty())
        text("vm-lineage", fp.vm_lineage);
    if (!fp.shipped_from.empty())
        text("shipped-from", fp.shipped_from);
    for (const auto& [role, volume] : fp.boot_files) {
        pugi::xml_node b = root.append_child("boot-file");
        b.append_attribute("role") = role.c_str();
        b.text().set(volume.c_str());
    }
    for (const auto& [volume, sha] : fp.checksums) {
        pugi::xml_node c = root.append_child("checksum");
        c.append_attribute("volume") = volume.c_str();
        c.append_attribute("sha256") = sha.c_str();
    }
    return to_xml(doc, true);
}

ForkPoint fork_point_from_xml(std::string_view xml) {
    pugi::xml_document doc;
    if (!doc.load_buffer(xml.data(), xml.size()))
        throw Error("Malformed fork point record");
    pugi::xml_node root = doc.child("fork-point");
    if (!root || std::string_view(root.attribute("xmlns").value()) != fork_point_namespace)
        throw Error("Not a forky fork point record");
    ForkPoint fp;
    fp.id = root.child("id").text().get();
    fp.name = root.child("name").text().get();
    const std::string kind = root.child("kind").text().get();
    if (kind == "fork")
        fp.kind = ForkPoint::Kind::fork;
    else if (kind == "snapshot")
        fp.kind = ForkPoint::Kind::snapshot;
    else if (kind == "pre-revert")
        fp.kind = ForkPoint::Kind::pre_revert;
    else
        throw Error("Malformed fork point record: kind '" + kind + "'");
    fp.seq = root.child("seq").text().as_uint();
    fp.vm = root.child("vm").text().get();
    fp.vm_uuid = root.child("vm").attribute("uuid").value();
    fp.created_at = root.child("created-at").text().get();
    fp.host = root.child("host").text().get();
    fp.pool = root.child("pool").text().get();
    fp.state = state_from(root.child("state").text().get());
    fp.operation = root.child("operation").text().get();
    fp.memory_image = root.child("memory-image").text().get();
    for (pugi::xml_node l : root.children("layer"))
        fp.layers[l.attribute("target").value()] = l.text().get();
    fp.vm_lineage = root.child("vm-lineage").text().get();
    fp.shipped_from = root.child("shipped-from").text().get();
    for (pugi::xml_node b : root.children("boot-file")) {
        const std::string role = b.attribute("role").value();
        if (role != "kernel" && role != "initrd")
            throw Error("Malformed fork point record: boot-file role '" + role + "'");
        fp.boot_files[role] = b.text().get();
    }
    for (pugi::xml_node c : root.children("checksum"))
        fp.checksums[c.attribute("volume").value()] = c.attribute("sha256").value();
    if (fp.id.empty() || name_problem(fp.name) || name_problem(fp.vm) || fp.seq == 0 ||
        fp.layers.empty())
        throw Error("Malformed fork point record: id, name, vm, seq or layers missing");
    return fp;
}

std::string fork_point_record_name(const std::string& vm, unsigned seq) {
    return vm + ".fp" + std::to_string(seq) + std::string(record_suffix);
}

std::string fork_point_memory_name(const std::string& vm, unsigned seq) {
    return vm + ".fp" + std::to_string(seq) + ".mem";
}

std::string layer_volume_name(const std::string& vm, const std::string& target, unsigned seq) {
    return vm + "." + target + ".fp" + std::to_string(seq) + ".qcow2";
}

std::optional<std::string> snapshot_name_problem(std::string_view name) {
    if (auto why = name_problem(name))
        return why;
    if (name.size() > 2 && name.substr(0, 2) == "fp" &&
        name.find_first_not_of("0123456789", 2) == std::string_view::npos)
        return "names fpN are forky's own, for the fork points of `forky fork`";
    return std::nullopt;
}

std::optional<std::string> fork_point_problem(const ForkPoint& fp,
                                              const std::string& record_volume) {
    if (record_volume != fork_point_record_name(fp.vm, fp.seq))
        return "it is about '" + fp.label() + "' (seq " + std::to_string(fp.seq) +
               "), whose record would be '" + fork_point_record_name(fp.vm, fp.seq) + "'";
    if (!fp.memory_image.empty() && fp.memory_image != fork_point_memory_name(fp.vm, fp.seq))
        return "its memory image '" + fp.memory_image + "' is not '" +
               fork_point_memory_name(fp.vm, fp.seq) + "'";
    for (const auto& [target, layer] : fp.layers) {
        // The VM's first top, or a top made by one of its earlier fork points.
        bool ok = !name_problem(target).has_value() && layer == fp.vm + "." + target + ".qcow2";
        const std::string prefix = fp.vm + "." + target + ".fp";
        if (!ok && layer.size() > prefix.size() + 6 &&
            layer.compare(0, prefix.size(), prefix) == 0 &&
            layer.compare(layer.size() - 6, 6, ".qcow2") == 0) {
            const std::string n = layer.substr(prefix.size(), layer.size() - 6 - prefix.size());
            ok = !n.empty() && n.size() < 10 &&
                 n.find_first_not_of("0123456789") == std::string::npos && n[0] != '0' &&
                 std::stoul(n) < fp.seq;
        }
        if (!ok)
            return "its layer of disk '" + target + "', '" + layer +
                   "', is not one of the VM's own layers";
    }
    return std::nullopt;
}

std::vector<ForkPoint> read_fork_points(Host& host, std::vector<UnreadableRecord>* unreadable) {
    std::vector<ForkPoint> out;
    for (const auto& v : host.volumes()) {
        if (v.name.size() <= record_suffix.size() ||
            v.name.compare(v.name.size() - record_suffix.size(), record_suffix.size(),
                           record_suffix) != 0)
            continue;
        try {
            std::string text = host.read_volume(v.name, 0).data;
            text = text.substr(0, text.find('\0'));
            if (text.find_first_not_of(" \t\r\n") == std::string::npos)
                continue; // made, not written yet: its operation's journal names it
            ForkPoint fp = fork_point_from_xml(text);
            if (auto why = fork_point_problem(fp, v.name))
                throw Error("Untrusted fork point record: " + *why);
            fp.record_volume = v.name;
            if (!fp.memory_image.empty())
                if (auto mem = host.volume_info(fp.memory_image))
                    fp.memory_bytes = mem->allocation;
            out.push_back(std::move(fp));
        } catch (const NotFoundError&) {
            // removed while listed
        } catch (const Error& e) {
            logger("history")->warn("Fork point record '{}' is unreadable: {}", v.name, e.what());
            if (unreadable)
                unreadable->push_back({v.name, e.what()});
        }
    }
    return out;
}

void write_fork_point(Host& host, const ForkPoint& fp) {
    std::string xml = fork_point_to_xml(fp);
    if (xml.size() >= fork_point_record_capacity)
        throw Error("The record of fork point '" + fp.label() + "' is too large");
    host.write_volume(fork_point_record_name(fp.vm, fp.seq), 0, xml + '\0');
}

void define_snapshot_metadata(Host& host, const ForkPoint& fp, const std::string& domain_xml) {
    DomainPtr dom(virDomainLookupByUUIDString(host.conn(), fp.vm_uuid.c_str()));
    if (!dom) {
        expect_absent(VIR_ERR_NO_DOMAIN, "Failed to look up VM '" + fp.vm + "'");
        return;
    }
    const std::string record = fork_point_record_name(fp.vm, fp.seq);
    StorageVolPtr record_vol = host.find_volume(record);
    if (!record_vol)
        throw NotFoundError("No record '" + record + "' of fork point '" + fp.label() + "'");
    const std::string record_path = host.volume_path(record_vol.get());

    pugi::xml_document doc;
    pugi::xml_node s = doc.append_child("domainsnapshot");
    s.append_child("name").text().set(fp.name.c_str());
    std::string layers;
    for (const auto& [target, layer] : fp.layers)
        layers += (layers.empty() ? "" : ",") + target + ":" + layer;
    const std::string description =
        "forky " + std::string(to_string(fp.kind)) + " " + fp.label() + " id=" + fp.id +
        " vm-uuid=" + fp.vm_uuid +
        " memory=" + (fp.memory_image.empty() ? std::string("none") : fp.memory_image) +
        " layers=" + layers + " record=" + record + " (forky snapshots " + fp.vm +
        "; remove with forky rm, never virsh snapshot-delete)";
    s.append_child("description").text().set(description.c_str());
    s.append_child("state").text().set(fp.state == VmState::shut_off ? "shutoff"
                                                                     : to_string(fp.state));
    if (auto t = parse_rfc3339(fp.created_at))
        s.append_child("creationTime").text().set(std::to_string(*t).c_str());
    pugi::xml_node mem = s.append_child("memory");
    if (fp.memory_image.empty()) {
        mem.append_attribute("snapshot") = "no";
    } else {
        StorageVolPtr m = host.find_volume(fp.memory_image);
        mem.append_attribute("snapshot") = "external";
        mem.append_attribute("file") = m ? host.volume_path(m.get()).c_str() : "";
    }
    // Each disk "snapshotted" into the record, which is in no disk's chain: libvirt finds
    // nothing to merge and refuses snapshot-delete and snapshot-revert.
    pugi::xml_node disks = s.append_child("disks");
    for (const auto& [target, layer] : fp.layers) {
        pugi::xml_node d = disks.append_child("disk");
        d.append_attribute("name") = target.c_str();
        d.append_attribute("snapshot") = "external";
        d.append_attribute("type") = "file";
        d.append_child("driver").append_attribute("type") = "qcow2";
        d.append_child("source").append_attribute("file") = record_path.c_str();
    }
    pugi::xml_document dom_doc;
    if (!dom_doc.load_string(domain_xml.c_str()))
        throw Error("Malformed domain XML of fork point '" + fp.label() + "'");
    s.append_copy(dom_doc.document_element());
    SnapshotPtr snap(virDomainSnapshotCreateXML(dom.get(), to_xml(doc, false).c_str(),
                                                VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE));
    lv_check(snap.get(), "Failed to record fork point '" + fp.label() + "' as a libvirt snapshot");
}

void remove_snapshot_metadata(Host& host, const ForkPoint& fp) {
    DomainPtr dom(virDomainLookupByUUIDString(host.conn(), fp.vm_uuid.c_str()));
    if (!dom) {
        clear_libvirt_error();
        return;
    }
    SnapshotPtr snap(virDomainSnapshotLookupByName(dom.get(), fp.name.c_str(), 0));
    if (!snap) {
        clear_libvirt_error();
        return;
    }
    if (virDomainSnapshotDelete(snap.get(), VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY) < 0) {
        try {
            throw_libvirt_error("Failed to remove libvirt's record of '" + fp.label() + "'");
        } catch (const NotFoundError&) {
        }
    }
}

} // namespace forky
