// forky's error hierarchy. Exceptions inside, exit codes at the edges: the CLI and the
// daemon map these to the documented exit codes through exit_code(), nothing else does.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace forky {

// Documented exit codes (forky --help and README.md show this table).
enum class ExitCode : int {
    ok = 0,
    internal = 1,  // a bug or an unexpected condition
    usage = 2,     // bad command line
    spec = 3,      // a YAML spec or policy is invalid
    not_found = 4, // the named VM (or volume, pool) does not exist
    conflict = 5,  // name taken, VM in the wrong state, resource in use
    libvirt = 6,   // libvirt refused or failed (connection, API call)
    storage = 7,   // the storage pool or a volume failed
    interrupted = 130,
};

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& what) : std::runtime_error(what) {}
    virtual ExitCode code() const { return ExitCode::internal; }

    // libvirt's virErrorNumber when libvirt raised it (whatever the class), else 0.
    int libvirt_code() const { return lv_code_; }
    Error& with_libvirt_code(int c) {
        lv_code_ = c;
        return *this;
    }

private:
    int lv_code_ = 0;
};

class UsageError : public Error {
public:
    using Error::Error;
    ExitCode code() const override { return ExitCode::usage; }
};

// A spec error names the file, the line and the key: "tiny.yaml:4: key 'vcpus': ...".
class SpecError : public Error {
public:
    using Error::Error;
    ExitCode code() const override { return ExitCode::spec; }
};

class NotFoundError : public Error {
public:
    using Error::Error;
    ExitCode code() const override { return ExitCode::not_found; }
};

class ConflictError : public Error {
public:
    using Error::Error;
    ExitCode code() const override { return ExitCode::conflict; }
};

class StorageError : public Error {
public:
    using Error::Error;
    ExitCode code() const override { return ExitCode::storage; }
};

// The user asked to stop (Ctrl-C); what was done has been undone.
class InterruptedError : public Error {
public:
    using Error::Error;
    ExitCode code() const override { return ExitCode::interrupted; }
};

// Carries libvirt's own error code and domain (virErrorNumber, virErrorDomain).
class LibvirtError : public Error {
public:
    LibvirtError(const std::string& what, int lv_code, int lv_domain)
        : Error(what), lv_domain_(lv_domain) {
        with_libvirt_code(lv_code);
    }
    ExitCode code() const override { return ExitCode::libvirt; }
    int libvirt_domain() const { return lv_domain_; }

private:
    int lv_domain_;
};

// libvirt's error path: install the no-op handler once per process (idempotent).
void install_libvirt_error_handler();

// Throws the typed error for the libvirt call that just failed on this thread:
// "<context>: <libvirt's message>". Storage-pool failures become StorageError, an
// unknown domain/volume NotFoundError, so the exit code tells what went wrong.
[[noreturn]] void throw_libvirt_error(std::string_view context);

// After a lookup returned null: returns (clearing the error) when libvirt's error is
// `absent_code` (VIR_ERR_NO_DOMAIN, ...), so the caller can say "not there"; throws the
// typed error for anything else.
void expect_absent(int absent_code, std::string_view context);

// Clears libvirt's last error on this thread (after a failure that was handled).
void clear_libvirt_error();

// The one helper every libvirt return goes through.
template <typename T>
T* lv_check(T* result, std::string_view context) {
    if (result == nullptr)
        throw_libvirt_error(context);
    return result;
}
inline int lv_check(int rc, std::string_view context) {
    if (rc < 0)
        throw_libvirt_error(context);
    return rc;
}

} // namespace forky
