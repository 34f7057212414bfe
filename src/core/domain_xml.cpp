#include "domain_xml.hpp"

#include <pugixml.hpp>

#include <cassert>
#include <sstream>
#include <stdexcept>

namespace forky {

namespace {

pugi::xml_node add(pugi::xml_node parent, const char* name, const std::string& text = {}) {
    pugi::xml_node n = parent.append_child(name);
    if (!text.empty())
        n.text().set(text.c_str());
    return n;
}

void attr(pugi::xml_node node, const char* name, const std::string& value) {
    node.append_attribute(name) = value.c_str();
}

} // namespace

std::string build_domain_xml(const DomainSpec& spec, const DomainPlan& plan) {
    assert(plan.disk_paths.size() == spec.disks.size());
    pugi::xml_document doc;
    pugi::xml_node dom = doc.append_child("domain");
    attr(dom, "type", plan.domain_type);
    add(dom, "name", plan.name);
    if (!plan.uuid.empty())
        add(dom, "uuid", plan.uuid);
    // A VM generation ID (QEMU's vmgenid device): every child forky restores from this
    // VM's memory gets a new one, which tells the guest it was cloned.
    if (!plan.lineage.genid.empty())
        add(dom, "genid", plan.lineage.genid);

    pugi::xml_node memory = add(dom, "memory", std::to_string(spec.memory_bytes / 1024));
    attr(memory, "unit", "KiB");
    add(dom, "vcpu", std::to_string(spec.vcpus));

    pugi::xml_document meta;
    meta.load_string(lineage_to_xml(plan.lineage).c_str());
    add(dom, "metadata").append_copy(meta.document_element());

    pugi::xml_node os = add(dom, "os");
    pugi::xml_node type = add(os, "type", "hvm");
    attr(type, "arch", "x86_64");
    attr(type, "machine", "pc");
    add(os, "kernel", spec.boot.kernel.path.string());
    if (!spec.boot.initrd.empty())
        add(os, "initrd", spec.boot.initrd.path.string());
    if (!spec.boot.cmdline.empty())
        add(os, "cmdline", spec.boot.cmdline);

    pugi::xml_node features = add(dom, "features");
    add(features, "acpi");
    add(features, "apic");
    attr(add(dom, "clock"), "offset", "utc");
    add(dom, "on_poweroff", "destroy");
    add(dom, "on_reboot", "restart");
    add(dom, "on_crash", "destroy");

    pugi::xml_node devices = add(dom, "devices");
    for (std::size_t i = 0; i < spec.disks.size(); ++i) {
        pugi::xml_node disk = add(devices, "disk");
        attr(disk, "type", "file");
        attr(disk, "device", "disk");
        pugi::xml_node driver = add(disk, "driver");
        attr(driver, "name", "qemu");
        attr(driver, "type", "qcow2");
        attr(driver, "discard", "unmap");
        attr(add(disk, "source"), "file", plan.disk_paths[i]);
        pugi::xml_node target = add(disk, "target");
        attr(target, "dev", spec.disks[i].target);
        attr(target, "bus", "virtio");
    }
    if (spec.network == NetworkMode::user) {
        pugi::xml_node iface = add(devices, "interface");
        attr(iface, "type", "user");
        attr(add(iface, "model"), "type", "virtio");
    }
    // A pty serial port keeps `virsh console` working; its <log> is what `forky logs` reads.
    pugi::xml_node serial = add(devices, "serial");
    attr(serial, "type", "pty");
    if (!plan.console_log_path.empty()) {
        pugi::xml_node log = add(serial, "log");
        attr(log, "file", plan.console_log_path);
        attr(log, "append", "on");
    }
    attr(add(serial, "target"), "port", "0");
    pugi::xml_node console = add(devices, "console");
    attr(console, "type", "pty");
    pugi::xml_node ctarget = add(console, "target");
    attr(ctarget, "type", "serial");
    attr(ctarget, "port", "0");
    // The QEMU guest agent's channel (libvirt picks the socket and adds the virtio-serial
    // controller): what virDomainSetTime talks to.
    if (spec.guest_agent) {
        pugi::xml_node channel = add(devices, "channel");
        attr(channel, "type", "unix");
        pugi::xml_node target = add(channel, "target");
        attr(target, "type", "virtio");
        attr(target, "name", "org.qemu.guest_agent.0");
    }
    // GPUs passed through (gpus.hpp writes each <hostdev>).
    for (const auto& h : plan.hostdevs) {
        pugi::xml_document part;
        if (!part.load_string(h.c_str()) || !part.child("hostdev"))
            throw std::invalid_argument("not a <hostdev> element: " + h);
        devices.append_copy(part.child("hostdev"));
    }
    // No USB controller (libvirt adds one to a 'pc' machine by default): one device less
    // to start and to carry in every memory image.
    pugi::xml_node usb = add(devices, "controller");
    attr(usb, "type", "usb");
    attr(usb, "model", "none");
    // No balloon: a forked child must see exactly the memory its parent had.
    attr(add(devices, "memballoon"), "model", "none");

    std::ostringstream out;
    doc.save(out, "  ", pugi::format_indent | pugi::format_no_declaration);
    return out.str();
}

} // namespace forky
