#ifndef VDE_SUPERVISOR_CVDEPLUG_SHIM_H
#define VDE_SUPERVISOR_CVDEPLUG_SHIM_H
#include <dlfcn.h>
#include <libvdeplug.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

/// `vde_open` is a function-like macro, which Swift cannot import.
static inline VDECONN *cvdeplug_open(char *url, char *description, struct vde_open_args *args) {
    return vde_open(url, description, args);
}

static void cvdeplug_ignore_signal(int number) { (void)number; }

/// Installs a handler for `number` that does nothing, without SA_RESTART: the signal, sent to a
/// thread blocked in `vde_open` (its connect or its recv of the switch's reply), makes that call
/// fail with EINTR, and libvdeplug then closes its sockets and returns NULL. Returns sigaction's result.
static inline int cvdeplug_install_interrupt_handler(int number) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = cvdeplug_ignore_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;
    return sigaction(number, &action, NULL);
}
/// The directory libvdeplug.so was loaded from, from `/proc/self/maps` (`dladdr` and
/// `dl_iterate_phdr`'s struct are GNU extensions the Swift Glibc module leaves out). 0, or -1
/// when it is not mapped.
static inline int cvdeplug_library_directory(char *directory, size_t size) {
    FILE *maps = fopen("/proc/self/maps", "re");
    if (maps == NULL) return -1;
    char line[4352];
    int found = -1;
    while (found != 0 && fgets(line, sizeof line, maps) != NULL) {
        char *path = strchr(line, '/');
        char *slash = strrchr(line, '/');
        if (path == NULL || strncmp(slash + 1, "libvdeplug.so", 13) != 0) continue;
        size_t length = (size_t)(slash - path);
        if (length >= size) continue;
        memcpy(directory, path, length);
        directory[length] = 0;
        found = 0;
    }
    fclose(maps);
    return found;
}

/// Loads libvdeplug's module for URLs of `type` (`vde`: `<libvdeplug's dir>/vdeplug/libvdeplug_vde.so`,
/// where libvdeplug 4 looks for it) and keeps it loaded for the life of the process
/// (RTLD_NODELETE; the handle is never closed). Without this, every `vde_open` loads the module
/// and its `libvdeplug_mod` with their relocations, and `vde_close` unloads them again. Returns
/// 0, or -1 when libvdeplug or the module was not found (each `vde_open` then loads it itself).
static inline int cvdeplug_pin_module(const char *type) {
    char directory[4096];
    if (cvdeplug_library_directory(directory, sizeof directory) != 0) return -1;
    char path[4200];
    int written = snprintf(path, sizeof path, "%s/vdeplug/libvdeplug_%s.so", directory, type);
    if (written < 0 || (size_t)written >= sizeof path) return -1;
    return dlopen(path, RTLD_NOW | RTLD_NODELETE) != NULL ? 0 : -1;
}
#endif
