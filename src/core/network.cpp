#include "network.hpp"

#include "errors.hpp"

#include <libvirt/libvirt-qemu.h>
#include <pugixml.hpp>

#include <sstream>

namespace forky {

namespace {

std::string hmp(virDomainPtr dom, const std::string& name, const std::string& command) {
    char* reply = nullptr;
    lv_check(virDomainQemuMonitorCommand(dom, command.c_str(), &reply,
                                         VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP),
             "Failed to run '" + command + "' in the monitor of VM '" + name + "'");
    std::string out = reply != nullptr ? reply : "";
    std::free(reply);
    return out;
}

} // namespace

std::vector<PortForward> parse_usernet(const std::string& info) {
    // "  TCP[HOST_FORWARD]  21       127.0.0.1 42773       10.0.2.15    22     0     0"
    std::vector<PortForward> out;
    std::istringstream in(info);
    for (std::string line; std::getline(in, line);) {
        std::istringstream f(line);
        std::string proto;
        std::string fd;
        std::string src;
        std::string dst;
        unsigned host = 0;
        unsigned guest = 0;
        if (f >> proto >> fd >> src >> host >> dst >> guest && proto == "TCP[HOST_FORWARD]")
            out.push_back({guest, host});
    }
    return out;
}

std::vector<PortForward> forward_ports(virDomainPtr dom, const std::string& name,
                                       const std::vector<unsigned>& guest_ports) {
    if (guest_ports.empty())
        return {};
    char* xml = lv_check(virDomainGetXMLDesc(dom, 0), "Failed to read VM '" + name + "'");
    pugi::xml_document doc;
    doc.load_string(xml);
    std::free(xml);
    pugi::xml_node alias = doc.select_node("/domain/devices/interface[@type='user']/alias").node();
    if (!alias)
        throw ConflictError("VM '" + name + "' has no user-mode network to forward ports to");
    // libvirt names the backend of interface alias 'netN' 'hostnetN'.
    const std::string netdev = std::string("host") + alias.attribute("name").value();
    for (unsigned port : guest_ports) {
        std::string reply =
            hmp(dom, name, "hostfwd_add " + netdev + " tcp:127.0.0.1:0-:" + std::to_string(port));
        if (reply.find_first_not_of(" \r\n") != std::string::npos)
            throw Error("Could not forward port " + std::to_string(port) + " of VM '" + name +
                        "': " + reply);
    }
    std::vector<PortForward> out;
    for (const auto& fwd : parse_usernet(hmp(dom, name, "info usernet")))
        for (unsigned port : guest_ports)
            if (fwd.guest == port)
                out.push_back(fwd);
    if (out.size() != guest_ports.size())
        throw Error("QEMU did not report the forwards of VM '" + name + "'");
    return out;
}

} // namespace forky
