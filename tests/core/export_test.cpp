// What forky import refuses in an export's domain definition: anything that would reach
// the host beyond the disks, kernel and console forky replaces. Pure: no libvirt.
#include "export.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

using namespace forky;

namespace {

// The golden domain XML forky writes for the tiny guest (what an export carries).
std::string tiny_xml() {
    std::ifstream in(std::filesystem::path(FORKY_TEST_DATA) / "golden" / "tiny.xml");
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

std::string with_device(const std::string& device) {
    std::string xml = tiny_xml();
    const auto at = xml.find("</devices>");
    return xml.insert(at, device);
}

bool mentions(const std::vector<std::string>& problems, const std::string& part) {
    for (const auto& p : problems)
        if (p.find(part) != std::string::npos)
            return true;
    return false;
}

} // namespace

TEST(ImportedXml, ForkysOwnDefinitionPasses) {
    ASSERT_FALSE(tiny_xml().empty());
    EXPECT_TRUE(imported_xml_problems(tiny_xml(), {"vda"}).empty());
}

TEST(ImportedXml, DisksMustBeExactlyTheExportedOnes) {
    EXPECT_TRUE(mentions(imported_xml_problems(tiny_xml(), {"vda", "vdb"}), "'vdb'"));
    EXPECT_TRUE(mentions(imported_xml_problems(tiny_xml(), {"vdb"}), "'vda'"));
    const auto block = imported_xml_problems(
        with_device("<disk type='block' device='disk'><source dev='/dev/sda'/>"
                    "<target dev='vdz' bus='virtio'/></disk>"),
        {"vda"});
    EXPECT_TRUE(mentions(block, "'vdz'")) << block.size();
    const auto cdrom = imported_xml_problems(
        with_device("<disk type='file' device='cdrom'><source file='/etc/shadow'/>"
                    "<target dev='hdc' bus='ide'/></disk>"),
        {"vda"});
    EXPECT_TRUE(mentions(cdrom, "host file"));
}

TEST(ImportedXml, DevicesThatReachTheHostAreRefused) {
    EXPECT_TRUE(mentions(
        imported_xml_problems(with_device("<hostdev mode='subsystem' type='pci'><source><address "
                                          "domain='0' bus='0' slot='2' function='0'/></source>"
                                          "</hostdev>"),
                              {"vda"}),
        "<hostdev>"));
    EXPECT_TRUE(
        mentions(imported_xml_problems(with_device("<filesystem type='mount'><source dir='/'/>"
                                                   "<target dir='root'/></filesystem>"),
                                       {"vda"}),
                 "<filesystem>"));
    EXPECT_TRUE(mentions(
        imported_xml_problems(with_device("<serial type='file'><source path='/etc/passwd'/>"
                                          "<target port='1'/></serial>"),
                              {"vda"}),
        "'file'"));
    EXPECT_TRUE(
        mentions(imported_xml_problems(with_device("<interface type='bridge'><source bridge='br0'/>"
                                                   "</interface>"),
                                       {"vda"}),
                 "'bridge'"));
    EXPECT_TRUE(mentions(
        imported_xml_problems(with_device("<rng model='virtio'><backend model='random'>/dev/sda"
                                          "</backend></rng>"),
                              {"vda"}),
        "/dev/sda"));
    EXPECT_TRUE(mentions(imported_xml_problems("<not-xml", {"vda"}), "parse"));
}

TEST(ImportedXml, FirmwareFilesAndQemuOptionsAreRefused) {
    std::string xml = tiny_xml();
    xml.insert(xml.find("</os>"), "<loader readonly='yes' type='pflash'>/etc/shadow</loader>");
    EXPECT_TRUE(mentions(imported_xml_problems(xml, {"vda"}), "<loader>"));
    std::string q = tiny_xml();
    q.replace(q.find("<domain "), 8,
              "<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0' ");
    q.insert(q.find("</domain>"),
             "<qemu:commandline><qemu:arg value='-device'/></qemu:commandline>");
    EXPECT_TRUE(mentions(imported_xml_problems(q, {"vda"}), "<qemu:commandline>"));
}

// What a hostile review got through a first version: files QEMU writes or reads for the
// guest (audio to a file, ACPI tables, firmware config entries), consoles on the network,
// shared host memory.
TEST(ImportedXml, FilesAndListenersOutsideDevicesAreRefused) {
    EXPECT_TRUE(
        mentions(imported_xml_problems(with_device("<sound model='ich6'/><audio id='1' type='file' "
                                                   "path='/etc/passwd'/>"),
                                       {"vda"}),
                 "'file'"));
    std::string acpi = tiny_xml();
    acpi.insert(acpi.find("</os>"), "<acpi><table type='slic'>/etc/shadow</table></acpi>");
    EXPECT_TRUE(mentions(imported_xml_problems(acpi, {"vda"}), "<os><acpi>"));
    std::string sysinfo = tiny_xml();
    sysinfo.insert(sysinfo.find("<devices>"),
                   "<sysinfo type='fwcfg'><entry name='opt/x' file='/etc/shadow'/></sysinfo>");
    EXPECT_TRUE(mentions(imported_xml_problems(sysinfo, {"vda"}), "<sysinfo>"));
    std::string shared = tiny_xml();
    shared.insert(shared.find("<devices>"),
                  "<memoryBacking><access mode='shared'/></memoryBacking>");
    EXPECT_TRUE(mentions(imported_xml_problems(shared, {"vda"}), "<memoryBacking>"));
    EXPECT_TRUE(mentions(
        imported_xml_problems(with_device("<graphics type='vnc' listen='0.0.0.0'/>"), {"vda"}),
        "graphics"));
    EXPECT_TRUE(
        mentions(imported_xml_problems(with_device("<graphics type='vnc'><listen type='socket' "
                                                   "socket='/tmp/x'/></graphics>"),
                                       {"vda"}),
                 "graphics"));
    EXPECT_TRUE(imported_xml_problems(with_device("<graphics type='vnc'><listen type='address' "
                                                  "address='127.0.0.1'/></graphics>"),
                                      {"vda"})
                    .empty());
    EXPECT_TRUE(mentions(
        imported_xml_problems(with_device("<input type='evdev'><source dev='/dev/input/event0'/>"
                                          "</input>"),
                              {"vda"}),
        "'evdev'"));
}

// What a second hostile review got through: libvirt reads an attribute by its local name
// whatever its prefix, and reads the last of two <devices>; a disk read as raw; files named
// by attributes (a NIC's boot ROM); the guest's memory dumped on the host.
TEST(ImportedXml, PrefixesSecondElementsAndPathAttributesAreRefused) {
    std::string ns = tiny_xml();
    ns.replace(ns.find("<domain "), 8, "<domain xmlns:z='urn:z' ");
    std::string iface = ns;
    iface.replace(iface.find("<interface type=\"user\">"), 23,
                  "<interface z:type='ethernet' type='user'><script path='/tmp/x.sh'/>");
    const auto i = imported_xml_problems(iface, {"vda"});
    EXPECT_TRUE(mentions(i, "'z:type'"));
    EXPECT_TRUE(mentions(i, "<script>"));
    std::string disk = ns;
    disk.replace(disk.find("<source file="), 13, "<source z:file='/tmp/secret' file=");
    EXPECT_TRUE(mentions(imported_xml_problems(disk, {"vda"}), "'z:file'"));
    std::string raw = tiny_xml();
    raw.replace(raw.find("type=\"qcow2\""), 12, "type=\"raw\"");
    EXPECT_TRUE(mentions(imported_xml_problems(raw, {"vda"}), "'raw'"));
    std::string twice = tiny_xml();
    twice.insert(twice.find("</domain>"),
                 "<devices><serial type='file'><source path='/tmp/s'/></serial></devices>");
    const auto t = imported_xml_problems(twice, {"vda"});
    EXPECT_TRUE(mentions(t, "<devices> twice"));
    EXPECT_TRUE(mentions(t, "host path"));
    std::string rom = tiny_xml();
    rom.insert(rom.find("</interface>"), "<rom file='/tmp/secret'/>");
    EXPECT_TRUE(mentions(imported_xml_problems(rom, {"vda"}), "host path"));
    std::string crash = tiny_xml();
    crash.replace(crash.find("<on_crash>destroy"), 17, "<on_crash>coredump-destroy");
    EXPECT_TRUE(mentions(imported_xml_problems(crash, {"vda"}), "dumps"));
    EXPECT_TRUE(mentions(
        imported_xml_problems(with_device("<watchdog model='i6300esb' action='dump'/>"), {"vda"}),
        "dumps"));
    // What a running domain's own definition carries stays accepted.
    std::string live = tiny_xml();
    live.replace(live.find("<serial type=\"pty\">"), 19,
                 "<serial type=\"pty\"><source path=\"/dev/pts/3\"/>");
    live.insert(live.find("</devices>"),
                "<channel type='unix'><source mode='bind' "
                "path='/var/lib/libvirt/qemu/channel/target/domain-1-x/org.qemu.guest_agent.0'/>"
                "<target type='virtio' name='org.qemu.guest_agent.0'/></channel>");
    EXPECT_TRUE(imported_xml_problems(live, {"vda"}).empty());
}
