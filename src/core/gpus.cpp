#include "gpus.hpp"

#include "child_xml.hpp"
#include "errors.hpp"
#include "log.hpp"
#include "vm.hpp"
#include "yaml_reader.hpp"

#include <libvirt/virterror.h>
#include <pugixml.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <set>
#include <sstream>
#include <thread>

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

bool load(pugi::xml_document& doc, std::string_view xml) {
    return static_cast<bool>(doc.load_buffer(xml.data(), xml.size()));
}

// libvirt's node-device name of a PCI function: "pci_0000_65_00_0".
std::string pci_device_name(const std::string& address) {
    std::string n = "pci_" + address;
    std::replace(n.begin(), n.end(), ':', '_');
    std::replace(n.begin(), n.end(), '.', '_');
    return n;
}

// The PCI function a node device's <device> element describes (its pci capability).
PciFunction pci_function_of(pugi::xml_node dev, pugi::xml_node pci) {
    PciFunction f;
    f.pci_class = pci.child("class").text().get();
    f.address =
        pci_address(pci.child("domain").text().as_uint(), pci.child("bus").text().as_uint(),
                    pci.child("slot").text().as_uint(), pci.child("function").text().as_uint());
    f.driver = dev.child("driver").child("name").text().get();
    if (pugi::xml_node group = pci.child("iommuGroup"))
        f.iommu_group = group.attribute("number").as_uint();
    return f;
}

std::optional<PciFunction> parse_pci_function(std::string_view xml) {
    pugi::xml_document doc;
    if (!load(doc, xml))
        return std::nullopt;
    pugi::xml_node dev = doc.child("device");
    pugi::xml_node pci = dev.find_child_by_attribute("capability", "type", "pci");
    if (!pci)
        return std::nullopt;
    return pci_function_of(dev, pci);
}

// Each node device of the host with its XML; one gone since the listing is skipped.
// (Flags 0: the test driver refuses the capability filters virsh passes.)
void for_each_node_device(Host& host,
                          const std::function<void(virNodeDevicePtr, const std::string&)>& fn) {
    virNodeDevicePtr* raw = nullptr;
    const int n = lv_check(virConnectListAllNodeDevices(host.conn(), &raw, 0),
                           "Failed to list the node devices of '" + host.options().uri + "'");
    struct Free {
        virNodeDevicePtr* raw;
        int n;
        ~Free() {
            for (int i = 0; i < n; ++i)
                virNodeDeviceFree(raw[i]);
            std::free(raw);
        }
    } release{raw, n};
    for (int i = 0; i < n; ++i) {
        char* xml = virNodeDeviceGetXMLDesc(raw[i], 0);
        if (xml == nullptr) {
            clear_libvirt_error(); // gone since the listing
            continue;
        }
        const std::string text = xml;
        std::free(xml);
        fn(raw[i], text);
    }
}

void add_holder(std::vector<std::string>& held_by, const std::string& name) {
    if (std::find(held_by.begin(), held_by.end(), name) == held_by.end())
        held_by.push_back(name);
}

std::string quoted_list(const std::vector<std::string>& names) {
    std::string out;
    for (const auto& n : names)
        out += (out.empty() ? "'" : ", '") + n + "'";
    return out;
}

std::string model_of(const Gpu& g) {
    std::string m = g.vendor.empty() ? g.vendor_id : g.vendor;
    m += " " + (g.product.empty() ? g.product_id : g.product);
    return m;
}

// Host drivers that leave an IOMMU group usable by VFIO.
bool vfio_friendly(const std::string& driver) {
    return driver.empty() || driver == "vfio-pci" || driver == "pci-stub";
}

bool is_bridge(const std::string& pci_class) {
    return (number(pci_class.c_str()) >> 8) == 0x0604;
}

// What is taken while one pick is made: functions and mdev instances per (GPU, type).
struct Taken {
    std::set<std::string> functions;
    std::map<std::pair<std::string, std::string>, unsigned> mdevs;

    void add(const GpuAssignment& a) {
        if (a.kind == GpuAssignment::Kind::pci)
            functions.insert(a.address);
        else
            ++mdevs[{a.address, a.mdev_type}];
    }
    bool sliced(const std::string& gpu) const {
        for (const auto& [k, n] : mdevs)
            if (k.first == gpu && n > 0)
                return true;
        return false;
    }
};

bool held_by_other(const std::vector<std::string>& held_by, const std::string& self) {
    return std::any_of(held_by.begin(), held_by.end(),
                       [&](const std::string& h) { return h != self; });
}

