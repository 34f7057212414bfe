#include "gpus.hpp"

#include "errors.hpp"

#include <libvirt/virterror.h>
#include <pugixml.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>

namespace forky {

namespace {

unsigned number(const char* text) {
    return static_cast<unsigned>(std::strtoul(text, nullptr, 0)); // "0x65" or "101"
}

std::string address_of(pugi::xml_node a) {
    return pci_address(number(a.attribute("domain").value()), number(a.attribute("bus").value()),
                       number(a.attribute("slot").value()),
                       number(a.attribute("function").value()));
}

} // namespace

std::string pci_address(unsigned domain, unsigned bus, unsigned slot, unsigned function) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%04x:%02x:%02x.%x", domain, bus, slot, function);
    return buf;
}

std::optional<Gpu> parse_gpu_device(std::string_view xml) {
    pugi::xml_document doc;
    if (!doc.load_buffer(xml.data(), xml.size()))
        throw Error("Malformed node device XML");
    pugi::xml_node dev = doc.child("device");
    pugi::xml_node pci = dev.find_child_by_attribute("capability", "type", "pci");
    if (!pci)
        return std::nullopt;
    Gpu g;
    g.pci_class = pci.child("class").text().get();
    // PCI base class 0x03: display controllers (VGA, XGA, 3D).
    if (g.pci_class.size() < 4 || (number(g.pci_class.c_str()) >> 16) != 0x03)
        return std::nullopt;
    g.device = dev.child("name").text().get();
    g.address =
        pci_address(pci.child("domain").text().as_uint(), pci.child("bus").text().as_uint(),
                    pci.child("slot").text().as_uint(), pci.child("function").text().as_uint());
    g.vendor_id = pci.child("vendor").attribute("id").value();
    g.vendor = pci.child("vendor").text().get();
    g.product_id = pci.child("product").attribute("id").value();
    g.product = pci.child("product").text().get();
    g.driver = dev.child("driver").child("name").text().get();
    if (pugi::xml_node group = pci.child("iommuGroup")) {
        g.iommu_group = group.attribute("number").as_uint();
        for (pugi::xml_node a : group.children("address")) {
            const std::string member = address_of(a);
            if (member != g.address)
                g.group_members.push_back(member);
        }
    }
    if (pugi::xml_node numa = pci.child("numa"))
        g.numa_node = numa.attribute("node").as_int();
    for (pugi::xml_node caps : pci.children("capability")) {
        if (std::string_view(caps.attribute("type").value()) != "mdev_types")
            continue;
        for (pugi::xml_node t : caps.children("type")) {
            MdevType m;
            m.id = t.attribute("id").value();
            m.name = t.child("name").text().get();
            m.available = t.child("availableInstances").text().as_uint();
            g.mdev_types.push_back(std::move(m));
        }
    }
    return g;
}

std::vector<std::string> domain_pci_hostdevs(std::string_view domain_xml) {
    pugi::xml_document doc;
    if (!doc.load_buffer(domain_xml.data(), domain_xml.size()))
        return {};
    std::vector<std::string> out;
    for (auto n : doc.select_nodes("/domain/devices/hostdev[@type='pci']/source/address"))
        out.push_back(address_of(n.node()));
    return out;
}

std::vector<Gpu> list_gpus(Host& host) {
    virNodeDevicePtr* raw = nullptr;
    const int n = lv_check(virConnectListAllNodeDevices(host.conn(), &raw, 0),
                           "Failed to list the node devices of '" + host.options().uri + "'");
    std::vector<Gpu> gpus;
    for (int i = 0; i < n; ++i) {
        char* xml = virNodeDeviceGetXMLDesc(raw[i], 0);
        virNodeDeviceFree(raw[i]);
        if (xml == nullptr) {
            clear_libvirt_error(); // gone since the listing
            continue;
        }
        std::optional<Gpu> g;
        try {
            g = parse_gpu_device(xml);
        } catch (const Error&) {
        }
        std::free(xml);
        if (g)
            gpus.push_back(std::move(*g));
    }
    std::free(raw);
    std::map<std::string, Gpu*> by_address;
    for (auto& g : gpus)
        by_address[g.address] = &g;
    for (const auto& d : host.domains()) {
        try {
            const std::string name = domain_name(d.get());
            // As it runs (a device plugged in live) and as defined.
            for (unsigned flags : {0U, static_cast<unsigned>(VIR_DOMAIN_XML_INACTIVE)})
                for (const auto& a : domain_pci_hostdevs(domain_xml(d.get(), flags)))
                    if (auto g = by_address.find(a);
                        g != by_address.end() &&
                        std::find(g->second->held_by.begin(), g->second->held_by.end(), name) ==
                            g->second->held_by.end())
                        g->second->held_by.push_back(name);
        } catch (const NotFoundError&) {
            // undefined meanwhile
        }
    }
    std::sort(gpus.begin(), gpus.end(),
              [](const Gpu& a, const Gpu& b) { return a.address < b.address; });
    return gpus;
}

} // namespace forky
