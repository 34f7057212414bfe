// Per-VM networking. Each forky VM with `network: user` has its own user-mode (slirp)
// network inside its own QEMU: nothing is shared, so a child that keeps its parent's MAC
// and IP (they travel in the memory image) collides with no one. A guest port is reached
// from the hypervisor host through a forward on 127.0.0.1 whose port the kernel picks, so
// N children of one parent never fight over a port.
//
// libvirt 9.0 has no <portForward> for user-mode interfaces (that came with passt), so the
// forward is added at run time through libvirt's QEMU monitor API (HMP hostfwd_add, then
// `info usernet` to learn the port). libvirt marks such a domain tainted
// (custom-monitor); that is the price, and it is written down in README.md.
#pragma once

#include "lineage.hpp"

#include <libvirt/libvirt.h>

#include <string>
#include <vector>

namespace forky {

// Forwards each guest TCP port from an ephemeral port on the host's 127.0.0.1 and
// returns the pairs. Throws Error when the domain has no user-mode interface.
std::vector<PortForward> forward_ports(virDomainPtr dom, const std::string& name,
                                       const std::vector<unsigned>& guest_ports);

// Parses the HOST_FORWARD rows of HMP `info usernet`: guest port -> host port.
std::vector<PortForward> parse_usernet(const std::string& info);

} // namespace forky