// The other functions of `address`'s IOMMU group.
std::vector<std::string> group_others(const GpuInventory& inv, const std::string& address) {
    std::vector<std::string> out;
    auto f = inv.functions.find(address);
    if (f == inv.functions.end() || !f->second.iommu_group)
        return out;
    for (const auto& [other, g] : inv.functions)
        if (other != address && g.iommu_group == f->second.iommu_group)
            out.push_back(other);
    return out;
}

// Why the function at `address` cannot be passed through to `self` now, or empty:
// missing, held by another domain, taken by this pick (whole or sliced), or its IOMMU group
// has a member that is not free (not in `along`: the functions the same domain gets).
std::string not_free(const GpuInventory& inv, const std::string& address, const std::string& self,
                     const Taken& taken, const std::set<std::string>& along) {
    auto f = inv.functions.find(address);
    if (f == inv.functions.end())
        return "there is no PCI device " + address;
    if (held_by_other(f->second.held_by, self))
        return address + " is held by " + quoted_list(f->second.held_by);
    if (taken.functions.count(address))
        return address + " is taken already by another part of the same request";
    if (taken.sliced(address))
        return address + " is to be sliced into a mediated device by the same request";
    for (const auto& m : inv.mdevs)
        if (m.parent == address)
            return address + " is sliced into mediated devices (" + m.uuid + ")";
    if (!f->second.iommu_group)
        return address + " is in no IOMMU group (no IOMMU on the host?)";
    for (const auto& other : group_others(inv, address)) {
        if (along.count(other))
            continue;
        const PciFunction& g = inv.functions.at(other);
        const std::string group =
            "IOMMU group " + std::to_string(*f->second.iommu_group) + " of " + address + " has ";
        if (held_by_other(g.held_by, self))
            return group + other + ", held by " + quoted_list(g.held_by);
        if (taken.functions.count(other))
            return group + other + ", taken already by another part of the same request";
        if (!vfio_friendly(g.driver) && !is_bridge(g.pci_class))
            return group + other + " bound to the host's driver '" + g.driver +
                   "': pass it through too (gpus: [{pci: " + address + "}, {pci: " + other +
                   "}]) or bind it to vfio-pci";
    }
    return {};
}

// For picks forky makes on its own (vendor:, a policy's children): a GPU the host's own
// driver drives may be in use there (a display, CUDA on the host); only GPUs set aside for
// guests (vfio-pci, pci-stub, or no driver) are taken.
std::string not_set_aside(const Gpu& g) {
    if (vfio_friendly(g.driver))
        return {};
    return g.address + " is bound to the host's driver '" + g.driver +
           "' (bind it to vfio-pci to share it, or name it with pci:)";
}

// The members of a GPU's group that go with it to the same domain: its other functions
// (audio, USB-C) that are not bridges and not held; what not_free then checks.
std::set<std::string> with_companions(const GpuInventory& inv, const std::string& address) {
    std::set<std::string> out{address};
    for (const auto& other : group_others(inv, address)) {
        const PciFunction& g = inv.functions.at(other);
        if (!is_bridge(g.pci_class) && g.held_by.empty())
            out.insert(other);
    }
    return out;
}

unsigned mdev_free(const Gpu& g, const std::string& type, const Taken& taken) {
    for (const auto& t : g.mdev_types)
        if (t.id == type) {
            auto used = taken.mdevs.find({g.address, type});
            const unsigned n = used == taken.mdevs.end() ? 0 : used->second;
            return t.available > n ? t.available - n : 0;
        }
    return 0;
}

// A new mdev of `type` on any GPU that offers one, or why none does. A GPU passed through
// whole (to a domain, or by the same request) has no slices to give.
std::optional<GpuAssignment> pick_mdev(const GpuInventory& inv, const std::string& type,
                                       const std::string& self, const Taken& taken,
                                       std::string& why) {
    std::vector<std::string> full;
    for (const auto& g : inv.gpus) {
        bool offers = false;
        for (const auto& t : g.mdev_types)
            offers = offers || t.id == type;
        if (!offers)
            continue;
        if (held_by_other(g.held_by, self)) {
            full.push_back(g.address + " is passed through whole to " + quoted_list(g.held_by));
            continue;
        }
        if (taken.functions.count(g.address)) {
            full.push_back(g.address + " is passed through whole by the same request");
            continue;
        }
        if (mdev_free(g, type, taken) == 0) {
            full.push_back(g.address + " has no instance left");
            continue;
        }
        GpuAssignment a;
        a.kind = GpuAssignment::Kind::mdev;
        a.address = g.address;
        a.mdev_type = type;
        return a;
    }
    why = full.empty() ? "no GPU offers mediated devices of type '" + type + "'"
                       : "no free mediated device of type '" + type + "' (";
    if (!full.empty()) {
        for (std::size_t i = 0; i < full.size(); ++i)
            why += (i ? "; " : "") + full[i];
        why += ")";
    }
    return std::nullopt;
}

} // namespace

