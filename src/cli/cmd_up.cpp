// forky up -f SPEC: create a VM from a YAML spec and start it.
#include "commands.hpp"
#include "forky.hpp"
#include "remote.hpp"

#include <filesystem>
#include <iostream>
#include <memory>

namespace forky::cli {

namespace {

struct UpCommand {
    std::string spec_file;
    std::string name;
    bool no_start = false;
    std::string host; // --host
    bool print_xml = false;
};

void print_up(const std::string& name, bool started, const std::string& host_name,
              bool console_log) {
    std::cout << (started ? "Started VM '" : "Defined VM '") << name << "'";
    if (!host_name.empty())
        std::cout << " on host '" << host_name << "'";
    if (console_log)
        std::cout << "; its console: forky logs " << name;
    std::cout << '\n';
}

void run_up(const UpCommand& cmd, Context& ctx, bool name_given) {
    if (name_given && cmd.name.empty())
        throw UsageError("--name is empty; leave it out to use the spec's name");
    if (Remote* remote = ctx.remote()) {
        // forkyd reads the spec itself, from its spec_dirs, with its own settings.
        if (cmd.print_xml)
            throw UsageError("--print-xml is not served through forkyd; run it on the host, "
                             "without --server");
        const RemoteUp up = remote->up(std::filesystem::absolute(cmd.spec_file).lexically_normal(),
                                       cmd.name, !cmd.no_start, cmd.host);
        bool console_log = false;
        for (const auto& v : up.vm.lineage.volumes)
            console_log = console_log || v.role == "console";
        print_up(up.vm.name, !cmd.no_start, up.fleet ? up.host : "", console_log);
        return;
    }
    const Config& config = ctx.config(); // a settings problem first: it concerns every spec
    DomainSpec spec = load_spec(cmd.spec_file);
    if (cmd.print_xml) {
        if (!cmd.host.empty())
            throw UsageError("--print-xml shows the XML for --connect's host; --host uploads "
                             "images, which --print-xml never does");
        UpOptions options;
        options.name = cmd.name;
        options.image_dirs = config.image_dirs;
        std::cout << vm_up_xml(ctx.host(), spec, options);
        return;
    }
    ctx.options.create_pool = true; // the first `forky up` makes forky's pool
    UpOptions options;
    options.name = cmd.name;
    options.start = !cmd.no_start;
    options.image_dirs = config.image_dirs;
    options.ctx = ctx.op_context();
    // With a host inventory: the host --host names, else the placement policy's pick;
    // the spec's files travel there (uploaded once, reused while unchanged).
    Host* host = nullptr;
    std::string host_name;
    if (ctx.fleet_mode()) {
        host_name = ctx.fleet().place_up(ctx.placement(), cmd.name.empty() ? spec.name : cmd.name,
                                         spec.memory_bytes, cmd.host, ctx.cancel());
        host = &ctx.host_named(host_name);
        options.upload = true;
        options.progress = progress_line("uploading");
    } else {
        if (!cmd.host.empty())
            ctx.require_host(cmd.host); // UsageError: no inventory
        host = &ctx.host();
    }
    const std::string name = vm_up(*host, spec, options);
    print_up(name, options.start, host_name, spec.console == ConsoleMode::log);
}

} // namespace

void setup_up(CLI::App& app, Context& ctx) {
    auto cmd = std::make_shared<UpCommand>();
    CLI::App* sub = app.add_subcommand(
        "up", "Create a VM from a YAML domain spec and start it.\n"
              "Each disk boots on a fresh qcow2 overlay in forky's pool; the spec's base "
              "images are never written.\n"
              "Every file the spec names (kernel, initrd, each base image's whole backing "
              "chain)\nmust lie under a folder allowed for images: by default the spec's own "
              "folder and\nforky's pool; an administrator sets image_dirs in --config. A base "
              "with a qcow2\nheader needs 'format: qcow2' in its disk.\n"
              "Example: forky up -f domains/tiny.yaml");
    sub->add_option("-f,--file", cmd->spec_file, "YAML domain spec")->required();
    sub->add_option("--name", cmd->name, "name of the VM (default: the spec's name)");
    sub->add_flag("--no-start", cmd->no_start, "define the VM but do not start it");
    sub->add_flag("--print-xml", cmd->print_xml,
                  "print the domain XML forky would define, and change nothing (compare with "
                  "virsh dumpxml)");
    sub->add_option("--host", cmd->host,
                    "with a host inventory: this host (default: the placement policy's pick); "
                    "the spec's kernel, initrd and images are uploaded to its pool (once)");
    sub->callback([cmd, &ctx, sub] { run_up(*cmd, ctx, sub->count("--name") > 0); });
}

} // namespace forky::cli
