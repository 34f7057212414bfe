// forky export VM[@SNAP] DIR and forky import DIR: a branch carried to another machine as
// a directory of files.
#include "commands.hpp"
#include "export.hpp"
#include "forky.hpp"
#include "json_out.hpp"

#include <cstdio>
#include <iostream>
#include <memory>

namespace forky::cli {

namespace {

struct ExportCommand {
    std::string source;
    std::string dir;
    bool compress = false;
    bool json = false;
    unsigned wait_s = 120;
};

struct ImportCommand {
    std::string dir;
    std::string name;
    bool name_given = false;
    std::string host;
    bool json = false;
    unsigned wait_s = 120;
};

ProgressFor progress_lines() {
    return [](const std::string& what) { return progress_line(what); };
}

void run_export(const ExportCommand& cmd, Context& ctx) {
    if (ctx.remote())
        not_served("export", ctx);
    ExportOptions o;
    o.compress = cmd.compress;
    o.lock_wait = std::chrono::seconds(cmd.wait_s);
    o.ctx = ctx.op_context();
    o.progress = progress_lines();
    const std::string vm = cmd.source.substr(0, cmd.source.find('@'));
    ExportResult r = vm_export(ctx.host_of(vm), cmd.source, cmd.dir, o);
    if (cmd.json) {
        Json files = Json::array();
        for (const auto& f : r.files)
            files.push_back({{"name", f.name},
                             {"role", f.role},
                             {"target", text_or_null(f.target)},
                             {"bytes", f.bytes},
                             {"sha256", f.sha256}});
        print_json({{"dir", r.dir.string()},
                    {"source", r.source},
                    {"fork_point", r.point},
                    {"memory", r.memory},
                    {"bytes", r.bytes},
                    {"files", files},
                    {"ms", static_cast<std::uint64_t>(r.ms)}});
        return;
    }
    std::cout << r.dir.string() << '\n';
    std::fprintf(stderr, "Exported '%s' (%s) to '%s': %zu files, %s, %s, in %.1f s\n",
                 r.source.c_str(), r.point.c_str(), r.dir.c_str(), r.files.size(),
                 format_size(r.bytes).c_str(),
                 r.memory ? "with its memory image" : "disks only (it was off)", r.ms / 1000);
}

void run_import(const ImportCommand& cmd, Context& ctx) {
    if (ctx.remote())
        not_served("import", ctx);
    if (cmd.name_given && cmd.name.empty())
        throw UsageError("--name is empty; leave it out for the exported VM's name");
    ImportOptions o;
    o.name = cmd.name;
    o.lock_wait = std::chrono::seconds(cmd.wait_s);
    o.ctx = ctx.op_context();
    o.progress = progress_lines();
    Host* host = &ctx.host();
    if (ctx.fleet_mode()) {
        if (cmd.host.empty())
            throw UsageError("With a host inventory, say which host imports it: --host NAME");
        host = &ctx.host_named(ctx.require_host(cmd.host));
        o.names_elsewhere = ctx.names_elsewhere(cmd.host);
    } else if (!cmd.host.empty()) {
        ctx.require_host(cmd.host); // UsageError: no inventory
    }
    ImportResult r = vm_import(*host, cmd.dir, o);
    if (cmd.json) {
        print_json({{"vm", r.vm},
                    {"snapshot", r.snapshot},
                    {"resumed", r.resumed},
                    {"bytes_uploaded", r.bytes_uploaded},
                    {"images_reused", r.images_reused},
                    {"clock_not_set", r.clock_not_set},
                    {"ms", static_cast<std::uint64_t>(r.ms)}});
        return;
    }
    std::cout << r.vm << '\n';
    std::fprintf(stderr, "Imported '%s' in %.1f s: %s; the imported state is kept as '%s'\n",
                 r.vm.c_str(), r.ms / 1000,
                 r.resumed ? "running on from its memory image" : "booted from its disks",
                 r.snapshot.c_str());
    for (const auto& c : r.clock_not_set)
        std::fprintf(stderr, "forky: warning: clock not set: %s\n", c.c_str());
}

} // namespace

void setup_export(CLI::App& app, Context& ctx) {
    auto cmd = std::make_shared<ExportCommand>();
    CLI::App* sub = app.add_subcommand(
        "export",
        "Write a VM or one of its snapshots (VM@SNAP) into a new, self-contained directory.\n"
        "In it: each disk flattened to one qcow2 (no backing file; --compress compresses it), the\n"
        "memory image when there is one, the kernel and initrd, the definition (domain.xml),\n"
        "the lineage, the spec it came from, and manifest.json with every file's size and\n"
        "SHA-256 and the QEMU machine type, accelerator and CPU model the memory image needs.\n"
        "A running VM is exported from a fork point taken for the purpose (it pauses only for\n"
        "the switch-over, as for a snapshot) and removed afterwards; its disk chain is one\n"
        "layer deeper. Everything travels through libvirt's storage API (works against a\n"
        "remote host); a progress bar shows on a terminal. The directory appears whole or\n"
        "not at all: it is written beside it as DIR.partial-XXXXXX and renamed (a killed\n"
        "export leaves that folder, which forky gc does not see: remove it). Prints the\n"
        "directory. 'forky import DIR' brings it back.\n"
        "Examples: forky export web-1 /srv/exports/web-1\n"
        "          forky export web@before-upgrade /srv/exports/web-bu --compress");
    sub->add_option("source", cmd->source, "the VM, or VM@SNAP")->required();
    sub->add_option("dir", cmd->dir, "the directory to create (must not exist)")->required();
    sub->add_flag("--compress", cmd->compress, "compress the disks (qcow2 compression)");
    sub->add_option("--wait", cmd->wait_s, "seconds to wait while another operation runs")
        ->capture_default_str();
    sub->add_flag("--json", cmd->json, "print the result as JSON");
    sub->callback([cmd, &ctx] { run_export(*cmd, ctx); });

    auto imp = std::make_shared<ImportCommand>();
    CLI::App* isub = app.add_subcommand(
        "import",
        "Bring an export directory (forky export) back as a new VM, the root of a new family.\n"
        "Every file is checked against the manifest first (size and SHA-256: a changed or\n"
        "damaged export is refused), the disks must be whole qcow2 images, the definition may\n"
        "reach no host device or file, and the host's QEMU must offer the machine type,\n"
        "accelerator and CPU model the memory image was made with (refused with the reason\n"
        "otherwise). The VM then runs on from its memory image (its processes, token and\n"
        "counters as they were) or, for an export of a VM that was off, boots from its disks.\n"
        "The imported state is kept as its snapshot 'imported' (forky revert VM imported).\n"
        "Prints the new VM's name.\n"
        "Examples: forky import /srv/exports/web-1 --name web-1-copy\n"
        "          forky --hosts fleet.yaml import /srv/exports/web-1 --host node2");
    isub->add_option("dir", imp->dir, "the export directory")->required();
    isub->add_option("--name", imp->name, "the new VM's name (default: the exported VM's)")
        ->each([imp](const std::string&) { imp->name_given = true; });
    isub->add_option("--host", imp->host, "the host of the inventory to import into");
    isub->add_option("--wait", imp->wait_s, "seconds to wait while another operation runs")
        ->capture_default_str();
    isub->add_flag("--json", imp->json, "print the result as JSON");
    isub->callback([imp, &ctx] { run_import(*imp, ctx); });
}

} // namespace forky::cli
