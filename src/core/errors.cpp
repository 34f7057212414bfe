#include "errors.hpp"

#include <libvirt/virterror.h>

#include <csignal>
#include <mutex>

namespace forky {

namespace {
void ignore_libvirt_error(void*, virErrorPtr) {}

template <typename E>
[[noreturn]] void raise(const std::string& msg, int libvirt_code) {
    E e(msg);
    e.with_libvirt_code(libvirt_code);
    throw e;
}
} // namespace

void install_libvirt_error_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        virInitialize();
        virSetErrorFunc(nullptr, ignore_libvirt_error);
        // A libvirt connection that drops makes its next write raise SIGPIPE, whose default
        // ends the process silently, before any undo. libvirt expects applications to
        // ignore it; a program that installed its own handler keeps it.
        struct sigaction old {};
        if (sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL)
            std::signal(SIGPIPE, SIG_IGN);
    });
}

void throw_libvirt_error(std::string_view context) {
    virErrorPtr err = virGetLastError();
    std::string msg(context);
    int code = VIR_ERR_INTERNAL_ERROR;
    int domain = VIR_FROM_NONE;
    if (err != nullptr) {
        code = err->code;
        domain = err->domain;
        if (err->message != nullptr) {
            msg += ": ";
            msg += err->message;
        }
    } else {
        msg += ": unknown libvirt error";
    }
    virResetLastError();
    switch (code) {
    case VIR_ERR_NO_DOMAIN:
    case VIR_ERR_NO_STORAGE_VOL:
    case VIR_ERR_NO_STORAGE_POOL:
    case VIR_ERR_NO_DOMAIN_METADATA:
    case VIR_ERR_NO_DOMAIN_SNAPSHOT:
        raise<NotFoundError>(msg, code);
    case VIR_ERR_OPERATION_INVALID:
        raise<ConflictError>(msg, code);
    default:
        break;
    }
    if (domain == VIR_FROM_STORAGE)
        raise<StorageError>(msg, code);
    throw LibvirtError(msg, code, domain);
}

void expect_absent(int absent_code, std::string_view context) {
    virErrorPtr err = virGetLastError();
    if (err == nullptr || err->code != absent_code)
        throw_libvirt_error(context);
    virResetLastError();
}

void clear_libvirt_error() {
    virResetLastError();
}

} // namespace forky