std::string pci_address(unsigned domain, unsigned bus, unsigned slot, unsigned function) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%04x:%02x:%02x.%x", domain, bus, slot, function);
    return buf;
}

const Gpu* GpuInventory::gpu(const std::string& address) const {
    for (const auto& g : gpus)
        if (g.address == address)
            return &g;
    return nullptr;
}

std::optional<Gpu> parse_gpu_device(std::string_view xml) {
    pugi::xml_document doc;
    if (!load(doc, xml))
        throw Error("Malformed node device XML");
    pugi::xml_node dev = doc.child("device");
    pugi::xml_node pci = dev.find_child_by_attribute("capability", "type", "pci");
    if (!pci)
        return std::nullopt;
    const PciFunction f = pci_function_of(dev, pci);
    // PCI base class 0x03: display controllers (VGA, XGA, 3D).
    if (f.pci_class.size() < 4 || (number(f.pci_class.c_str()) >> 16) != 0x03)
        return std::nullopt;
    Gpu g;
    g.pci_class = f.pci_class;
    g.address = f.address;
    g.driver = f.driver;
    g.iommu_group = f.iommu_group;
    g.device = dev.child("name").text().get();
    g.vendor_id = pci.child("vendor").attribute("id").value();
    g.vendor = pci.child("vendor").text().get();
    g.product_id = pci.child("product").attribute("id").value();
    g.product = pci.child("product").text().get();
    if (pugi::xml_node group = pci.child("iommuGroup")) {
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

std::optional<Mdev> parse_mdev_device(std::string_view xml) {
    pugi::xml_document doc;
    if (!load(doc, xml))
        return std::nullopt;
    pugi::xml_node dev = doc.child("device");
    pugi::xml_node cap = dev.find_child_by_attribute("capability", "type", "mdev");
    if (!cap)
        return std::nullopt;
    Mdev m;
    m.uuid = cap.child("uuid").text().get();
    m.type = cap.child("type").attribute("id").value();
    // The parent's node-device name: "pci_0000_65_00_0".
    std::string parent = dev.child("parent").text().get();
    unsigned d = 0, b = 0, s = 0, f = 0;
    if (std::sscanf(parent.c_str(), "pci_%x_%x_%x_%x", &d, &b, &s, &f) == 4)
        m.parent = pci_address(d, b, s, f);
    if (m.uuid.empty())
        return std::nullopt;
    return m;
}

std::vector<std::string> domain_pci_hostdevs(std::string_view domain_xml) {
    std::vector<std::string> out;
    for (const auto& a : domain_gpus(domain_xml))
        if (a.kind == GpuAssignment::Kind::pci)
            out.push_back(a.address);
    return out;
}

std::vector<GpuAssignment> domain_gpus(std::string_view domain_xml, const GpuInventory* inventory) {
    pugi::xml_document doc;
    if (!load(doc, domain_xml))
        return {};
    std::vector<GpuAssignment> out;
    for (pugi::xml_node h : doc.child("domain").child("devices").children("hostdev")) {
        const std::string_view type = h.attribute("type").value();
        pugi::xml_node a = h.child("source").child("address");
        GpuAssignment g;
        if (type == "pci") {
            g.address = address_of(a);
        } else if (type == "mdev") {
            g.kind = GpuAssignment::Kind::mdev;
            g.mdev_uuid = a.attribute("uuid").value();
            if (inventory)
                for (const auto& m : inventory->mdevs)
                    if (m.uuid == g.mdev_uuid) {
                        g.address = m.parent;
                        g.mdev_type = m.type;
                    }
        } else {
            continue;
        }
        out.push_back(std::move(g));
    }
    return out;
}

std::string describe(const GpuAssignment& a) {
    if (a.kind == GpuAssignment::Kind::pci)
        return a.address;
    return "mdev " + (a.mdev_type.empty() ? a.mdev_uuid : a.mdev_type) +
           (a.address.empty() ? "" : " on " + a.address);
}

std::string hostdev_xml(const GpuAssignment& a) {
    pugi::xml_document doc;
    pugi::xml_node h = doc.append_child("hostdev");
    h.append_attribute("mode") = "subsystem";
    if (a.kind == GpuAssignment::Kind::pci) {
        h.append_attribute("type") = "pci";
        h.append_attribute("managed") = "yes";
        unsigned d = 0, b = 0, s = 0, f = 0;
        std::sscanf(a.address.c_str(), "%x:%x:%x.%x", &d, &b, &s, &f);
        pugi::xml_node addr = h.append_child("source").append_child("address");
        char buf[16];
        std::snprintf(buf, sizeof buf, "0x%04x", d);
        addr.append_attribute("domain") = buf;
        std::snprintf(buf, sizeof buf, "0x%02x", b);
        addr.append_attribute("bus") = buf;
        std::snprintf(buf, sizeof buf, "0x%02x", s);
        addr.append_attribute("slot") = buf;
        std::snprintf(buf, sizeof buf, "0x%x", f);
        addr.append_attribute("function") = buf;
    } else {
        h.append_attribute("type") = "mdev";
        h.append_attribute("model") = "vfio-pci";
        h.append_child("source").append_child("address").append_attribute("uuid") =
            a.mdev_uuid.c_str();
    }
    std::ostringstream out;
    doc.save(out, "  ", pugi::format_indent | pugi::format_no_declaration);
    return out.str();
}

void require_passthrough(std::string_view domcaps_xml, bool pci, bool mdev,
                         const std::string& where) {
    pugi::xml_document doc;
    if (!load(doc, domcaps_xml))
        throw Error("Malformed domain capabilities from " + where);
    pugi::xml_node hostdev = doc.child("domainCapabilities").child("devices").child("hostdev");
    auto values = [&](const char* name) {
        std::set<std::string> out;
        for (pugi::xml_node v :
             hostdev.find_child_by_attribute("enum", "name", name).children("value"))
            out.insert(v.text().get());
        return out;
    };
    if (std::string_view(hostdev.attribute("supported").value()) != "yes")
        throw ConflictError(where + " cannot pass devices through: libvirt's domain capabilities "
                                    "say host devices are not supported there");
    if ((pci || mdev) && values("pciBackend").count("vfio") == 0)
        throw ConflictError(where +
                            " cannot pass devices through: libvirt's domain capabilities list no "
                            "VFIO PCI backend (no IOMMU enabled, e.g. intel_iommu=on, or no "
                            "vfio-pci module)");
    if (mdev && values("subsysType").count("mdev") == 0)
        throw ConflictError(where + " cannot give mediated devices to a domain: libvirt's domain "
                                    "capabilities list no 'mdev' host device type");
}

std::vector<GpuAssignment> pick_gpus(const GpuInventory& inv, const std::vector<GpuSpec>& wanted,
                                     const std::string& self, const std::string& where,
                                     const std::vector<GpuAssignment>& reserved) {
    Taken taken;
    for (const auto& r : reserved)
        taken.add(r);
    // Functions the spec names go together: one may be in the other's group. A function
    // that is no GPU is allowed only beside a GPU of its group (its audio function, say).
    std::set<std::string> along;
    for (const auto& w : wanted)
        if (w.kind == GpuSpec::Kind::pci)
            along.insert(w.pci);
    for (const auto& w : wanted) {
        if (w.kind != GpuSpec::Kind::pci || inv.functions.count(w.pci) == 0 || inv.gpu(w.pci))
            continue;
        bool beside_gpu = false;
        for (const auto& other : group_others(inv, w.pci))
            beside_gpu = beside_gpu || (along.count(other) && inv.gpu(other));
        if (!beside_gpu)
            throw ConflictError("Cannot pass " + w.pci + " through on " + where +
                                ": it is no GPU (PCI class " + inv.functions.at(w.pci).pci_class +
                                "), and no GPU of its IOMMU group is named beside it");
    }
    std::vector<GpuAssignment> out;
    auto take = [&](GpuAssignment a) {
        taken.add(a);
        out.push_back(std::move(a));
    };
    // Whole devices first (named, then any of a vendor), slices last: a GPU is never both.
    for (const auto& w : wanted) {
        if (w.kind != GpuSpec::Kind::pci)
            continue;
        if (const std::string why = not_free(inv, w.pci, self, taken, along); !why.empty())
            throw ConflictError(
                "Cannot pass " + w.pci + " through on " + where + ": " + why +
                (why.rfind("there is no", 0) == 0 ? " ('forky gpus' lists them)" : ""));
        take({GpuAssignment::Kind::pci, w.pci, "", ""});
    }
    for (const auto& w : wanted) {
        if (w.kind != GpuSpec::Kind::vendor)
            continue;
        std::vector<std::string> why_not;
        unsigned got = 0, seen = 0;
        for (const auto& g : inv.gpus) {
            if (got == w.count)
                break;
            if (g.vendor_id != w.vendor_id || along.count(g.address))
                continue;
            ++seen;
            std::set<std::string> with = along;
            with.insert(g.address);
            std::string why = not_set_aside(g);
            if (why.empty())
                why = not_free(inv, g.address, self, taken, with);
            if (!why.empty()) {
                why_not.push_back(why);
                continue;
            }
            take({GpuAssignment::Kind::pci, g.address, "", ""});
            ++got;
        }
        if (got < w.count) {
            std::string msg = "Needs " + std::to_string(w.count) + " free " + w.vendor + " GPU" +
                              (w.count == 1 ? "" : "s") + " on " + where + ", found " +
                              std::to_string(got) + " (of " + std::to_string(seen) + ")";
            for (const auto& y : why_not)
                msg += "; " + y;
            throw ConflictError(msg);
        }
    }
    for (const auto& w : wanted) {
        if (w.kind != GpuSpec::Kind::mdev)
            continue;
        for (unsigned i = 0; i < w.count; ++i) {
            std::string why;
            Taken with_named = taken;
            with_named.functions.insert(along.begin(), along.end());
            auto a = pick_mdev(inv, w.mdev_type, self, with_named, why);
            if (!a)
                throw ConflictError("Cannot make a mediated device on " + where + ": " + why);
            take(*a);
        }
    }
    return out;
}

std::vector<std::vector<GpuAssignment>>
pick_child_gpus(const GpuInventory& inv, const std::vector<GpuAssignment>& parent_gpus,
                const GpuPolicy& policy, unsigned count, const std::string& where) {
    std::vector<std::vector<GpuAssignment>> out(count);
    // The parent's GPUs proper: its mdevs and the GPUs it holds whole; the other functions
    // it holds (a GPU's audio function) are companions, which go with a GPU.
    std::vector<GpuAssignment> primary;
    for (const auto& pg : parent_gpus)
        if (pg.kind == GpuAssignment::Kind::mdev || inv.gpu(pg.address))
            primary.push_back(pg);
    if (policy.children == GpuPolicy::Children::none || primary.empty())
        return out;
    const std::string rule =
        " (GPU policy " + (policy.source.empty() ? std::string("default") : policy.source) +
        ": children: " +
        (policy.children == GpuPolicy::Children::exclusive ? "exclusive" : "mdev") + ")";
    const std::string needed = std::to_string(count * primary.size());
    Taken taken;
    unsigned given = 0;
    for (unsigned child = 0; child < count; ++child) {
        for (const auto& pg : primary) {
            if (pg.kind == GpuAssignment::Kind::mdev && pg.mdev_type.empty())
                throw ConflictError("The parent's mediated device " + pg.mdev_uuid +
                                    " is not among the node devices of " + where +
                                    ": its type is unknown, so its children cannot get one" + rule);
            const Gpu* model = inv.gpu(pg.address);
            if (policy.children == GpuPolicy::Children::exclusive) {
                if (model == nullptr)
                    throw ConflictError("The parent's GPU " + describe(pg) +
                                        " is not among the GPUs of " + where +
                                        ": no model to match" + rule);
                std::vector<std::string> found;
                std::vector<std::string> why_not;
                for (const auto& g : inv.gpus) {
                    if (g.vendor_id != model->vendor_id || g.product_id != model->product_id)
                        continue;
                    const std::set<std::string> along = with_companions(inv, g.address);
                    std::string why = not_set_aside(g);
                    if (why.empty())
                        why = not_free(inv, g.address, "", taken, along);
                    for (const auto& c : along)
                        if (why.empty() && c != g.address && taken.functions.count(c))
                            why = g.address + "'s " + c + " goes to another child";
                    if (!why.empty()) {
                        why_not.push_back(why);
                        continue;
                    }
                    found.assign(along.begin(), along.end());
                    // The GPU first, then the functions that go with it.
                    std::stable_partition(found.begin(), found.end(),
                                          [&](const std::string& a) { return a == g.address; });
                    break;
                }
                if (found.empty()) {
                    std::string msg = "Not enough free GPUs like " + pg.address + " (" +
                                      model_of(*model) + ") on " + where + ": the fork needs " +
                                      needed + ", " + std::to_string(given) + " free" + rule;
                    for (const auto& y : why_not)
                        msg += "; " + y;
                    throw ConflictError(msg);
                }
                for (const auto& f : found) {
                    GpuAssignment a{GpuAssignment::Kind::pci, f, "", ""};
                    taken.add(a);
                    out[child].push_back(a);
                }
                ++given;
            } else {
                const std::string type =
                    pg.kind == GpuAssignment::Kind::mdev ? pg.mdev_type : policy.mdev_type;
                if (type.empty())
                    throw ConflictError("The parent holds " + describe(pg) +
                                        " whole, and the GPU policy names no mdev_type to slice "
                                        "for its children" +
                                        rule);
                std::string why;
                auto a = pick_mdev(inv, type, "", taken, why);
                if (!a)
                    throw ConflictError("Not enough mediated devices of type '" + type + "' on " +
                                        where + ": the fork needs " + needed + ", " +
                                        std::to_string(given) + " can be made; " + why + rule);
                taken.add(*a);
                out[child].push_back(*a);
                ++given;
            }
        }
    }
    return out;
}

GpuPolicy parse_gpu_policy(const std::string& text, const std::filesystem::path& file) {
    YamlReader r(std::filesystem::absolute(file).lexically_normal());
    YAML::Node root = r.load(text);
    if (!root.IsMap())
        throw SpecError(r.file().string() +
                        ": a GPU policy is a YAML mapping (children: none | exclusive | mdev)");
    r.only_keys(root, "", {"children", "mdev_type"});
    GpuPolicy p;
    p.source = r.file().string();
    YAML::Node children = r.required(root, "children", "children");
    const std::string c = r.scalar(children, "children");
    if (c == "none")
        p.children = GpuPolicy::Children::none;
    else if (c == "exclusive")
        p.children = GpuPolicy::Children::exclusive;
    else if (c == "mdev")
        p.children = GpuPolicy::Children::mdev;
    else
        r.fail(children, "children", "must be none, exclusive or mdev, got '" + c + "'");
    if (YAML::Node t = root["mdev_type"]; t.IsDefined()) {
        p.mdev_type = r.scalar(t, "mdev_type");
        if (p.mdev_type.empty() ||
            p.mdev_type.find_first_not_of(
                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
                std::string::npos)
            r.fail(t, "mdev_type", "'" + p.mdev_type + "' is not a mediated device type");
        if (p.children != GpuPolicy::Children::mdev)
            r.fail(t, "mdev_type", "goes with children: mdev");
    }
    return p;
}

GpuPolicy load_gpu_policy(const std::filesystem::path& file) {
    return parse_gpu_policy(read_small_file(file), file);
}

GpuInventory read_inventory(Host& host) {
    GpuInventory inv;
    for_each_node_device(host, [&](virNodeDevicePtr, const std::string& text) {
        std::optional<Gpu> g;
        try {
            g = parse_gpu_device(text);
        } catch (const Error&) {
            return;
        }
        if (g)
            inv.gpus.push_back(std::move(*g));
        if (auto f = parse_pci_function(text))
            inv.functions[f->address] = std::move(*f);
        else if (auto m = parse_mdev_device(text))
            inv.mdevs.push_back(std::move(*m));
    });
    for (const auto& d : host.domains()) {
        try {
            const std::string name = domain_name(d.get());
            // As it runs (a device plugged in live) and as defined.
            for (unsigned flags : {0U, static_cast<unsigned>(VIR_DOMAIN_XML_INACTIVE)})
                for (const auto& a : domain_gpus(domain_xml(d.get(), flags))) {
                    if (a.kind == GpuAssignment::Kind::pci) {
                        for (auto& g : inv.gpus)
                            if (g.address == a.address)
                                add_holder(g.held_by, name);
                        if (auto f = inv.functions.find(a.address); f != inv.functions.end())
                            add_holder(f->second.held_by, name);
                    } else {
                        for (auto& m : inv.mdevs)
                            if (m.uuid == a.mdev_uuid)
                                add_holder(m.held_by, name);
                    }
                }
        } catch (const NotFoundError&) {
            // undefined meanwhile
        }
    }
    std::sort(inv.gpus.begin(), inv.gpus.end(),
              [](const Gpu& a, const Gpu& b) { return a.address < b.address; });
    return inv;
}

std::vector<Gpu> list_gpus(Host& host) {
    return read_inventory(host).gpus;
}

VmLock lock_gpus(Host& host, const CancelToken& cancel) {
    return VmLock::acquire(host, gpus_lock_name, "gpus", std::chrono::minutes(10), cancel);
}

namespace {

class LibvirtGpuDevices : public GpuDevices {
public:
    explicit LibvirtGpuDevices(Host& host) : host_(host) {}

    std::string domain_capabilities(const std::string& virt_type) override {
        return host_.domain_capabilities("", "", virt_type);
    }

    void create_mdev(const std::string& parent, const std::string& type,
                     const std::string& uuid) override {
        pugi::xml_document doc;
        pugi::xml_node dev = doc.append_child("device");
        dev.append_child("parent").text().set(pci_device_name(parent).c_str());
        pugi::xml_node cap = dev.append_child("capability");
        cap.append_attribute("type") = "mdev";
        cap.append_child("type").append_attribute("id") = type.c_str();
        cap.append_child("uuid").text().set(uuid.c_str());
        std::ostringstream xml;
        doc.save(xml, "", pugi::format_raw | pugi::format_no_declaration);
        virNodeDevicePtr d = virNodeDeviceCreateXML(host_.conn(), xml.str().c_str(), 0);
        lv_check(d, "Failed to create a mediated device of type '" + type + "' on " + parent);
        virNodeDeviceFree(d);
        logger("gpus")->info("mediated device {} ({}) made on {}", uuid, type, parent);
    }

    void remove_mdev(const std::string& uuid) override {
        for_each_node_device(host_, [&](virNodeDevicePtr dev, const std::string& xml) {
            auto m = parse_mdev_device(xml);
            if (m && m->uuid == uuid)
                lv_check(virNodeDeviceDestroy(dev), "Failed to remove mediated device " + uuid);
        });
    }

    void attach(virDomainPtr dom, const std::string& hostdev, bool persistent) override {
        const unsigned flags = VIR_DOMAIN_AFFECT_LIVE | (persistent ? VIR_DOMAIN_AFFECT_CONFIG : 0);
        lv_check(virDomainAttachDeviceFlags(dom, hostdev.c_str(), flags),
                 "Failed to attach a GPU to '" + domain_name(dom) + "'");
    }

    void detach(virDomainPtr dom, const std::string& hostdev) override {
        const std::string name = domain_name(dom);
        const auto gone = domain_gpus(
            hostdev.empty() ? "" : "<domain><devices>" + hostdev + "</devices></domain>");
        lv_check(virDomainDetachDeviceFlags(dom, hostdev.c_str(), VIR_DOMAIN_AFFECT_LIVE),
                 "Failed to detach a GPU from '" + name + "'");
        // libvirt returns once the unplug was asked for; the guest lets go when it will.
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        for (;;) {
            const auto live = domain_gpus(domain_xml(dom));
            bool still = false;
            for (const auto& g : gone)
                still = still || std::find(live.begin(), live.end(), g) != live.end();
            if (!still)
                return;
            if (std::chrono::steady_clock::now() > deadline)
                throw ConflictError("The guest of '" + name + "' did not let go of " +
                                    describe(gone.front()) +
                                    " within 30 s (does it handle PCI hot-unplug?)");
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    }

private:
    Host& host_;
};

} // namespace

std::unique_ptr<GpuDevices> libvirt_gpu_devices(Host& host) {
    return std::make_unique<LibvirtGpuDevices>(host);
}

} // namespace forky

namespace forky {

std::shared_ptr<GpuDevices> gpu_devices(Host& host, const OpContext& ctx) {
    if (ctx.gpu_devices)
        return ctx.gpu_devices;
    return libvirt_gpu_devices(host);
}

GpusDetached::GpusDetached(std::shared_ptr<GpuDevices> devices, virDomainPtr dom, std::string name,
                           std::vector<GpuAssignment> gpus, VmLock* journal)
    : devices_(std::move(devices)), dom_(dom), name_(std::move(name)), gpus_(std::move(gpus)),
      journal_(journal) {
    if (journal_ && !gpus_.empty()) {
        journal_->record_detached(domain_uuid(dom_));
    }
    try {
        for (; detached_ < gpus_.size(); ++detached_)
            devices_->detach(dom_, hostdev_xml(gpus_[detached_]));
    } catch (...) {
        try {
            reattach();
        } catch (const Error& e) {
            logger("gpus")->warn("{}", e.what());
        }
        throw;
    }
    if (!gpus_.empty())
        logger("gpus")->info("{} GPU(s) of '{}' detached for the cut", gpus_.size(), name_);
}

void GpusDetached::reattach() {
    std::string first_error;
    while (detached_ > 0) {
        const GpuAssignment& g = gpus_[--detached_];
        try {
            devices_->attach(dom_, hostdev_xml(g), /*persistent=*/false);
        } catch (const Error& e) {
            if (first_error.empty())
                first_error = e.what();
        }
    }
    if (first_error.empty() && journal_ && !gpus_.empty()) {
        journal_->record_reattached();
        journal_ = nullptr;
    }
    if (!first_error.empty())
        throw ConflictError(first_error + " (its definition still names the device: it has it "
                                          "again from its next start)");
}

GpusDetached::~GpusDetached() {
    try {
        reattach();
    } catch (const Error& e) {
        logger("gpus")->warn("'{}': {}", name_, e.what());
    }
}

void require_gpu_cut_allowed(const std::string& vm, bool allowed,
                             const std::vector<GpuAssignment>& gpus, const std::string& what) {
    if (gpus.empty() || allowed)
        return;
    std::string list;
    for (const auto& g : gpus)
        list += (list.empty() ? "" : ", ") + describe(g);
    throw ConflictError("VM '" + vm + "' has GPUs passed through (" + list +
                        "): QEMU cannot save a VFIO device's state, so " + what +
                        " needs them detached for the cut, and the guest then sees them unplugged "
                        "and plugged again. Its spec allows that with 'gpu_fork: detach' (forky up "
                        "from such a spec); not " +
                        (what == "a snapshot" ? "snapshotting" : "forking"));
}

} // namespace forky

namespace forky {

ChildGpuPlan plan_child_gpus(Host& host, GpuDevices& devices, std::string_view parent_xml,
                             const GpuPolicy& policy, unsigned count) {
    ChildGpuPlan plan;
    plan.children.resize(count);
    if (domain_gpus(parent_xml).empty())
        return plan;
    const GpuInventory inv = read_inventory(host);
    plan.parent = domain_gpus(parent_xml, &inv);
    if (policy.children == GpuPolicy::Children::none || count == 0)
        return plan;
    const std::string where = "'" + host.options().uri + "'";
    pugi::xml_document doc;
    load(doc, parent_xml);
    const std::string virt_type = doc.child("domain").attribute("type").value();
    require_passthrough(devices.domain_capabilities(virt_type.empty() ? "kvm" : virt_type),
                        policy.children == GpuPolicy::Children::exclusive,
                        policy.children == GpuPolicy::Children::mdev, where);
    plan.children = pick_child_gpus(inv, plan.parent, policy, count, where);
    for (auto& child : plan.children)
        for (auto& g : child)
            if (g.kind == GpuAssignment::Kind::mdev)
                g.mdev_uuid = random_uuid();
    return plan;
}

void make_mdev(Operation& op, const std::shared_ptr<GpuDevices>& devices, const GpuAssignment& a) {
    op.lock().record_mdev(a.mdev_uuid); // gc's, should this process die
    devices->create_mdev(a.address, a.mdev_type, a.mdev_uuid);
    op.on_undo("mediated device " + a.mdev_uuid,
               [devices, uuid = a.mdev_uuid] { devices->remove_mdev(uuid); });
}

MdevRemoval remove_unheld_mdevs(Host& host, const std::vector<std::string>& uuids, bool dry_run) {
    MdevRemoval out;
    if (uuids.empty())
        return out;
    const GpuInventory inv = read_inventory(host);
    auto devices = libvirt_gpu_devices(host);
    for (const auto& uuid : uuids) {
        auto m = std::find_if(inv.mdevs.begin(), inv.mdevs.end(),
                              [&](const Mdev& x) { return x.uuid == uuid; });
        if (m == inv.mdevs.end())
            continue; // gone already
        if (!m->held_by.empty()) {
            out.held.emplace_back(uuid, m->held_by.front());
            continue;
        }
        if (!dry_run)
            devices->remove_mdev(uuid);
        out.removed.push_back(uuid);
    }
    return out;
}

} // namespace forky
